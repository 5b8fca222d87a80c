"""results/design.tsv: offline model-based optimisation's scores of every method and seed,
recomputed from the saved designs (oracle percentiles normalised by the whole data's range,
beside the offline set's best), and the figure of the designs against the data."""

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from copra.atomic import write_table
from copra.errors import InputError

METRICS = (
    "oracle_p100",
    "oracle_p50",
    "offline_best",
    "above_reference",
    "above_offline_max",
    "measured",
    "measured_mean",
    "in_offline",
    "hamming_to_start",
    "diversity",
    "oracle_spearman",
)


def mean_pairwise_hamming(residues) -> float:
    """The designs' diversity: their mean Hamming distance to one another."""
    pairs = list(itertools.combinations(residues, 2))
    if not pairs:
        return 0.0
    return float(np.mean([sum(a != b for a, b in zip(x, y, strict=True)) for x, y in pairs]))


def design_scores(designs: pd.DataFrame, landscape: dict) -> dict:
    """One method and seed's row of scores from its designs.tsv and the data's landscape.json."""
    low, high = landscape["label_min"], landscape["label_max"]
    measured = designs.measured_label[designs.measured.astype(bool)]
    return {
        "oracle_p100": designs.oracle_normalised.max(),
        "oracle_p50": designs.oracle_normalised.median(),
        "offline_best": (landscape["offline_max"] - low) / (high - low),
        "above_reference": (designs.oracle > landscape["reference_fitness"]).mean(),
        "above_offline_max": (designs.oracle > landscape["offline_max"]).mean(),
        "measured": len(measured) / len(designs),
        "measured_mean": ((measured - low) / (high - low)).mean() if len(measured) else np.nan,
        "in_offline": int(designs.in_offline.astype(bool).sum()),
        "hamming_to_start": designs.hamming.mean(),
        "diversity": mean_pairwise_hamming(designs.residues),
        "oracle_spearman": landscape["oracle_spearman"],
    }


def locate(path: Path) -> tuple[str, str, int, Path]:
    """(design, method, seed, data folder) of .../<design>/<method>/seed<k>/designs.tsv."""
    seed_folder = path.parent
    if not seed_folder.name.startswith("seed") or not seed_folder.name[4:].isdigit():
        raise InputError(f"{path}: expected <design>/<method>/seed<k>/designs.tsv")
    method_folder = seed_folder.parent
    return (
        method_folder.parent.name,
        method_folder.name,
        int(seed_folder.name[4:]),
        method_folder.parent / "data",
    )


def gather_design(inputs, output, figure) -> None:
    """results/design.tsv (a row per design problem, method and seed, then their means over
    seeds as seed `all`) and its figure."""
    from copra.plots import plot_design

    rows, frames, landscapes = [], [], {}
    for path in map(Path, inputs):
        name, method, seed, data = locate(path)
        if name not in landscapes:
            landscapes[name] = json.loads((data / "landscape.json").read_text())
            variants = pd.read_csv(data / "variants.tsv", sep="\t")
            frames.append(_data_scores(name, variants, landscapes[name]))
        designs = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "design": name,
                "method": method,
                "seed": str(seed),
                **design_scores(designs, landscapes[name]),
            }
        )
        frames.append(
            designs.assign(design=name, method=method, score=designs.oracle_normalised)[
                ["design", "method", "score"]
            ]
        )
    table = pd.DataFrame(rows)
    means = table.groupby(["design", "method"], sort=False)[list(METRICS)].mean().reset_index()
    table = pd.concat([table, means.assign(seed="all")], ignore_index=True)
    write_table(output, table)
    plot_design(pd.concat(frames, ignore_index=True), table, figure)


def _data_scores(name: str, variants: pd.DataFrame, landscape: dict) -> pd.DataFrame:
    """The measured data as two reference groups of the figure: the offline set and all."""
    low, high = landscape["label_min"], landscape["label_max"]
    score = (variants.label - low) / (high - low)
    return pd.concat(
        [
            pd.DataFrame(
                {"design": name, "method": "offline data", "score": score[variants.offline]}
            ),
            pd.DataFrame({"design": name, "method": "all data", "score": score}),
        ]
    )
