"""A design job: every method of one design problem at one seed, from the same starts; each
method's designs scored by the oracle, looked up among the measured variants, and saved as
designs.tsv and designs.fasta (for `copra predict`) with a manifest."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from copra.atomic import atomic_directory, write_table
from copra.design_oracle import AMINO_ACIDS, Oracle
from copra.design_problems import check_random_match
from copra.errors import InputError
from copra.provenance import write_manifest
from copra.sequences import write_fasta

log = logging.getLogger(__name__)
DATA_FILES = ("variants.tsv", "offline.npz", "oracle.json", "landscape.json")


@dataclass
class DesignData:
    """What `copra design-data` wrote: the variants, the offline features, the oracle."""

    folder: Path
    variants: pd.DataFrame
    offline: dict
    oracle: Oracle
    landscape: dict

    @classmethod
    def read(cls, folder) -> "DesignData":
        folder = Path(folder)
        missing = [name for name in DATA_FILES if not (folder / name).is_file()]
        if missing:
            raise InputError(f"{folder} lacks {', '.join(missing)}: run copra design-data first")
        variants = pd.read_csv(folder / "variants.tsv", sep="\t", dtype={"id": str})
        with np.load(folder / "offline.npz", allow_pickle=False) as arrays:
            offline = {key: arrays[key] for key in arrays.files}
        landscape = json.loads((folder / "landscape.json").read_text())
        return cls(folder, variants, offline, Oracle.load(folder / "oracle.json"), landscape)

    def starts(self) -> pd.DataFrame:
        """The start variants: the offline set's best, best first."""
        rows = self.variants.iloc[self.offline["rows"]]
        return rows[rows.start].iloc[::-1]


def random_mutants(starts: np.ndarray, matched: np.ndarray, seed: int) -> np.ndarray:
    """Codes (S, P) of random mutants of the starts, each at the Hamming distance of the matched
    method's design of the same start: distinct positions, each a residue other than the start's."""
    rng = np.random.default_rng(seed)
    mutants = starts.copy()
    for i, distance in enumerate((matched != starts).sum(1)):
        sites = rng.choice(starts.shape[1], size=int(distance), replace=False)
        mutants[i, sites] = (starts[i, sites] + rng.integers(1, len(AMINO_ACIDS), sites.size)) % 20
    return mutants


def decoded(codes: np.ndarray) -> list[str]:
    return ["".join(AMINO_ACIDS[c] for c in row) for row in codes]


def with_residues(sequence: str, positions: list[int], residues: str) -> str:
    chars = list(sequence)
    for position, residue in zip(positions, residues, strict=True):
        chars[position] = residue
    return "".join(chars)


def score_designs(data: DesignData, starts: pd.DataFrame, codes: np.ndarray, proxy_scores):
    """designs.tsv: each design beside its start, the oracle's score (raw and normalised by the
    whole data's range), its measured value where it is a measured variant, and whether the
    designer saw it (an offline variant)."""
    positions = data.landscape["positions"]
    residues = decoded(codes)
    sequences = [
        with_residues(s, positions, r) for s, r in zip(starts.sequence, residues, strict=True)
    ]
    measured = data.variants.groupby("sequence").label.mean()
    offline = set(data.variants.sequence[data.variants.offline])
    low, high = data.landscape["label_min"], data.landscape["label_max"]
    oracle = data.oracle.predict(residues)
    table = pd.DataFrame(
        {
            "start": starts["id"].to_numpy(),
            "start_label": starts["label"].to_numpy(),
            "start_residues": starts["residues"].to_numpy(),
            "residues": residues,
            "hamming": [
                sum(a != b for a, b in zip(x, y, strict=True))
                for x, y in zip(starts.residues, residues, strict=True)
            ],
            "proxy_score": np.asarray(proxy_scores, dtype=float),
            "oracle": oracle,
            "oracle_normalised": (oracle - low) / (high - low),
            "measured": [s in measured.index for s in sequences],
            "measured_label": [measured.get(s, np.nan) for s in sequences],
            "in_offline": [s in offline for s in sequences],
            "sequence": sequences,
        }
    )
    return table


def method_order(methods: list[str], matches: str, chosen, where: str) -> list[str]:
    """The methods to run (`chosen`, default all) as listed, random after its match."""
    check_random_match(methods, matches, where)
    chosen = methods if chosen is None else chosen
    unknown = [m for m in chosen if m not in methods]
    if unknown:
        raise InputError(f"{', '.join(unknown)}: not among this design's methods {methods}")
    return [m for m in chosen if m != "random"] + (["random"] if "random" in chosen else [])


def matched_codes(designed: dict, output_dir, matches: str, seed: int) -> np.ndarray:
    """The codes of the designs random copies the distances of: designed in this process, or
    saved by an earlier job (results/design/<name>/<matches>/seed<k>/designs.tsv)."""
    if matches in designed:
        return designed[matches]
    path = Path(output_dir) / matches / f"seed{seed}" / "designs.tsv"
    if not path.is_file():
        raise InputError(f"random copies {matches}'s Hamming distances, but {path} is missing")
    residues = pd.read_csv(path, sep="\t").residues
    return np.array([[AMINO_ACIDS.index(r) for r in row] for row in residues])


def run_design(
    data_dir, output_dir, name: str, settings, model, seed: int, methods=None, config_snapshot=None
):
    """`methods` (default: all of `settings`) at `seed`: `output_dir/<method>/seed<seed>/`."""
    import torch

    from copra.design_methods import METHODS, Designer, SoftSequences
    from copra.design_proxy import Proxy
    from copra.device import pick_device

    order = method_order(settings.methods, settings.random_matches, methods, f"design.{name}")
    data = DesignData.read(data_dir)
    starts = data.starts()
    device = pick_device()
    soft = SoftSequences(
        model.load(), starts.sequence.tolist(), data.landscape["positions"], device
    )
    proxy = Proxy.fit(data.offline["features"], data.offline["labels"]).to(device)
    designer = Designer(soft, proxy, settings.steps, settings.learning_rate, settings.eta)
    start_codes = soft.start_codes()
    designed = {}
    for method in order:
        if method == "random":
            matched = matched_codes(designed, output_dir, settings.random_matches, seed)
            codes = random_mutants(start_codes.cpu().numpy(), matched, seed)
            record = {"seconds": 0.0, "lm_seconds": 0.0, "matches": settings.random_matches}
        else:
            generator = torch.Generator().manual_seed(seed)
            result = designer.run(METHODS[method], start_codes, generator)
            codes = result.codes.cpu().numpy()
            record = {
                "seconds": result.seconds,
                "lm_seconds": result.lm_seconds,
                "designs_per_second": len(codes) / result.seconds,
                "eta": result.eta.tolist(),
                "learning_rate": result.rate.tolist(),
            }
        designed[method] = codes
        scores = designer.proxy_scores(torch.as_tensor(codes, device=device))
        table = score_designs(data, starts, codes, scores.numpy())
        folder = Path(output_dir) / method / f"seed{seed}"
        write_method(folder, table, data, (name, method, seed), record, config_snapshot, device)


def write_method(folder, table, data, key, record, config_snapshot, device) -> None:
    name, method, seed = key
    with atomic_directory(folder) as tmp:
        write_table(tmp / "designs.tsv", table)
        records = [(f"{name}_{method}_seed{seed}_{i:03d}", s) for i, s in enumerate(table.sequence)]
        write_fasta(tmp / "designs.fasta", records)
        write_manifest(
            tmp / "manifest.json",
            inputs=[data.folder / f for f in DATA_FILES],
            config=config_snapshot,
            design=name,
            method=method,
            seed=seed,
            device=str(device),
            designs=len(table),
            **record,
        )
    log.info(
        "%s %s seed %d: oracle max %.3f median %.3f (normalised), %d measured, %d offline",
        name,
        method,
        seed,
        table.oracle_normalised.max(),
        table.oracle_normalised.median(),
        table.measured.sum(),
        table.in_offline.sum(),
    )
