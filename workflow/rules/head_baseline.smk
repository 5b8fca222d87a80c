# Methods on cached embeddings of the frozen backbone (the head baseline, copra/head_baseline.py).


rule train_head:
    input:
        table="results/{task}/data/table.tsv",
        embeddings="results/{task}/data/embeddings.npz",
    output:
        predictions="results/{task}/{method}/seed{seed}/predictions.tsv",
        targets="results/{task}/{method}/seed{seed}/targets.json",
        head="results/{task}/{method}/seed{seed}/head.safetensors",
        history="results/{task}/{method}/seed{seed}/training_log.tsv",
        manifest="results/{task}/{method}/seed{seed}/manifest.json",
    log:
        "logs/train_head/{task}/{method}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_head/{task}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        task=names_pattern(SEQUENCE_TASKS),
        method=names_pattern(methods.names(cached_embeddings=True)),
    conda:
        "../../envs/torch.yaml"
    params:
        config=run_config,
        out_dir=subpath(output.predictions, parent=True),
    shell:
        "copra --threads {threads} train-head --task {wildcards.task} --table {input.table}"
        " --embeddings {input.embeddings} --seed {wildcards.seed} --output-dir {params.out_dir}"
        " --config-json {params.config:q} 2> {log}"
