"""What a task's cached embeddings look like: their provenance, size and a 2-D map (PCA).

The map colours each unique sequence by its label (classes, or the label's value for regression;
complex tasks: the dG of the complexes a protein chain is in), or by split for pair tasks, whose
labels belong to pairs, not to sequences. Sequences with no label (complex tasks' mutants) are
grey.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from copra.atomic import write_table  # noqa: E402
from copra.embed import read_embeddings  # noqa: E402
from copra.errors import InputError  # noqa: E402
from copra.plots import _save  # noqa: E402
from copra.tables import COMPLEX_KIND, PAIR_KIND  # noqa: E402

COLUMNS = ["task", "name", "value"]
REGRESSION_KINDS = ("sequence_regression", COMPLEX_KIND)
SPLIT_ORDER = {"train": 0, "valid": 1, "test": 2}
MOST_CLASSES = 8  # more classes than this: the rest are drawn as "other"


def sequence_colours(kind: str, table: pd.DataFrame, chains: pd.DataFrame | None) -> pd.Series:
    """What each sequence hash is coloured by: its label, or (pair tasks) its first split."""
    if kind == PAIR_KIND:
        both = pd.concat(
            table[[column, "split"]].set_axis(["seq_hash", "split"], axis=1)
            for column in ("hash_a", "hash_b")
        )
        return both.drop_duplicates("seq_hash").set_index("seq_hash").split
    if kind == COMPLEX_KIND:
        labels = table.set_index("id").label.astype(float)
        proteins = chains[chains.kind == "protein"]
        return proteins.assign(label=proteins.id.map(labels)).groupby("seq_hash").label.mean()
    labels = table.drop_duplicates("seq_hash").set_index("seq_hash").label
    return labels.astype(float) if kind in REGRESSION_KINDS else labels.astype(str)


def pca(vectors: np.ndarray, components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates on the first principal components, and the fraction of variance of each."""
    centred = vectors - vectors.mean(axis=0)
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / max((singular**2).sum(), np.finfo(float).tiny)
    coordinates = centred @ right[:components].T
    padding = components - coordinates.shape[1]
    if padding > 0:  # fewer sequences or dimensions than components
        coordinates = np.pad(coordinates, ((0, 0), (0, padding)))
        variance = np.pad(variance, (0, padding))
    return coordinates, variance[:components]


def pooled_vectors(vectors) -> np.ndarray:
    """One vector per sequence: per-residue matrices are averaged over their residues."""
    return np.stack([v.mean(axis=0) for v in vectors]) if isinstance(vectors, list) else vectors


def summarize_embeddings(ids, vectors, metadata: dict) -> list[tuple[str, object]]:
    """(name, value) rows: where the vectors come from, how many and how large."""
    pooled = pooled_vectors(vectors)
    norms = np.linalg.norm(pooled, axis=1) if len(pooled) else np.zeros(1)
    rows = [(key, metadata[key]) for key in sorted(metadata)]
    rows += [
        ("sequences", len(ids)),
        ("dimension", int(pooled.shape[1]) if pooled.ndim == 2 else 0),
        ("per_residue", isinstance(vectors, list)),
        ("vector norm mean", float(norms.mean())),
        ("vector norm sd", float(norms.std())),
    ]
    if isinstance(vectors, list):
        rows.append(("residues", int(sum(len(v) for v in vectors))))
    return rows


def run_embedding_summary(
    task: str, embeddings_path, table_path, output, figure, *, kind: str, chains_path=None
) -> pd.DataFrame:
    """embedding_summary.tsv and the PCA map of one task's embeddings."""
    ids, vectors, metadata = read_embeddings(embeddings_path)
    table = pd.read_csv(table_path, sep="\t", dtype=str)
    chains = pd.read_csv(chains_path, sep="\t", dtype=str) if chains_path else None
    if kind == COMPLEX_KIND and chains is None:
        raise InputError("a complex task's embedding summary needs its chains.tsv (--chains)")
    colours = sequence_colours(kind, table, chains).reindex(ids)
    coordinates, variance = pca(pooled_vectors(vectors).astype(np.float64))
    rows = summarize_embeddings(ids, vectors, metadata)
    rows += [(f"PC{k + 1} variance fraction", float(v)) for k, v in enumerate(variance)]
    frame = pd.DataFrame([(task, name, value) for name, value in rows], columns=COLUMNS)
    write_table(output, frame)
    plot_embedding_map(task, coordinates, variance, colours, kind, metadata, figure)
    return frame


def _legend_order(group: str) -> tuple:
    """Splits in pipeline order, then classes alphabetically, then "other"."""
    return (group == "other", SPLIT_ORDER.get(group, len(SPLIT_ORDER)), group)


def plot_embedding_map(
    task, coordinates, variance, colours: pd.Series, kind: str, metadata: dict, output
) -> None:
    """The sequences on the first two principal components, coloured as `sequence_colours`."""
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    x, y = coordinates[:, 0], coordinates[:, 1]
    unlabelled = colours.isna().to_numpy()
    if unlabelled.any():
        ax.scatter(x[unlabelled], y[unlabelled], s=10, color="lightgrey", label="no label")
    if kind in REGRESSION_KINDS:
        points = ax.scatter(
            x[~unlabelled],
            y[~unlabelled],
            s=12,
            cmap="viridis",
            c=colours[~unlabelled].astype(float),
        )
        unit = " dG (kcal/mol)" if kind == COMPLEX_KIND else ""
        fig.colorbar(points, ax=ax, label=f"label{unit}")
    else:
        groups = colours[~unlabelled].astype(str)
        kept = groups.value_counts().index[:MOST_CLASSES]
        groups = groups.where(groups.isin(kept), "other")
        for k, group in enumerate(sorted(groups.unique(), key=_legend_order)):
            chosen = np.flatnonzero(~unlabelled)[(groups == group).to_numpy()]
            ax.scatter(x[chosen], y[chosen], s=12, color=f"C{k % 10}", label=group)
    if kind in REGRESSION_KINDS and unlabelled.any():  # the colour bar is on the right
        ax.legend(fontsize=7)
    elif kind not in REGRESSION_KINDS:
        title = "split (first seen)" if kind == PAIR_KIND else None
        ax.legend(
            fontsize=7,
            title=title,
            title_fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.02, 1),
            borderaxespad=0,
        )
    ax.set_xlabel(f"PC1 ({variance[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({variance[1]:.0%} of variance)")
    source = f"{metadata.get('model', '?')}, layer {metadata.get('layer', '?')}"
    ax.set_title(f"{task}: {len(coordinates)} sequences\n{source}", fontsize=9)
    _save(fig, Path(output))
