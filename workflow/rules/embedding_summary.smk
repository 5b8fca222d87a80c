# What each task's cached embeddings look like, for the report (copra/embedding_summary.py).


rule embedding_summary:
    input:
        unpack(embedding_summary_inputs),
    output:
        table=report(
            "results/{task}/data/embedding_summary.tsv",
            caption="../report/embedding_summary.rst",
            category="Embeddings",
            labels={"task": "{task}", "item": "table"},
        ),
        figure=report(
            "results/figures/embeddings/{task}.png",
            caption="../report/embedding_summary.rst",
            category="Embeddings",
            labels={"task": "{task}", "item": "figure"},
        ),
        svg="results/figures/embeddings/{task}.svg",
    log:
        "logs/embedding_summary/{task}.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    params:
        config=config_json(with_task=True),
        chains=lambda wildcards, input: (
            f"--chains {input.chains}" if "chains" in input.keys() else ""
        ),
    shell:
        "copra embedding-summary --task {wildcards.task}"
        " --embeddings {input.embeddings} --table {input.table} {params.chains}"
        " --output {output.table} --figure {output.figure}"
        " --config-json {params.config:q} 2> {log}"
