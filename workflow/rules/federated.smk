# Federated adapters (copra/federated.py): a task's training set split over clients.


rule federate:
    input:
        table="results/{task}/data/table.tsv",
        sequences="results/{task}/data/sequences.tsv",
        weights=weights_input,
    output:
        "results/federated/{task}/{method}/{partition}.tsv",
    log:
        "logs/federated/{task}/{method}/{partition}.log",
    benchmark:
        "logs/benchmarks/federated/{task}/{method}/{partition}.tsv"
    wildcard_constraints:
        method=names_pattern(methods.suited("federated")),
        partition="iid|dirichlet",
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        gpu=1,
    params:
        config=config_json(
            *BACKBONE,
            "head",
            "finetune",
            "federated",
            with_task=True,
            with_method=True,
        ),
    shell:
        "copra --threads {threads} federate --method {wildcards.method}"
        " --table {input.table} --sequences {input.sequences}"
        " --task {wildcards.task} --partition {wildcards.partition} --output {output}"
        " --config-json {params.config:q} 2> {log}"


rule gather_federated:
    input:
        federated_tables(),
    output:
        table=report(
            "results/federated.tsv",
            caption="../report/federated.rst",
            category="Federated",
        ),
        figure=report(
            "results/figures/federated.png",
            caption="../report/federated.rst",
            category="Federated",
        ),
        svg="results/figures/federated.svg",
    log:
        "logs/gather_federated.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra gather-federated --output {output.table} --figure {output.figure}"
        " {input} 2> {log}"
