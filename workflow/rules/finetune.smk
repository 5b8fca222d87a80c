# Fine-tuning per task with a method of copra/methods/ (copra/finetune.py): adapters in peft's
# format (lora, copra; adalora and lingo with their rank allocation), or the whole backbone (full). A killed job resumes from the checkpoint of
# its last finished epoch.


rule finetune_adapter:
    input:
        table="results/{task}/data/table.tsv",
        sequences="results/{task}/data/sequences.tsv",
        weights=weights_input,
    output:
        predictions="results/{task}/{method}/seed{seed}/predictions.tsv",
        targets="results/{task}/{method}/seed{seed}/targets.json",
        adapter_config="results/{task}/{method}/seed{seed}/adapter/adapter_config.json",
        adapter="results/{task}/{method}/seed{seed}/adapter/adapter_model.safetensors",
        head="results/{task}/{method}/seed{seed}/head.safetensors",
        history="results/{task}/{method}/seed{seed}/training_log.tsv",
        manifest="results/{task}/{method}/seed{seed}/manifest.json",
    log:
        "logs/finetune/{task}/{method}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/finetune/{task}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method=names_pattern(
            methods.names(adapter=True, fixed_rank=True, cached_embeddings=False)
        ),
        task=names_pattern(SEQUENCE_TASKS),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        gpu=1,
    params:
        config=run_config,
        out_dir=subpath(output.predictions, parent=True),
    shell:
        "copra --threads {threads} finetune --method {wildcards.method} --task {wildcards.task}"
        " --table {input.table} --sequences {input.sequences}"
        " --seed {wildcards.seed} --output-dir {params.out_dir}"
        " --config-json {params.config:q} 2> {log}"


use rule finetune_adapter as finetune_full with:
    output:
        predictions="results/{task}/{method}/seed{seed}/predictions.tsv",
        targets="results/{task}/{method}/seed{seed}/targets.json",
        backbone="results/{task}/{method}/seed{seed}/backbone.safetensors",
        head="results/{task}/{method}/seed{seed}/head.safetensors",
        history="results/{task}/{method}/seed{seed}/training_log.tsv",
        manifest="results/{task}/{method}/seed{seed}/manifest.json",
    wildcard_constraints:
        method=names_pattern(methods.names(adapter=False, cached_embeddings=False)),
        task=names_pattern(SEQUENCE_TASKS),


use rule finetune_adapter as finetune_adaptive_rank with:
    output:
        predictions="results/{task}/{method}/seed{seed}/predictions.tsv",
        targets="results/{task}/{method}/seed{seed}/targets.json",
        adapter_config="results/{task}/{method}/seed{seed}/adapter/adapter_config.json",
        adapter="results/{task}/{method}/seed{seed}/adapter/adapter_model.safetensors",
        head="results/{task}/{method}/seed{seed}/head.safetensors",
        history="results/{task}/{method}/seed{seed}/training_log.tsv",
        allocation="results/{task}/{method}/seed{seed}/rank_allocation.tsv",
        manifest="results/{task}/{method}/seed{seed}/manifest.json",
    wildcard_constraints:
        method=names_pattern(ADAPTIVE_RANK),
        task=names_pattern(SEQUENCE_TASKS),
