# The bundled demo's input files (copra/demo_data.py); only built when a task names them.


rule demo_data:
    output:
        expand("{folder}/{name}", folder=DEMO_DIR, name=DEMO_FILES),
        directory(f"{DEMO_DIR}/structures"),
        directory(f"{DEMO_DIR}/new_structures"),
    log:
        "logs/demo_data.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        folder=subpath(output[0], parent=True),
        config=config_json("demo"),
    shell:
        "copra demo-data --output-dir {params.folder} --config-json {params.config:q} 2> {log}"
