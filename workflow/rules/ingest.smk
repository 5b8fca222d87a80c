# One task's FASTA and label table, checked and normalized (copra/ingest.py).


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        table="results/{task}/data/table.tsv",
        sequences="results/{task}/data/sequences.tsv",
    log:
        "logs/ingest/{task}.log",
    wildcard_constraints:
        task=names_pattern(SEQUENCE_TASKS),
    conda:
        "../../envs/data.yaml"
    params:
        config=config_json("ingest", with_task=True),
    shell:
        "copra ingest --task {wildcards.task} --table {output.table}"
        " --sequence-table {output.sequences} --config-json {params.config:q} 2> {log}"
