# The papers' layouts (copra/papers.py): CopRA's Table r3 and LMC figure, PEFT for proteins'
# metric against trainable parameters, CoPRA's affinity table; from the gathered tables.

PAPER_LAYOUTS = ("copra_table_r3", "copra_lmc", "peft_parameters", "copra_affinity")
# the optional tables, each read where its analysis runs
PAPERS_OPTIONAL = {
    "merging": "merging",
    "pruning": "pruning",
    "lmc": "lmc",
    "lmc_barriers": "lmc",
}
PAPERS_INPUTS = {
    "metrics": "results/metrics.tsv",
    "metrics_manifest": "results/metrics.manifest.json",
    "efficiency": "results/efficiency.tsv",
    **{
        name: f"results/{name}.tsv"
        for name, section in PAPERS_OPTIONAL.items()
        if config[section]["methods"]
    },
}
# each layout's table and figure, a report item of category Papers
PAPERS_ITEMS = {
    f"{layout}_{extension}": report(
        f"results/papers/{layout}.{extension}",
        caption=f"../report/papers_{layout}.rst",
        category="Papers",
    )
    for layout in PAPER_LAYOUTS
    for extension in ("png", "tsv")
}


rule papers:
    input:
        **PAPERS_INPUTS,
    output:
        **PAPERS_ITEMS,
        svgs=[f"results/papers/{layout}.svg" for layout in PAPER_LAYOUTS],
        manifest="results/papers/manifest.json",
    log:
        "logs/papers.log",
    localrule: True
    conda:
        "../../envs/evaluate.yaml"
    params:
        folder=lambda wildcards, output: os.path.dirname(output.manifest),
        optional=lambda wildcards, input: " ".join(
            f"--{name.replace('_', '-')} {input[name]}"
            for name in PAPERS_OPTIONAL
            if name in input.keys()
        ),
    shell:
        "copra papers --output-dir {params.folder} --metrics {input.metrics}"
        " --metrics-manifest {input.metrics_manifest} --efficiency {input.efficiency}"
        " {params.optional} 2> {log}"
