# The head-only baseline on cached embeddings (copra/head_baseline.py).


rule train_head:
    input:
        table="results/{task}/data/table.tsv",
        embeddings="results/{task}/data/embeddings.npz",
    output:
        predictions="results/{task}/head/seed{seed}/predictions.tsv",
        targets="results/{task}/head/seed{seed}/targets.json",
        head="results/{task}/head/seed{seed}/head.safetensors",
        history="results/{task}/head/seed{seed}/training_log.tsv",
        manifest="results/{task}/head/seed{seed}/manifest.json",
    log:
        "logs/train_head/{task}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_head/{task}/seed{seed}.tsv"
    wildcard_constraints:
        task=names_pattern(SEQUENCE_TASKS),
    conda:
        "../../envs/torch.yaml"
    params:
        task=task_args,
        settings=settings_args("head"),
        config=run_config,
        out_dir=subpath(output.predictions, parent=True),
    shell:
        "copra --threads {threads} train-head {params.task} {params.settings} --table {input.table}"
        " --embeddings {input.embeddings} --seed {wildcards.seed} --output-dir {params.out_dir}"
        " --config-json {params.config:q} 2> {log}"
