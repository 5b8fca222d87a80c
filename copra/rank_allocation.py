"""The rank budgets adaptive-rank runs (adalora, lingo) followed: every run's rank_allocation.tsv
in one table, and the figure of the final rank per layer and module, AdaLoRA beside Lingo."""

from pathlib import Path

import pandas as pd

from copra.atomic import write_table
from copra.errors import InputError


def run_key(path: Path) -> dict:
    """task, method and seed of a run's file results/<task>/<method>/seed<k>/<file>."""
    task, method, seed = path.parts[-4:-1]
    if not seed.startswith("seed"):
        raise InputError("not a file of a run folder results/<task>/<method>/seed<k>/", path=path)
    return {"task": task, "method": method, "seed": int(seed.removeprefix("seed"))}


def final_ranks(allocation: pd.DataFrame) -> pd.DataFrame:
    """Per run and module: the triplets kept by the last allocation (the saved rank)."""
    keys = ["task", "method", "seed"]
    last = allocation.groupby(keys).step.transform("max")
    return allocation[allocation.step == last].reset_index(drop=True)


def gather_rank_allocation(paths, output, figure) -> pd.DataFrame:
    """One table of every run's allocations (task, method, seed first); the figure."""
    from copra.plots import plot_rank_allocation

    frames = []
    for path in map(Path, paths):
        frame = pd.read_csv(path, sep="\t")
        for position, (key, value) in enumerate(run_key(path).items()):
            frame.insert(position, key, value)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    write_table(output, table)
    plot_rank_allocation(final_ranks(table), figure)
    return table
