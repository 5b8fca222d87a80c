# Offline sequence design (copra/design.py): BIB and its baselines from a task's low-fitness
# variants, scored by an oracle fitted on all of them.


rule design_data:
    input:
        unpack(design_data_inputs),
    output:
        variants="results/design/{design}/data/variants.tsv",
        offline="results/design/{design}/data/offline.npz",
        oracle="results/design/{design}/data/oracle.json",
        landscape="results/design/{design}/data/landscape.json",
        manifest="results/design/{design}/data/manifest.json",
    log:
        "logs/design/{design}/data.log",
    benchmark:
        "logs/benchmarks/design/{design}/data.tsv"
    wildcard_constraints:
        design=names_pattern(DESIGNS),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        gpu=1,
    params:
        folder=subpath(output.variants, parent=True),
        config=design_data_config,
    shell:
        "copra --threads {threads} design-data --design {wildcards.design}"
        " --table {input.table} --sequences {input.sequences}"
        " --output-dir {params.folder} --config-json {params.config:q} 2> {log}"


rule design:
    input:
        unpack(design_inputs),
    output:
        designs="results/design/{design}/{method}/seed{seed}/designs.tsv",
        fasta="results/design/{design}/{method}/seed{seed}/designs.fasta",
        manifest="results/design/{design}/{method}/seed{seed}/manifest.json",
    log:
        "logs/design/{design}/{method}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/design/{design}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        design=names_pattern(DESIGNS),
        method="bib|bdi|gradient_ascent|forward|backward|random",
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        gpu=1,
    params:
        data=subpath(input.variants, parent=True),
        folder=subpath(output.designs, ancestor=3),
        config=design_config,
    shell:
        "copra --threads {threads} design --design {wildcards.design}"
        " --method {wildcards.method} --seed {wildcards.seed} --data-dir {params.data}"
        " --output-dir {params.folder} --config-json {params.config:q} 2> {log}"


rule gather_design:
    input:
        [f"{folder}/designs.tsv" for folder in design_folders(config)],
    output:
        table=report(
            "results/design.tsv",
            caption="../report/design.rst",
            category="Design",
        ),
        figure=report(
            "results/figures/design.png",
            caption="../report/design.rst",
            category="Design",
        ),
        svg="results/figures/design.svg",
    log:
        "logs/gather_design.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "copra gather-design --output {output.table} --figure {output.figure} {input} 2> {log}"
