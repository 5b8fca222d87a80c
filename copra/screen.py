"""`copra screen` (predict with `pairs: all`): every unordered pair of a FASTA's proteins.

The pair model combines two pooled vectors after the backbone, so N proteins take N backbone
passes per seed (the head: cached vectors), and the N(N-1)/2 pairs are scored in blocks of
`block_pairs` on those vectors. Memory is bounded by the block, not by N^2: what is kept is the
top pairs (and those above `min_score`), a histogram of every score, and, when asked for, every
score as one compressed binary array.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from copra.atomic import atomic_path, write_table
from copra.errors import InputError
from copra.predict import ensemble, ensemble_vectors, write_prediction_manifest
from copra.prediction_inputs import fasta_inputs

log = logging.getLogger(__name__)


def pair_blocks(n: int, block: int):
    """The pairs i < j in row-major order, `block` at a time, as segments (i, j0, j1): the pairs
    (i, j) for j0 <= j < j1."""
    i, j = 0, 1
    while i < n - 1:
        segments, size = [], 0
        while i < n - 1 and size < block:
            take = min(block - size, n - j)
            segments.append((i, j, j + take))
            size, j = size + take, j + take
            if j == n:
                i, j = i + 1, i + 2
        yield segments


def pair_index(segments, n: int) -> np.ndarray:
    """i * n + j of every pair of the segments, in order."""
    return np.concatenate([i * n + np.arange(j0, j1, dtype=np.int64) for i, j0, j1 in segments])


class TopPairs:
    """The `top` best pairs so far (ties: the earlier pair first), and all at or above a score."""

    def __init__(self, top: int, min_score: float | None):
        self.top, self.min_score = top, min_score
        self.index = np.zeros(0, dtype=np.int64)  # i * n + j
        self.score = np.zeros(0, dtype=np.float32)
        self.above: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, index: np.ndarray, score: np.ndarray) -> None:
        if self.min_score is not None:
            keep = score >= self.min_score
            self.above.append((index[keep], score[keep]))
        if len(self.index) == self.top:  # only what beats (or ties) the worst kept pair
            keep = score >= self.score[-1]
            index, score = index[keep], score[keep]
        index = np.concatenate([self.index, index])
        score = np.concatenate([self.score, score])
        order = np.lexsort((index, -score))[: self.top]
        self.index, self.score = index[order], score[order]

    def chosen(self) -> np.ndarray:
        """Pair indices kept, best first."""
        index, score = self.index, self.score
        if self.above:
            index = np.concatenate([index, *(i for i, _ in self.above)])
            score = np.concatenate([score, *(s for _, s in self.above)])
            index, first = np.unique(index, return_index=True)
            score = score[first]
        return index[np.lexsort((index, -score))]


def screen_scores(computed, n: int, settings):
    """Score every pair of n proteins: (TopPairs, histogram counts, all mean scores or None).

    `computed`: per seed (its head scorer's `prepare`d vectors in protein order, the scorer).
    Scores are each seed's binary score; the ranking and the histogram use their mean."""
    total = n * (n - 1) // 2
    if total == 0:
        raise InputError(f"a screen needs at least two proteins, not {n}")
    edges = np.linspace(0.0, 1.0, settings.histogram_bins + 1)
    counts = np.zeros(settings.histogram_bins, dtype=np.int64)
    top = TopPairs(settings.top, settings.min_score)
    every = np.empty(total, dtype=np.float32) if settings.all_scores else None
    every_std = np.empty(total, dtype=np.float32) if settings.all_scores else None
    blocks = -(-total // settings.block_pairs)
    start = 0
    for segments in tqdm(
        pair_blocks(n, settings.block_pairs), total=blocks, desc="pairs", unit="block"
    ):
        scores = [scorer.segments(prepared, segments)[:, 0] for prepared, scorer in computed]
        mean, spread = ensemble(scores)
        counts += np.histogram(mean, bins=edges)[0]
        top.add(pair_index(segments, n), mean)
        if every is not None:
            every[start : start + len(mean)], every_std[start : start + len(mean)] = mean, spread
        start += len(mean)
    histogram = pd.DataFrame({"low": edges[:-1], "high": edges[1:], "pairs": counts})
    return top, histogram, (every, every_std)


def run_screen(runs, sequences, output, seen, settings, backbones, figure, config_snapshot):
    """Screen every pair of the FASTA `sequences` with the seeds `runs`; write the top pairs
    (`output`), the histogram beside it, every score when asked, and the manifest."""
    if sequences is None:
        raise InputError("a screen (pairs: all) needs the FASTA of its proteins (sequences:)")
    inputs = fasta_inputs(sequences)
    ids, hashes = inputs.rows.id.tolist(), inputs.rows.seq_hash.tolist()
    n = len(ids)
    log.info("screening %d proteins: %d pairs", n, n * (n - 1) // 2)
    computed = [
        (scorer.prepare(np.stack([vectors[h] for h in hashes])), scorer)
        for vectors, scorer in ensemble_vectors(runs, backbones, inputs.sequences)
    ]
    seeds = [run.manifest["seed"] for run in runs]
    top, histogram, (every, every_std) = screen_scores(computed, n, settings)
    chosen = top.chosen()
    i, j = chosen // n, chosen % n
    column = runs[0].targets.score_columns()[0]
    frame = pd.DataFrame({"id_a": np.array(ids)[i], "id_b": np.array(ids)[j]})
    frame["in_training"] = [
        frozenset((hashes[a], hashes[b])) in seen for a, b in zip(i, j, strict=True)
    ]
    scores = [scorer.scores(prepared[i], prepared[j])[:, :1] for prepared, scorer in computed]
    mean, spread = ensemble(scores)
    frame[column], frame[f"{column}_std"] = mean[:, 0], spread[:, 0]
    for seed, values in zip(seeds, scores, strict=True):
        frame[f"{column}@seed{seed}"] = values[:, 0]
    output = Path(output)
    base = str(output).removesuffix(".tsv")
    write_table(f"{base}.histogram.tsv", histogram)
    if every is not None:
        with atomic_path(f"{base}.scores.npz", suffix=".npz") as tmp:
            arrays = {"ids": np.array(ids, dtype=str), column: every}
            if len(runs) > 1:
                arrays[f"{column}_std"] = every_std
            np.savez_compressed(tmp, **arrays)
    if figure is not None:
        from copra.plots import plot_screen

        plot_screen(histogram, frame, column, figure, title=output.stem)
    write_prediction_manifest(
        output,
        runs,
        [sequences],
        settings,
        backbones,
        config_snapshot,
        proteins=n,
        pairs=n * (n - 1) // 2,
        kept=len(frame),
        all_scores=f"{base}.scores.npz" if every is not None else None,
    )
    write_table(output, frame)
    log.info("%d of %d pairs kept (top %d)", len(frame), n * (n - 1) // 2, settings.top)
