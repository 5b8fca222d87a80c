# Trained runs applied to new inputs (copra/predict.py, copra/screen.py): one table per
# `predict:` job and method, each seed's scores with their mean and spread.


rule predict:
    input:
        unpack(predict_inputs),
    output:
        table=report(
            "results/predictions/{name}/{method}.tsv",
            caption="../report/predictions.rst",
            category="Predictions",
            subcategory="{name}",
        ),
        figure=report(
            "results/predictions/{name}/{method}.png",
            caption="../report/predictions.rst",
            category="Predictions",
            subcategory="{name}",
        ),
        svg="results/predictions/{name}/{method}.svg",
        manifest="results/predictions/{name}/{method}.manifest.json",
    log:
        "logs/predict/{name}/{method}.log",
    benchmark:
        "logs/benchmarks/predict/{name}/{method}.tsv"
    wildcard_constraints:
        name=names_pattern([n for n in PREDICTIONS if n not in SCREENS]),
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        gpu=1,
    params:
        args=predict_args,
        config=predict_config,
    shell:
        "copra --threads {threads} predict {params.args}"
        " --training-table {input.training_table} --output {output.table}"
        " --figure {output.figure} --config-json {params.config:q} 2> {log}"


# `pairs: all`: every pair of the FASTA, scored in blocks on each protein's vector; the table
# keeps the top pairs, the histogram counts them all.
use rule predict as screen with:
    output:
        table=report(
            "results/predictions/{name}/{method}.tsv",
            caption="../report/screen.rst",
            category="Predictions",
            subcategory="{name}",
        ),
        figure=report(
            "results/predictions/{name}/{method}.png",
            caption="../report/screen.rst",
            category="Predictions",
            subcategory="{name}",
        ),
        svg="results/predictions/{name}/{method}.svg",
        histogram="results/predictions/{name}/{method}.histogram.tsv",
        manifest="results/predictions/{name}/{method}.manifest.json",
    log:
        "logs/screen/{name}/{method}.log",
    benchmark:
        "logs/benchmarks/screen/{name}/{method}.tsv"
    wildcard_constraints:
        name=names_pattern([n for n in SCREENS if not PREDICTIONS[n]["all_scores"]]),


use rule screen as screen_all_scores with:
    output:
        table=report(
            "results/predictions/{name}/{method}.tsv",
            caption="../report/screen.rst",
            category="Predictions",
            subcategory="{name}",
        ),
        figure=report(
            "results/predictions/{name}/{method}.png",
            caption="../report/screen.rst",
            category="Predictions",
            subcategory="{name}",
        ),
        svg="results/predictions/{name}/{method}.svg",
        histogram="results/predictions/{name}/{method}.histogram.tsv",
        scores="results/predictions/{name}/{method}.scores.npz",
        manifest="results/predictions/{name}/{method}.manifest.json",
    wildcard_constraints:
        name=names_pattern([n for n in SCREENS if PREDICTIONS[n]["all_scores"]]),
