# Frozen-backbone embeddings of a task's sequences through the shared cache (copra/embed.py):
# mean-pooled vectors for sequence tasks, per-residue matrices for complex tasks.


rule embed:
    input:
        sequences="results/{task}/data/sequences.tsv",
        weights=weights_input,
        shards=embedding_shards,
    output:
        "results/{task}/data/embeddings.npz",
    log:
        "logs/embed/{task}.log",
    benchmark:
        "logs/benchmarks/embed/{task}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        gpu=1,
    params:
        config=config_json(*BACKBONE, "embedding"),
        per_residue="",
    shell:
        "copra --threads {threads} embed {params.per_residue} --sequence-table {input.sequences}"
        " --output {output} --config-json {params.config:q} 2> {log}"


use rule embed as embed_residues with:
    input:
        sequences="results/{task}/data/sequences.tsv",
        weights=weights_input,
    output:
        "results/{task}/data/residue_embeddings.npz",
    log:
        "logs/embed_residues/{task}.log",
    benchmark:
        "logs/benchmarks/embed_residues/{task}.tsv"
    wildcard_constraints:
        task=names_pattern(COMPLEX_TASKS),
    params:
        config=config_json(*BACKBONE, "embedding"),
        per_residue="--per-residue",


# With embedding.shards > 1: the task's sequences split into that many jobs (one GPU each),
# balanced by residues, each filling the shared cache; `embed` then finds every vector there.
rule embed_shard:
    input:
        sequences="results/{task}/data/sequences.tsv",
        weights=weights_input,
    output:
        "results/{task}/data/embedding_shards/{shard}.json",
    log:
        "logs/embed_shard/{task}/{shard}.log",
    benchmark:
        "logs/benchmarks/embed_shard/{task}/{shard}.tsv"
    wildcard_constraints:
        task=names_pattern(SEQUENCE_TASKS),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        gpu=1,
    params:
        config=config_json(*BACKBONE, "embedding"),
    shell:
        "copra --threads {threads} embed-shard --sequence-table {input.sequences}"
        " --shard {wildcards.shard} --output {output} --config-json {params.config:q} 2> {log}"
