# What each task's data looks like, for the report (copra/data_summary.py).


rule data_summary:
    input:
        table="results/{task}/data/table.tsv",
        sequences="results/{task}/data/sequences.tsv",
    output:
        table=report(
            "results/{task}/data/summary.tsv",
            caption="../report/data_summary.rst",
            category="Data",
            labels={"task": "{task}", "item": "table"},
        ),
        figure=report(
            "results/figures/data/{task}.png",
            caption="../report/data_summary.rst",
            category="Data",
            labels={"task": "{task}", "item": "figure"},
        ),
        svg="results/figures/data/{task}.svg",
    log:
        "logs/data_summary/{task}.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    params:
        config=config_json(with_task=True),
    shell:
        "copra data-summary --task {wildcards.task} --table {input.table}"
        " --sequences {input.sequences} --output {output.table} --figure {output.figure}"
        " --config-json {params.config:q} 2> {log}"
