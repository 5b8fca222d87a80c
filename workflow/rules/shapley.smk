# Per-layer Shapley values of a run's adapter (copra/shapley.py).


rule shapley:
    input:
        unpack(run_inputs),
        weights=weights_input,
    output:
        "results/shapley/{task}/{method}/seed{seed}.tsv",
    log:
        "logs/shapley/{task}/{method}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/shapley/{task}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=names_pattern(methods.suited("shapley")),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        config=config_json(*BACKBONE, "shapley"),
        run=subpath(input.manifest, parent=True),
    shell:
        "copra --threads {threads} shapley --run {params.run}"
        " --table {input.table} --sequences {input.sequences} --task {wildcards.task}"
        " --output {output} --config-json {params.config:q} 2> {log}"


rule gather_shapley:
    input:
        per_run_tables("shapley"),
    output:
        table=report(
            "results/shapley.tsv",
            caption="../report/shapley.rst",
            category="Shapley",
        ),
        figure=report(
            "results/figures/shapley.png",
            caption="../report/shapley.rst",
            category="Shapley",
        ),
        svg="results/figures/shapley.svg",
    log:
        "logs/gather_shapley.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra gather-shapley --output {output.table} --figure {output.figure}"
        " {input} 2> {log}"
