# Complex tasks (CoPRA): structures into interface patches (copra/complexes.py), and the
# cross-validated protein-RNA affinity model (copra/complex_training.py).


rule ingest_complexes:
    input:
        unpack(complex_ingest_inputs),
    output:
        table="results/{task}/data/table.tsv",
        sequences="results/{task}/data/sequences.tsv",
        chains="results/{task}/data/chains.tsv",
        patches="results/{task}/data/patches.tsv",
        mutations="results/{task}/data/mutations.tsv",
        skipped="results/{task}/data/skipped.tsv",
        fasta="results/{task}/data/chains.fasta",
        manifest="results/{task}/data/manifest.json",
    log:
        "logs/ingest/{task}.log",
    wildcard_constraints:
        task=names_pattern(COMPLEX_TASKS),
    conda:
        "../../envs/data.yaml"
    params:
        config=config_json("complex", with_task=True),
        out_dir=subpath(output.table, parent=True),
    shell:
        "copra ingest --task {wildcards.task} --output-dir {params.out_dir}"
        " --config-json {params.config:q} 2> {log}"


rule train_complex:
    input:
        unpack(complex_train_inputs),
    output:
        predictions="results/{task}/{method}/seed{seed}/predictions.tsv",
        targets="results/{task}/{method}/seed{seed}/targets.json",
        history="results/{task}/{method}/seed{seed}/training_log.tsv",
        folds="results/{task}/{method}/seed{seed}/fold_log.tsv",
        mutations="results/{task}/{method}/seed{seed}/mutations.tsv",
        weights="results/{task}/{method}/seed{seed}/folds.safetensors",
        manifest="results/{task}/{method}/seed{seed}/manifest.json",
    log:
        "logs/train_complex/{task}/{method}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_complex/{task}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        task=names_pattern(COMPLEX_TASKS),
        method=names_pattern(methods.names(complex_tasks=True)),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        gpu=1,
    params:
        config=run_config,
        data_dir=subpath(input.table, parent=True),
        out_dir=subpath(output.predictions, parent=True),
        embeddings=lambda wildcards, input: (
            f"--residue-embeddings {input.embeddings}"
            if "embeddings" in input.keys()
            else ""
        ),
    shell:
        "copra --threads {threads} train-complex --method {wildcards.method}"
        " --data-dir {params.data_dir} --seed {wildcards.seed} --output-dir {params.out_dir}"
        " {params.embeddings} --config-json {params.config:q} 2> {log}"


rule plot_complexes:
    input:
        complex_run_files("predictions.tsv"),
    output:
        figure=report(
            "results/figures/complexes.png",
            caption="../report/complexes.rst",
            category="Structures",
        ),
        svg="results/figures/complexes.svg",
    log:
        "logs/plot_complexes.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra plot-complexes --output {output.figure} {input} 2> {log}"
