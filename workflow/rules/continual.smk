# Continual learning (copra/continual_learning.py): LAE and its baselines over sequences of steps.


rule continual:
    input:
        unpack(continual_inputs),
    output:
        predictions="results/continual/{sequence}/{learner}/order{order}/seed{seed}/predictions.tsv",
        manifest="results/continual/{sequence}/{learner}/order{order}/seed{seed}/manifest.json",
    log:
        "logs/continual/{sequence}/{learner}/order{order}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/continual/{sequence}/{learner}/order{order}/seed{seed}.tsv"
    wildcard_constraints:
        sequence=names_pattern(SEQUENCES),
        learner="lae|sequential|joint|independent|head",
        order=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        gpu=1,
    params:
        tasks=continual_tasks,
        folder=subpath(output.predictions, parent=True),
        config=continual_config,
    shell:
        "copra --threads {threads} continual --sequence {wildcards.sequence}"
        " --learner {wildcards.learner} --order {wildcards.order} --seed {wildcards.seed}"
        " {params.tasks} --output-dir {params.folder}"
        " --config-json {params.config:q} 2> {log}"


rule gather_continual:
    input:
        [f"{folder}/predictions.tsv" for folder in continual_folders()],
        [f"{folder}/manifest.json" for folder in continual_folders()],
    output:
        table=report(
            "results/continual.tsv",
            caption="../report/continual.rst",
            category="Continual",
        ),
        figure=report(
            "results/figures/continual.png",
            caption="../report/continual.rst",
            category="Continual",
        ),
        svg="results/figures/continual.svg",
    log:
        "logs/gather_continual.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    params:
        config=lambda wildcards: snapshot(["continual"]),
        predictions=[f"{folder}/predictions.tsv" for folder in continual_folders()],
    shell:
        "copra gather-continual --output {output.table} --figure {output.figure}"
        " --config-json {params.config:q} {params.predictions} 2> {log}"
