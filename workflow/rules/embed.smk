# Frozen-backbone embeddings of a task's sequences through the shared cache (copra/embed.py):
# mean-pooled vectors for sequence tasks, per-residue matrices for complex tasks.


rule embed:
    input:
        sequences="results/{task}/data/sequences.tsv",
        weights=weights_input,
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
    params:
        args=embed_args,
    shell:
        "copra --threads {threads} embed {params.args} --sequence-table {input.sequences} --output {output} 2> {log}"


use rule embed as embed_residues with:
    output:
        "results/{task}/data/residue_embeddings.npz",
    log:
        "logs/embed_residues/{task}.log",
    benchmark:
        "logs/benchmarks/embed_residues/{task}.tsv"
    wildcard_constraints:
        task=names_pattern(COMPLEX_TASKS),
    params:
        args=lambda wildcards: f"{embed_args(wildcards)} --per-residue",
