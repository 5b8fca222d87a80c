"""The bundled demo: small deterministic tasks with a planted signal, one of each task kind.

The complex task's structures come from copra/demo_complexes.py.

The two tasks the adapter analyses read (localization, stability) have their signal in residue
order with composition balanced: every protein holds 4 K, 4 W and 4 E; the class is which of the
three forms one contiguous run, the regression label how many do. Mean-pooled embeddings of the
frozen random-weight backbone see (almost) only composition, so the head alone stays near chance
while LoRA learns the adjacency. The other tasks' signals are in residue composition, which
mean-pooled embeddings carry even with random weights.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from copra import demo_complexes
from copra.atomic import atomic_path, write_table
from copra.sequences import read_fasta, write_fasta

BACKGROUND = "ACDEFGHIKLMNPQRSTVWY"
LOCALIZATION = {"cytoplasm": "KEDR", "membrane": "LIVFA", "secreted": "CGSN"}  # composition
# The class of a localization protein is which marker forms a run; stability counts the runs.
RUN_MARKERS = {"cytoplasm": "K", "membrane": "W", "secreted": "E"}
RUN_COPIES = 4
RUN_LENGTHS = (20, 26)  # inclusive; lengths vary, so that counts are not fixed fractions
STICKY = "WYC"
# Continual learning: six classes learned two at a time, and two organisms in turn.
COMPARTMENTS = {
    "cytoplasm": "KE",
    "membrane": "LIV",
    "secreted": "CGS",
    "nucleus": "RH",
    "mitochondrion": "WY",
    "peroxisome": "TQM",
}
ORGANISMS = {"organism_a": "ADEGKST", "organism_b": "FHILMNPQRVWY"}
NEW_STRUCTURES = "new_structures"
FILES = (
    "proteins.fasta",
    "localization.tsv",
    "membrane.csv",
    "stability.tsv",
    "partners.fasta",
    "interactions.tsv",
    "new_proteins.fasta",
    "new_complexes.csv",
    "compartments.fasta",
    "compartments.tsv",
    "organisms.fasta",
    "organism_a.tsv",
    "organism_b.tsv",
    "variants.fasta",
    "fitness.tsv",
    *demo_complexes.FILES,
)


def _protein(rng, length: int, enriched: str, strength: float) -> str:
    residues = rng.choice(list(BACKGROUND), size=length)
    biased = rng.random(length) < strength
    residues[biased] = rng.choice(list(enriched), size=int(biased.sum()))
    return "M" + "".join(residues[1:])


def _splits(rng, n: int) -> np.ndarray:
    return rng.choice(["train", "valid", "test"], size=n, p=[0.7, 0.15, 0.15])


def _stratified_splits(rng, labels: np.ndarray) -> np.ndarray:
    """Splits drawn within each label: every label gets valid and test rows (15% each, at
    least one) and the rest train."""
    splits = np.empty(len(labels), dtype=object)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        held = max(1, round(0.15 * len(rows)))
        splits[rows] = "train"
        splits[rows[:held]] = "valid"
        splits[rows[held : 2 * held]] = "test"
    return splits


def _run_protein(rng, length: int, runs: str, scattered: str) -> str:
    """M, then RUN_COPIES copies of each residue of `runs` as one contiguous block and of each of
    `scattered` at separate positions (none beside its own kind); the rest background residues
    (no marker, no M), never equal to a neighbour: the planted runs are the only repeats."""
    chars = None
    while chars is None:  # a short protein can leave no room for the last marker: start over
        chars = _placed_markers(rng, length, runs, scattered)
    background = [r for r in BACKGROUND if r not in "M" + "".join(RUN_MARKERS.values())]
    for i in range(length):
        while chars[i] is None:
            residue = background[int(rng.integers(len(background)))]
            if _apart(chars, i, residue):
                chars[i] = residue
    return "".join(chars)


def _apart(chars: list, i: int, residue: str) -> bool:
    """True when `residue` at position i stands beside no residue of its own kind."""
    return chars[i - 1] != residue and (i + 1 == len(chars) or chars[i + 1] != residue)


def _placed_markers(rng, length: int, runs: str, scattered: str, tries: int = 50):
    """M and the markers of _run_protein at random positions (None where positions are unset),
    or None when `tries` draws found no room for one of them."""
    chars: list[str | None] = [None] * length
    chars[0] = "M"
    for residue in runs:  # a free block with a free residue on either side
        for _ in range(tries):
            start = int(rng.integers(1, length - RUN_COPIES + 1))
            span = range(max(1, start - 1), min(length, start + RUN_COPIES + 1))
            if all(chars[i] is None for i in span):
                chars[start : start + RUN_COPIES] = [residue] * RUN_COPIES
                break
        else:
            return None
    for residue in scattered:
        free = [i for i in range(1, length) if chars[i] is None and _apart(chars, i, residue)]
        if len(free) < RUN_COPIES:
            return None
        for _ in range(tries):
            positions = np.sort(rng.choice(free, size=RUN_COPIES, replace=False))
            if (np.diff(positions) > 1).all():
                for i in positions:
                    chars[i] = residue
                break
        else:
            return None
    return chars


def _run_length(rng) -> int:
    return int(rng.integers(RUN_LENGTHS[0], RUN_LENGTHS[1] + 1))


def _localized_protein(rng, label: str) -> str:
    """A protein of class `label`: its marker as one run, the two others scattered."""
    run = RUN_MARKERS[label]
    others = "".join(m for m in RUN_MARKERS.values() if m != run)
    return _run_protein(rng, _run_length(rng), run, others)


def sequence_tasks(rng, n: int, folder: Path) -> None:
    """proteins.fasta (2n + 1 records): a multi-class table (localization.tsv: the first n
    proteins and a duplicate), a binary one derived from it (membrane.csv, own column names) and
    a regression table (stability.tsv: the next n proteins)."""
    markers = "".join(RUN_MARKERS.values())
    classes = rng.choice(list(RUN_MARKERS), size=n)
    records = [(f"demo:prot/{i:04d}", _localized_protein(rng, c)) for i, c in enumerate(classes)]
    stability = []
    for i in range(n, 2 * n):
        # stability: how many of the three markers form a run (0-3), plus noise
        chosen = set(rng.choice(len(markers), size=int(rng.integers(0, 4)), replace=False).tolist())
        runs = "".join(m for j, m in enumerate(markers) if j in chosen)
        scattered = "".join(m for j, m in enumerate(markers) if j not in chosen)
        records.append((f"demo:prot/{i:04d}", _run_protein(rng, _run_length(rng), runs, scattered)))
        stability.append(round(len(runs) + rng.normal(0, 0.25), 4))
    # The same sequence under a second id: embedded once, reported under both.
    records.append((f"demo:prot/{2 * n:04d}", records[0][1]))
    classes = np.append(classes, classes[0])
    ids = [name for name, _ in records]
    localization = pd.DataFrame(
        {"id": ids[:n] + ids[2 * n :], "label": classes, "split": _splits(rng, n + 1)}
    )
    stability = pd.DataFrame({"id": ids[n : 2 * n], "label": stability, "split": _splits(rng, n)})
    _write_sequence_files(folder, records, localization, stability)


def _write_sequence_files(folder: Path, records, localization, stability) -> None:
    """proteins.fasta, localization.tsv, membrane.csv (is_membrane of localization's proteins,
    own column names) and stability.tsv."""
    write_fasta(folder / "proteins.fasta", records)
    write_table(folder / "localization.tsv", localization)
    membrane = pd.DataFrame(
        {
            "protein": localization.id,
            "is_membrane": (localization.label == "membrane").astype(int),
        }
    )
    with atomic_path(folder / "membrane.csv") as tmp:
        membrane.to_csv(tmp, index=False)
    write_table(folder / "stability.tsv", stability)


def composition_tasks(rng, n: int, folder: Path) -> None:
    """The files of sequence_tasks with composition signals instead: n proteins of 30 to 79
    residues, the class in enriched residues, stability in the share of aromatic ones (small
    and quick to learn: the unit tests' tasks)."""
    classes = rng.choice(list(LOCALIZATION), size=n)
    stickiness = rng.uniform(0.0, 0.3, size=n)
    records, stability = [], []
    for i, label in enumerate(classes):
        sequence = _protein(rng, int(rng.integers(30, 80)), LOCALIZATION[label], 0.2)
        # Stability: share of aromatic residues planted at a per-protein rate, plus noise.
        sequence = "".join(
            rng.choice(list("WYF")) if rng.random() < stickiness[i] else residue
            for residue in sequence
        )
        records.append((f"demo:prot/{i:04d}", sequence))
        aromatic = sum(sequence.count(r) for r in "WYF") / len(sequence)
        stability.append(round(10 * aromatic + rng.normal(0, 0.2), 4))
    # The same sequence under a second id: embedded once, reported under both.
    records.append((f"demo:prot/{n:04d}", records[0][1]))
    classes = np.append(classes, classes[0])
    stability.append(stability[0])
    ids = [name for name, _ in records]
    splits = _splits(rng, len(ids))
    _write_sequence_files(
        folder,
        records,
        pd.DataFrame({"id": ids, "label": classes, "split": splits}),
        pd.DataFrame({"id": ids, "label": stability, "split": splits}),
    )


def pair_task(rng, n: int, folder: Path) -> None:
    """partners.fasta and interactions.tsv: a pair interacts when both partners are sticky
    (about half of the pairs; splits drawn within each label)."""
    sticky = rng.random(n) < 0.7
    records = [
        (f"partner_{i:04d}", _protein(rng, int(rng.integers(30, 80)), STICKY if s else "AG", 0.15))
        for i, s in enumerate(sticky)
    ]
    write_fasta(folder / "partners.fasta", records)
    a, b = rng.integers(0, n, size=(2, 2 * n))
    keep = a != b
    a, b = a[keep], b[keep]
    noise = rng.random(a.size) < 0.05
    label = (sticky[a] & sticky[b]) ^ noise
    table = pd.DataFrame(
        {
            "id_a": [records[i][0] for i in a],
            "id_b": [records[i][0] for i in b],
            "label": label.astype(int),
            "split": _stratified_splits(rng, label),
        }
    )
    # A pair drawn twice (in either order) is kept once: with the label noise, a repeat could
    # contradict the first, which ingest refuses.
    repeated = pd.Series(list(map(frozenset, zip(a, b, strict=True)))).duplicated()
    write_table(folder / "interactions.tsv", table[~repeated.to_numpy()])


def continual_tasks(rng, n: int, folder: Path) -> None:
    """compartments.tsv (six classes, for class-incremental steps) and organism_a.tsv,
    organism_b.tsv (membrane or not, over two organisms' residue backgrounds: one label space,
    two domains); short proteins, so that learning them in steps stays quick."""
    classes = rng.choice(list(COMPARTMENTS), size=n)
    records = [
        (f"compartment_{i:03d}", _protein(rng, int(rng.integers(25, 50)), COMPARTMENTS[c], 0.3))
        for i, c in enumerate(classes)
    ]
    write_fasta(folder / "compartments.fasta", records)
    splits = _stratified_splits(rng, classes)
    table = {"id": [r[0] for r in records], "label": classes, "split": splits}
    write_table(folder / "compartments.tsv", pd.DataFrame(table))
    organisms = []
    for name, background in ORGANISMS.items():
        membrane = rng.random(n // 2) < 0.5
        ids = [f"{name}_{i:03d}" for i in range(n // 2)]
        for id_, inside in zip(ids, membrane, strict=True):
            residues = rng.choice(list(background), size=int(rng.integers(25, 50)))
            planted = rng.random(len(residues)) < (0.3 if inside else 0.0)
            residues[planted] = rng.choice(list("LIVFA"), size=int(planted.sum()))
            organisms.append((id_, "M" + "".join(residues[1:])))
        labels = pd.DataFrame(
            {"id": ids, "label": membrane.astype(int), "split": _stratified_splits(rng, membrane)}
        )
        write_table(folder / f"{name}.tsv", labels)
    write_fasta(folder / "organisms.fasta", organisms)


DESIGNED = (4, 11, 19)  # the positions of the design task's variants


def design_task(rng, n: int, folder: Path) -> None:
    """variants.fasta and fitness.tsv: substitutions of one parent at three positions whose
    fitness is a known additive function of the residues there (the oracle can fit it exactly),
    for offline design; the parent is variant_0000."""
    parent = _protein(rng, 28, "A", 0.0)
    effects = rng.normal(0.0, 1.0, size=(len(DESIGNED), len(BACKGROUND)))
    codes = np.unique(rng.integers(0, len(BACKGROUND), size=(n, len(DESIGNED))), axis=0)
    parent_codes = [BACKGROUND.index(parent[p]) for p in DESIGNED]
    codes = np.vstack([parent_codes, codes[(codes != parent_codes).any(1)]])
    records, fitness = [], []
    for i, row in enumerate(codes):
        chars = list(parent)
        for position, code in zip(DESIGNED, row, strict=True):
            chars[position] = BACKGROUND[code]
        records.append((f"variant_{i:04d}", "".join(chars)))
        fitness.append(round(float(effects[np.arange(len(DESIGNED)), row].sum()), 4))
    write_fasta(folder / "variants.fasta", records)
    table = {"id": [r[0] for r in records], "label": fitness, "split": _splits(rng, len(records))}
    write_table(folder / "fitness.tsv", pd.DataFrame(table))


def new_proteins(rng, n: int, folder: Path) -> None:
    """new_proteins.fasta: proteins no task trained on, to predict (with, last, a copy of the
    first training protein, which predictions mark as seen in training)."""
    classes = rng.choice(list(RUN_MARKERS), size=n)
    records = [(f"new_{i:03d}", _localized_protein(rng, label)) for i, label in enumerate(classes)]
    known = next(iter(read_fasta(folder / "proteins.fasta")))
    write_fasta(folder / "new_proteins.fasta", [*records, ("seen_000", known.sequence)])


def new_complexes(folder: Path, n: int, seed: int) -> None:
    """new_complexes.csv and new_structures/: complexes no run trained on, to predict."""
    import shutil

    scratch = folder / ".new_complexes"
    demo_complexes.write_demo_complexes(scratch, n, seed)
    table = pd.read_csv(scratch / "complexes.csv")
    table["pdb"] = "new_" + table.pdb
    with atomic_path(folder / "new_complexes.csv") as tmp:
        table.drop(columns=["dG_kcal_mol"]).to_csv(tmp, index=False)
    structures = folder / NEW_STRUCTURES
    shutil.rmtree(structures, ignore_errors=True)
    structures.mkdir()
    for path in (scratch / demo_complexes.STRUCTURES).iterdir():
        path.rename(structures / f"new_{path.name}")
    shutil.rmtree(scratch)


def write_demo_data(
    folder, n_sequences: int, seed: int, n_complexes: int = 40, n_adapter: int | None = None
) -> list[Path]:
    """Write the demo's FASTA, label and structure files into `folder`; same seed, same bytes.
    `n_adapter` proteins in each of localization and stability, labelled by residue order
    (sequence_tasks); None: `n_sequences` proteins with composition signals instead
    (composition_tasks, the unit tests' small tasks)."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    if n_adapter is None:
        composition_tasks(rng, n_sequences, folder)
    else:
        sequence_tasks(rng, n_adapter, folder)
    pair_task(rng, n_sequences // 2, folder)
    new_proteins(rng, max(n_sequences // 10, 2), folder)
    continual_tasks(rng, n_sequences, folder)
    demo_complexes.write_demo_complexes(folder, n_complexes, seed)
    new_complexes(folder, 4, seed + 1)
    design_task(np.random.default_rng(seed + 2), 2 * n_sequences, folder)
    structures = [demo_complexes.STRUCTURES, NEW_STRUCTURES]
    return [folder / name for name in [*FILES, *structures]]
