# Pruning a run's adapter, structured and by magnitude (copra/pruning.py).


rule pruning:
    input:
        unpack(pruning_inputs),
        weights=weights_input,
    output:
        "results/pruning/{task}/{method}/seed{seed}.tsv",
    log:
        "logs/pruning/{task}/{method}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/pruning/{task}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=names_pattern(methods.suited("pruning")),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        config=config_json(*BACKBONE, "pruning"),
        shapley=lambda wildcards, input: (
            f"--shapley {input.shapley}" if "shapley" in input.keys() else ""
        ),
        run=subpath(input.manifest, parent=True),
    shell:
        "copra --threads {threads} pruning {params.shapley} --run {params.run}"
        " --table {input.table} --sequences {input.sequences} --task {wildcards.task}"
        " --output {output} --config-json {params.config:q} 2> {log}"


rule gather_pruning:
    input:
        per_run_tables("pruning"),
    output:
        table=report(
            "results/pruning.tsv",
            caption="../report/pruning.rst",
            category="Pruning",
        ),
        figure=report(
            "results/figures/pruning.png",
            caption="../report/pruning.rst",
            category="Pruning",
        ),
        svg="results/figures/pruning.svg",
    log:
        "logs/gather_pruning.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra gather-pruning --output {output.table} --figure {output.figure}"
        " {input} 2> {log}"
