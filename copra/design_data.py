"""A design problem's data: the task's measured variants, the designed positions, the offline
set the designer may see (with the proxy's frozen-LM features) and the oracle fitted on all."""

import json
import logging
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from copra.atomic import atomic_directory, write_table
from copra.design_oracle import AMINO_ACIDS, fit_oracle
from copra.design_problems import REGRESSION
from copra.errors import InputError
from copra.provenance import write_manifest
from copra.settings import DesignSettings
from copra.tables import read_sequences, read_task_table

log = logging.getLogger(__name__)


@dataclass
class Landscape:
    """Every measured variant of the task: ids, full sequences, labels, splits, and each one's
    residues at the designed positions."""

    ids: list[str]
    sequences: list[str]
    labels: np.ndarray
    splits: np.ndarray
    positions: list[int]

    @cached_property
    def residues(self) -> list[str]:
        return ["".join(s[p] for p in self.positions) for s in self.sequences]


def _one_length(sequences: list[str], ids: list[str], where: str, path) -> int:
    lengths = Counter(map(len, sequences))
    if len(lengths) > 1:
        common = lengths.most_common(1)[0][0]
        odd = next(i for i, s in enumerate(sequences) if len(s) != common)
        raise InputError(
            f"{path}: {where} are residue indices of one aligned sequence, but the task's "
            f"variants differ in length ({len(sequences[odd])} residues in record {ids[odd]}, "
            f"{common} in most): give variants of one length (substitutions only)"
        )
    return next(iter(lengths))


def designed_positions(sequences, ids, positions, where: str, path) -> list[int]:
    """The positions as configured (checked against the sequence), or those that vary."""
    length = _one_length(sequences, ids, where, path)
    if positions == "auto":
        varying = [i for i in range(length) if len({s[i] for s in sequences}) > 1]
        if not varying:
            raise InputError(f"{path}: the task's variants are all one sequence: nothing to design")
        return varying
    outside = [p for p in positions if p >= length]
    if outside:
        raise InputError(
            f"{where}: {outside} lie outside the sequence ({length} residues, 0-based positions "
            f"0-{length - 1}); give 0-based indices of residues"
        )
    return sorted(positions)


def read_landscape(table_path, sequences_path, kind: str, settings: DesignSettings, where: str):
    """The task's variants, checked: a regression task, one length, standard residues."""
    if kind != REGRESSION:
        raise InputError(
            f"{where}.task is a {kind} task: design needs measured fitness values "
            f"(a {REGRESSION} task)"
        )
    table = read_task_table(table_path, REGRESSION)
    by_hash = read_sequences(sequences_path)
    sequences = [by_hash[h] for h in table.seq_hash]
    ids = table["id"].tolist()
    positions = designed_positions(
        sequences, ids, settings.positions, f"{where}.positions", table_path
    )
    for i, sequence in enumerate(sequences):
        odd = [p for p in positions if sequence[p] not in AMINO_ACIDS]
        if odd:
            raise InputError(
                f"{table_path}: record {ids[i]} has {sequence[odd[0]]!r} at designed position "
                f"{odd[0]}: designed positions take the 20 standard amino acids ({AMINO_ACIDS})"
            )
    labels, splits = table["label"].to_numpy(float), table["split"].to_numpy(str)
    return Landscape(ids, sequences, labels, splits, positions)


def reference_residues(landscape: Landscape, given: str | None, where: str) -> str:
    """The reference's residues at the designed positions: given, or the consensus."""
    if given is None:
        columns = zip(*landscape.residues, strict=True)
        return "".join(Counter(column).most_common(1)[0][0] for column in columns)
    if len(given) != len(landscape.positions) or set(given) - set(AMINO_ACIDS):
        raise InputError(
            f"{where}.reference is {given!r}: give one standard amino acid per designed position "
            f"({len(landscape.positions)}: {landscape.positions})"
        )
    return given


def offline_rows(landscape: Landscape, settings: DesignSettings, where: str):
    """Indices of the offline set (labels at most the quantile `cut`, sampled to `max_offline`,
    sorted by label (best last) then id; at least `starts` of them) and the cut."""
    cut = float(np.quantile(landscape.labels, settings.offline_quantile))
    rows = np.flatnonzero(landscape.labels <= cut)
    if settings.max_offline is not None and rows.size > settings.max_offline:
        rows = np.sort(np.random.default_rng(0).choice(rows, settings.max_offline, replace=False))
    if rows.size < settings.starts:
        raise InputError(
            f"{where}: the offline set has {rows.size} variants (labels <= {cut:.4g}, the "
            f"{settings.offline_quantile} quantile of {landscape.labels.size}), fewer than "
            f"starts ({settings.starts}): lower {where}.starts or raise offline_quantile"
            + (" or max_offline" if settings.max_offline is not None else "")
        )
    order = np.lexsort((np.asarray(landscape.ids, dtype=str)[rows], landscape.labels[rows]))
    return rows[order], cut


def lm_features(backbone, sequences: list[str], device, batch_tokens: int = 16384) -> np.ndarray:
    """(n, d) float32: the frozen LM's last layer, mean-pooled over residues (the proxy's).

    Not `embed.embed_sequences`: its bf16 autocast on a GPU and its cache would give features
    other than the float32 soft-embedding forward the designs are moved through."""
    import torch

    from copra.fast_esm import representation
    from copra.protein_model import mean_pool

    model = backbone.model.to(device).eval()
    converter = backbone.alphabet.get_batch_converter()
    per_batch = max(1, batch_tokens // (len(sequences[0]) + 2))
    out = []
    for start in range(0, len(sequences), per_batch):
        batch = sequences[start : start + per_batch]
        tokens = converter([("", s) for s in batch])[2].to(device)
        with torch.no_grad():
            reps = representation(model, tokens, backbone.num_layers)
            out.append(mean_pool(reps, tokens, backbone.alphabet).float().cpu())
        log.info("features of %d/%d offline variants", start + len(batch), len(sequences))
    return torch.cat(out).numpy()


def prepare_design(
    table_path, sequences_path, output_dir, name: str, kind: str, settings, model, config_snapshot
):
    """Write `output_dir`: variants.tsv (every measured variant; offline and start marked),
    offline.npz (the offline set's LM features), oracle.json, landscape.json and the manifest."""
    from copra.device import pick_device

    where = f"design.{name}"
    landscape = read_landscape(table_path, sequences_path, kind, settings, where)
    reference = reference_residues(landscape, settings.reference, where)
    offline, cut = offline_rows(landscape, settings, where)
    oracle = fit_oracle(landscape.residues, landscape.labels, landscape.splits, landscape.positions)
    log.info("oracle: alpha %s, held-out Spearman %.3f", oracle.alpha, oracle.held_out_spearman)
    device = pick_device()
    backbone = model.load()
    features = lm_features(backbone, [landscape.sequences[i] for i in offline], device)
    variants = pd.DataFrame(
        {
            "id": landscape.ids,
            "sequence": landscape.sequences,
            "residues": landscape.residues,
            "label": landscape.labels,
            "split": landscape.splits,
            "offline": np.isin(np.arange(len(landscape.ids)), offline),
            "start": np.isin(np.arange(len(landscape.ids)), offline[-settings.starts :]),
        }
    )
    measured = dict(zip(landscape.residues, landscape.labels, strict=True))
    summary = {
        "positions": landscape.positions,
        "reference": reference,
        "reference_fitness": float(measured.get(reference, oracle.predict([reference])[0])),
        "reference_measured": reference in measured,
        "label_min": float(landscape.labels.min()),
        "label_max": float(landscape.labels.max()),
        "offline_max": float(landscape.labels[offline].max()),
        "offline_cut": cut,
        "variants": len(landscape.ids),
        "offline": int(offline.size),
        "oracle_alpha": oracle.alpha,
        "oracle_spearman": oracle.held_out_spearman,
    }
    with atomic_directory(output_dir) as folder:
        write_table(folder / "variants.tsv", variants)
        np.savez(
            folder / "offline.npz",
            rows=offline,
            features=features,
            labels=landscape.labels[offline],
        )
        oracle.save(folder / "oracle.json")
        (folder / "landscape.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_manifest(
            folder / "manifest.json",
            inputs=[table_path, sequences_path],
            config=config_snapshot,
            design=name,
            offline_sample_seed=0 if settings.max_offline is not None else None,
            backbone={"name": backbone.name, "weights": backbone.weights_id},
            device=str(device),
            **summary,
        )
    log.info(
        "%s: %d variants, %d offline, wrote %s",
        name,
        len(landscape.ids),
        offline.size,
        Path(output_dir),
    )
