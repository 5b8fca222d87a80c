"""Linear mode connectivity of two adapters of one task and method (different seeds).

Two paths: `product` interpolates dW = s B A exactly, `factors` interpolates A and B separately
(cross terms; only for methods of one fixed rank: adaptive-rank runs keep different triplets, so
theirs have the product path alone). Heads are interpolated linearly on both. Loss and the task
metric at every alpha, and the barrier: the largest rise above the straight line between the
endpoints.
"""

import copy
import logging

import numpy as np
import pandas as pd
from tqdm import tqdm

from copra import methods
from copra.adapter_algebra import (
    interpolate_factors,
    load_adapter,
    weighted_delta_sum,
    with_adapter,
)
from copra.atomic import write_table
from copra.errors import InputError
from copra.settings import LmcSettings, ModelSettings
from copra.tables import concat_tables
from copra.trained_run import Scorer, open_runs, shared_backbone

log = logging.getLogger(__name__)
COLUMNS = ["task", "method", "seed_a", "seed_b", "path", "alpha", "split", "metric", "value"]
PATHS = ("product", "factors")


def paths_of(method: str) -> tuple[str, ...]:
    """The paths between two runs of `method`: the factor path needs one fixed rank."""
    return PATHS if methods.get(method).fixed_rank else PATHS[:1]


def path_adapter(adapters, path: str, alpha: float):
    if path == "product":
        return weighted_delta_sum(adapters, [1 - alpha, alpha])
    return interpolate_factors(*adapters, alpha)


def interpolate_heads(a: dict, b: dict, alpha: float) -> dict:
    return {k: (1 - alpha) * a[k] + alpha * b[k] for k in a}


def path_model(runs, adapters, heads, backbone, path: str, alpha: float, device="cpu"):
    """The model at `alpha` on `path`: a fresh copy of the backbone under the combined adapter."""
    network = with_adapter(copy.deepcopy(backbone.model), path_adapter(adapters, path, alpha))
    return runs[0].model(network, backbone, interpolate_heads(*heads, alpha)).float().to(device)


def barriers(curve: pd.DataFrame) -> pd.DataFrame:
    """max over alpha of how far loss rises above (metric falls below) the endpoints' line."""
    rows = []
    keys = ["task", "method", "seed_a", "seed_b", "path", "split", "metric"]
    for key, part in curve.groupby(keys):
        part = part.sort_values("alpha")
        alpha, value = part.alpha.to_numpy(), part.value.to_numpy()
        line = (1 - alpha) * value[0] + alpha * value[-1]
        rise = value - line if key[-1] == "loss" else line - value
        rows.append((*key, float(np.max(rise))))
    return pd.DataFrame(rows, columns=[*keys, "barrier"])


def run_lmc(
    run_a,
    run_b,
    table_path,
    sequences_path,
    output,
    *,
    task: str,
    settings: LmcSettings | None = None,
    model: ModelSettings | None = None,
) -> pd.DataFrame:
    """Evaluate both interpolation paths between two runs; write the tidy curve table."""
    settings, model = settings or LmcSettings(), model or ModelSettings()
    runs = open_runs([run_a, run_b], "lmc")
    method = runs[0].manifest["method"]
    if runs[1].manifest["method"] != method:
        raise InputError(f"{run_a} and {run_b} must be runs of one method")
    if runs[0].targets != runs[1].targets:
        raise InputError(f"{run_a} and {run_b} have different label spaces: not one task")
    backbone = shared_backbone(runs, model)
    adapters = [load_adapter(run.adapter_folder) for run in runs]
    heads = [run.head_state() for run in runs]
    scorer = Scorer(runs[0], backbone, table_path, sequences_path)
    seeds = [run.manifest["seed"] for run in runs]
    rows = []
    grid = np.linspace(0, 1, settings.alphas)
    for path in paths_of(method):
        for alpha in tqdm(grid, desc=f"{task} {method} {path}", mininterval=10):
            between = path_model(runs, adapters, heads, backbone, path, alpha, scorer.device)
            for split, scores in scorer.score(between).items():
                for metric, value in scores.items():
                    rows.append((task, method, *seeds, path, float(alpha), split, metric, value))
    curve = pd.DataFrame(rows, columns=COLUMNS)
    write_table(output, curve)
    return curve


def gather_lmc(inputs, output, barriers_output, figure) -> None:
    """One curve table for all pairs, the barrier table, and the figure (LoRA beside CopRA)."""
    from copra.plots import plot_lmc

    curve = concat_tables(inputs)
    write_table(output, curve)
    write_table(barriers_output, barriers(curve))
    plot_lmc(output, figure)
