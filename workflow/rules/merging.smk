# Merging adapters (copra/merging.py): the seeds of one task, and one adapter per task.


rule merge_seeds:
    input:
        unpack(merge_seeds_inputs),
        weights=weights_input,
    output:
        "results/merging/seeds/{task}/{method}.tsv",
    log:
        "logs/merging/seeds/{task}/{method}.log",
    benchmark:
        "logs/benchmarks/merging/seeds/{task}/{method}.tsv"
    wildcard_constraints:
        method=names_pattern(methods.suited("merging")),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        runs=merge_seeds_runs,
        config=merging_config,
    shell:
        "copra --threads {threads} merge --runs {params.runs}"
        " --table {input.table} --sequences {input.sequences} --task {wildcards.task}"
        " --output {output} --config-json {params.config:q} 2> {log}"


rule merge_tasks:
    input:
        unpack(merge_tasks_inputs),
        weights=weights_input,
    output:
        "results/merging/tasks/{method}.tsv",
    log:
        "logs/merging/tasks/{method}.log",
    benchmark:
        "logs/benchmarks/merging/tasks/{method}.tsv"
    wildcard_constraints:
        method=names_pattern(methods.suited("merging")),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=1,
    params:
        tasks=merge_tasks_args,
        config=merging_config,
    shell:
        "copra --threads {threads} merge-tasks {params.tasks} --output {output}"
        " --config-json {params.config:q} 2> {log}"


rule gather_merging:
    input:
        merging_tables(),
    output:
        table=report(
            "results/merging.tsv",
            caption="../report/merging.rst",
            category="Merging",
        ),
        figures=report(
            directory("results/figures/merging"),
            patterns=["{name}.png"],
            caption="../report/merging.rst",
            category="Merging",
            labels={"task": "{name}", "figure": "merging"},
        ),
    log:
        "logs/gather_merging.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra gather-merging --output {output.table} --figures {output.figures}"
        " {input} 2> {log}"
