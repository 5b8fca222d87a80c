# Linear mode connectivity between two seeds' adapters of a task and method (copra/lmc.py).


rule lmc:
    input:
        unpack(lmc_inputs),
        table="results/{task}/data/table.tsv",
        sequences="results/{task}/data/sequences.tsv",
        weights=weights_input,
    output:
        "results/lmc/{task}/{method}/seed{seed_a}-seed{seed_b}.tsv",
    log:
        "logs/lmc/{task}/{method}/seed{seed_a}-seed{seed_b}.log",
    benchmark:
        "logs/benchmarks/lmc/{task}/{method}/seed{seed_a}-seed{seed_b}.tsv"
    wildcard_constraints:
        method=names_pattern(methods.suited("lmc")),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        config=config_json(*BACKBONE, "lmc"),
        run_a=subpath(input.manifest_a, parent=True),
        run_b=subpath(input.manifest_b, parent=True),
    shell:
        "copra --threads {threads} lmc --run-a {params.run_a}"
        " --run-b {params.run_b} --table {input.table} --sequences {input.sequences}"
        " --task {wildcards.task} --output {output} --config-json {params.config:q} 2> {log}"


rule gather_lmc:
    input:
        lmc_tables(),
    output:
        table="results/lmc.tsv",
        barriers=report(
            "results/lmc_barriers.tsv",
            caption="../report/lmc.rst",
            category="Linear mode connectivity",
        ),
        figure=report(
            "results/figures/lmc.png",
            caption="../report/lmc.rst",
            category="Linear mode connectivity",
        ),
        svg="results/figures/lmc.svg",
    log:
        "logs/gather_lmc.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra gather-lmc --output {output.table} --barriers {output.barriers}"
        " --figure {output.figure} {input} 2> {log}"
