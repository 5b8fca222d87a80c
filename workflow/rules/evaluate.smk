# Metrics with bootstrap intervals per run, one table for all, and its figure (copra/evaluate.py).


rule evaluate_run:
    input:
        predictions="results/{task}/{method}/seed{seed}/predictions.tsv",
        targets="results/{task}/{method}/seed{seed}/targets.json",
    output:
        report(
            "results/{task}/{method}/seed{seed}/metrics.tsv",
            caption="../report/run_metrics.rst",
            category="Runs",
            subcategory="{task}",
            labels={"task": "{task}", "method": "{method}", "seed": "{seed}"},
        ),
    log:
        "logs/evaluate_run/{task}/{method}/seed{seed}.log",
    conda:
        "../../envs/evaluate.yaml"
    params:
        config=config_json("evaluation"),
    shell:
        "copra --threads {threads} evaluate --predictions {input.predictions}"
        " --targets {input.targets} --task {wildcards.task} --method {wildcards.method}"
        " --seed {wildcards.seed} --output {output} --config-json {params.config:q} 2> {log}"


rule gather_metrics:
    input:
        run_files("metrics.tsv"),
    output:
        table=report(
            "results/metrics.tsv",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        manifest=report(
            "results/metrics.manifest.json",
            caption="../report/manifest.rst",
            category="Reproducibility",
        ),
    log:
        "logs/gather_metrics.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    params:
        config=json.dumps(config, sort_keys=True),
    shell:
        "copra gather-metrics --output {output.table} --config-json {params.config:q}"
        " {input} 2> {log}"


rule plot_metrics:
    input:
        "results/metrics.tsv",
    output:
        figure=report(
            "results/figures/metrics.png",
            caption="../report/metrics_figure.rst",
            category="Evaluation",
        ),
        svg="results/figures/metrics.svg",
    log:
        "logs/plot_metrics.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra plot-metrics --metrics {input} --output {output.figure} 2> {log}"


rule plot_training:
    input:
        run_files("training_log.tsv"),
    output:
        figure=report(
            "results/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
        svg="results/figures/training_curves.svg",
    log:
        "logs/plot_training.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra plot-training --output {output.figure} {input} 2> {log}"


rule summary:
    input:
        unpack(summary_inputs),
    output:
        summary=report(
            "results/summary.tsv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "best methods"},
        ),
        efficiency=report(
            "results/efficiency.tsv",
            caption="../report/efficiency.rst",
            category="Summary",
            labels={"table": "efficiency"},
        ),
        comparison=report(
            "results/comparison.tsv",
            caption="../report/comparison.rst",
            category="Summary",
            labels={"table": "LoRA beside CopRA"},
        ),
    log:
        "logs/summary.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    params:
        optional=lambda wildcards, input: " ".join(
            f"--{name} {input[name]}"
            for name in ("merging", "pruning")
            if name in input.keys()
        ),
    shell:
        "copra summary --metrics {input.metrics} --output {output.summary}"
        " --efficiency {output.efficiency} --comparison {output.comparison}"
        " {params.optional} {input.manifests} 2> {log}"
