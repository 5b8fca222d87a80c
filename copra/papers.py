"""The papers' tables and figures rebuilt from this run's gathered tables: CopRA's Table r3 and
LMC figure, PEFT for proteins' metric against trainable parameters, CoPRA's affinity table.

Reads results/metrics.tsv (with its manifest), results/efficiency.tsv and, where those analyses
ran, results/merging.tsv, results/pruning.tsv, results/lmc.tsv and results/lmc_barriers.tsv;
writes results/papers/<layout>.tsv, .png and .svg, and manifest.json.
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from copra.atomic import write_table
from copra.intervals import COLUMNS as INTERVAL
from copra.intervals import interval_table
from copra.plots import LMC_PATHS, _figure_legend, _method_handles, _ordered, _save, method_colour
from copra.provenance import write_manifest
from copra.summary import SINGLE_TASK, optional_table, primary_metrics, quantity_rows
from copra.tables import COMPLEX_KIND

R3 = ["task", "metric", "method", "quantity", *INTERVAL, "minus_single_task"]
LMC = ["task", "method", "path", "split", "metric", "quantity", "alpha", *INTERVAL]
COST = ["trainable_parameters", "total_parameters", "trainable_fraction"]
PEFT = ["task", "metric", "method", *COST, *INTERVAL, "wall_time_s", "peak_memory_mb"]
AFFINITY_METRICS = ["pearson", "spearman", "rmse", "mae"]
AFFINITY = ["task", "split", "method", "metric", *INTERVAL]


def _ranked(table: pd.DataFrame, *keys: str) -> pd.DataFrame:
    """`table` sorted by task, then methods in plot order, then `keys` in order of appearance
    (stable: rows keep their order within)."""
    rank = {"method": {m: i for i, m in enumerate(_ordered(table.method.unique()))}}
    rank.update({k: {v: i for i, v in enumerate(dict.fromkeys(table[k]))} for k in keys})
    return table.sort_values(
        ["task", "method", *keys],
        key=lambda column: column.map(rank[column.name]) if column.name in rank else column,
        kind="stable",
        ignore_index=True,
    )


def table_r3(metrics, merging=None, pruning=None, split: str = "test") -> pd.DataFrame:
    """Per task and method that merging or pruning ran on: the single-task value, the 1:1 seed
    merges, the multi-task merges and the pruned adapters (quantity_rows), each with its interval
    and minus the single-task value."""
    ran = [t for t in (merging, pruning) if t is not None]
    if not ran:
        return pd.DataFrame(columns=R3)
    analysed = pd.concat([t[["task", "method"]] for t in ran]).drop_duplicates()
    rows = quantity_rows(metrics, merging, pruning, split).merge(analysed)
    table = interval_table(rows, ["task", "method", "quantity"])
    single = table[table.quantity == SINGLE_TASK].set_index(["task", "method"]).value
    alone = single.reindex(pd.MultiIndex.from_frame(table[["task", "method"]])).to_numpy()
    table = table.assign(minus_single_task=table.value - alone)
    table["metric"] = table.task.map(primary_metrics(metrics))
    return _ranked(table, "quantity")[R3]


def lmc_layout(curve=None, barriers=None) -> pd.DataFrame:
    """Loss and metric at every alpha of each path, and the barriers: the mean over seed pairs
    with its interval (one pair: none)."""
    if curve is None or barriers is None:
        return pd.DataFrame(columns=LMC)
    keys = ["task", "method", "path", "split", "metric"]
    along = interval_table(curve.sort_values("alpha", kind="stable"), [*keys, "alpha"])
    along = along.assign(quantity="curve")
    barrier = interval_table(barriers, keys, value="barrier").assign(quantity="barrier")
    table = pd.concat([along, barrier], ignore_index=True)
    return _ranked(table, "path", "split", "metric", "quantity")[LMC]


def peft_parameters(metrics, efficiency, split: str = "test") -> pd.DataFrame:
    """Per task and method: the primary metric on `split` with its interval beside the trainable
    parameters, wall time and peak memory (means over the runs of efficiency.tsv)."""
    primary = primary_metrics(metrics)
    scored = metrics[(metrics.split == split) & (metrics.metric == metrics.task.map(primary))]
    table = interval_table(scored, ["task", "metric", "method"])
    cost = efficiency.groupby(["task", "method"], as_index=False)[
        [*COST, "wall_time_s", "peak_memory_mb"]
    ].mean()
    return _ranked(table.merge(cost, how="left"))[PEFT]


def affinity(metrics, complex_tasks) -> pd.DataFrame:
    """The complex tasks' Pearson, Spearman, RMSE and MAE per method: out-of-fold dG (split
    test under cross-validation) and mutation ddG (split ddg), with intervals."""
    part = metrics[
        metrics.task.isin(complex_tasks)
        & metrics.split.isin(["test", "ddg"])
        & metrics.metric.isin(AFFINITY_METRICS)
    ]
    order = {
        "split": {"test": 0, "ddg": 1},
        "metric": {metric: i for i, metric in enumerate(AFFINITY_METRICS)},
    }
    part = part.sort_values(["split", "metric"], key=lambda c: c.map(order[c.name]), kind="stable")
    table = interval_table(part, ["task", "split", "method", "metric"])
    return _ranked(table, "split", "metric")[AFFINITY]


# --- the figures ----------------------------------------------------------------------------


def _interval_note(table: pd.DataFrame, unit: str) -> list[Line2D]:
    """Legend lines saying what the whiskers are: t over n seeds (pairs), or bootstrap."""
    notes = []
    for kind, part in table.groupby("interval", sort=False):
        counts = "/".join(str(n) for n in sorted(part.n.unique()))
        label = {
            "t": f"t 95% CI, n={counts} {unit}s",
            "bootstrap": f"bootstrap 95% CI, n=1 {unit}",
            "none": "no interval (n=1)",
        }[kind]
        notes.append(Line2D([], [], linestyle="none", label=label))
    return notes


def _whiskers(rows) -> list:
    """Error bar lengths below and above each value (NaN, not drawn, without an interval)."""
    return [(rows.value - rows.low).to_numpy(), (rows.high - rows.value).to_numpy()]


def _bars(ax, table: pd.DataFrame, group: str) -> None:
    """Grouped bars: one group per value of `group`, one bar per method, with whiskers."""
    groups = list(dict.fromkeys(table[group]))
    methods = _ordered(table.method.unique())
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        rows = table[table.method == method].set_index(group).reindex(groups)
        x = np.arange(len(groups)) + (k - (len(methods) - 1) / 2) * width
        ax.bar(x, rows.value, width, color=method_colour(method))
        ax.errorbar(x, rows.value, yerr=_whiskers(rows), fmt="none", ecolor="black", capsize=2)
    turned = max(map(len, groups)) > 12  # long names side by side would overlap
    ax.set_xticks(np.arange(len(groups)), groups, rotation=90 if turned else 0, fontsize=8)
    ax.axhline(0, color="black", linewidth=0.5)


def _finish(fig, table, unit: str, run: str, output) -> None:
    """The run as the title, the methods and what the whiskers are as the legend; saved."""
    fig.suptitle(run, fontsize=9)
    handles = [*_method_handles(table.method.unique(), linewidth=6), *_interval_note(table, unit)]
    _figure_legend(fig, handles, title="method; whiskers")
    _save(fig, output)


def plot_table_r3(table: pd.DataFrame, output, run: str) -> None:
    """One column per task: each quantity's bars per method with intervals (top), and each
    one minus the single-task value (bottom: the drop, no interval)."""
    tasks = list(dict.fromkeys(table.task))
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 7.4), squeeze=False)
    for top, bottom, task in zip(axes[0], axes[1], tasks, strict=True):
        part = table[table.task == task]
        _bars(top, part, "quantity")
        top.set_title(task, fontsize=10)
        top.set_ylabel(f"test {part.metric.iloc[0]}")
        changed = part[part.quantity != SINGLE_TASK]
        _bars(
            bottom,
            changed.assign(value=changed.minus_single_task, low=np.nan, high=np.nan),
            "quantity",
        )
        bottom.set_title(f"{task}: minus single task", fontsize=10)
        bottom.set_ylabel(f"test {part.metric.iloc[0]} difference")
    _finish(fig, table, "seed", run, output)


def plot_lmc_layout(table: pd.DataFrame, output, run: str, split: str = "test") -> None:
    """Rows: each task's loss, then its metric. Left: along alpha (mean over seed pairs, the
    interval shaded); right: the barrier per path, with its interval."""
    table = table[table.split == split]
    panels = sorted(set(zip(table.task, table.metric != "loss", strict=True)))
    fig, axes = plt.subplots(len(panels), 2, figsize=(8.4, 3.0 * len(panels)), squeeze=False)
    for (left, right), (task, is_metric) in zip(axes, panels, strict=True):
        part = table[(table.task == task) & ((table.metric != "loss") == is_metric)]
        name = part.metric.iloc[0]
        for (method, path), line in part[part.quantity == "curve"].groupby(["method", "path"]):
            colour = method_colour(method)
            left.plot(line.alpha, line.value, LMC_PATHS[path], marker="o", ms=3, color=colour)
            left.fill_between(line.alpha, line.low, line.high, color=colour, alpha=0.15)
        left.set_xlabel("alpha (seed a -> seed b)")
        left.set_ylabel(f"{split} {name}")
        left.set_title(f"{task}: {name} along the path", fontsize=10)
        _bars(right, part[part.quantity == "barrier"], "path")
        right.set_ylabel(f"{name} barrier")
        right.set_title(f"{task}: {name} barrier", fontsize=10)
    paths = [
        Line2D([], [], color="grey", linestyle=style, label=f"{path} path")
        for path, style in LMC_PATHS.items()
    ]
    fig.suptitle(run, fontsize=9)
    notes = _interval_note(table, "seed pair")
    _figure_legend(fig, [*_method_handles(table.method.unique()), *paths, *notes])
    _save(fig, output)


def _dodged(sizes: pd.Series) -> np.ndarray:
    """`sizes` spread by a few percent where several methods have (nearly) one size, so that
    none hides another on a log axis."""
    logs = np.log10(sizes.to_numpy(dtype=float))
    factors = np.ones(len(logs))
    for i, value in enumerate(logs):
        near = list(np.flatnonzero(np.abs(logs - value) < 0.1))
        if i in near:
            factors[i] = 1.12 ** (near.index(i) - (len(near) - 1) / 2)
    return sizes.to_numpy(dtype=float) * factors


def _decades(ax, sizes) -> None:
    """A log axis from the decade below the smallest size to the one above the largest, with
    only the decades labelled (minor labels of a narrow range overlap)."""
    sizes = np.asarray(sizes, dtype=float)
    sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
    ax.set_xscale("log")
    if sizes.size:
        low, high = np.log10(sizes.min() / 1.3), np.log10(sizes.max() * 1.3)
        ax.set_xlim(10 ** np.floor(low), 10 ** np.ceil(high))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_peft_parameters(table: pd.DataFrame, output, run: str) -> None:
    """One panel per task: the test metric against trainable parameters (log scale; methods of
    one size dodged by a few percent)."""
    tasks = list(dict.fromkeys(table.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        part = table[table.task == task].reset_index(drop=True)
        x = _dodged(part.trainable_parameters)
        for k, row in part.iterrows():
            ax.errorbar(
                x[k],
                row.value,
                yerr=[[row.value - row.low], [row.high - row.value]],
                fmt="o",
                capsize=3,
                color=method_colour(row.method),
            )
        _decades(ax, part.trainable_parameters)
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel(f"test {part.metric.iloc[0]}")
        ax.set_title(task, fontsize=10)
    _finish(fig, table, "seed", run, output)


def plot_affinity(table: pd.DataFrame, output, run: str) -> None:
    """One panel per metric: bars per method for each complex task's dG and ddG."""
    table = table.assign(target=table.task + np.where(table.split == "ddg", " ddG", " dG"))
    fig, axes = plt.subplots(1, len(AFFINITY_METRICS), figsize=(13, 3.4), squeeze=False)
    for ax, metric in zip(axes[0], AFFINITY_METRICS, strict=True):
        _bars(ax, table[table.metric == metric], "target")
        unit = " (kcal/mol)" if metric in ("rmse", "mae") else ""
        ax.set_title(f"{metric}{unit}", fontsize=10)
        ax.set_ylabel(f"out-of-fold {metric}")
    _finish(fig, table, "seed", run, output)


def plot_not_run(output, title: str, reason: str) -> None:
    """A figure saying that a layout was not run, and why."""
    fig, ax = plt.subplots(figsize=(5.0, 2.6))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, f"{title}\nnot run: {reason}", ha="center", va="center", fontsize=10)
    _save(fig, output)


# --- the layouts ------------------------------------------------------------------------------

LAYOUTS = {  # name: title, figure, why it is empty
    "copra_table_r3": ("CopRA Table r3", plot_table_r3, "merging and pruning switched off"),
    "copra_lmc": ("CopRA linear mode connectivity", plot_lmc_layout, "LMC switched off"),
    "peft_parameters": ("PEFT: metric vs parameters", plot_peft_parameters, "no trained runs"),
    "copra_affinity": ("CoPRA affinity", plot_affinity, "no complex_regression task"),
}


def build_layouts(tables: dict, complex_tasks) -> dict[str, pd.DataFrame]:
    """Every layout's table from the source tables ({name: frame, or None when absent})."""
    metrics = tables["metrics"]
    return {
        "copra_table_r3": table_r3(metrics, tables["merging"], tables["pruning"]),
        "copra_lmc": lmc_layout(tables["lmc"], tables["lmc_barriers"]),
        "peft_parameters": peft_parameters(metrics, tables["efficiency"]),
        "copra_affinity": affinity(metrics, complex_tasks),
    }


def run_record(manifest: dict) -> dict:
    """The run the layouts come from, as its metrics manifest recorded it."""
    config = manifest.get("config") or {}
    model = config.get("model") or {}
    return {
        "backbone": model.get("name"),
        "weights": model.get("weights"),
        "seeds": manifest.get("seeds"),
        "max_epochs": max_epochs(config),
        "tasks": {name: entry.get("kind") for name, entry in (config.get("tasks") or {}).items()},
    }


def max_epochs(config: dict):
    """The most epochs any run may train: `finetune.max_epochs` or a task's own value."""
    own = [
        (e.get("finetune") or {}).get("max_epochs") for e in (config.get("tasks") or {}).values()
    ]
    values = [v for v in [(config.get("finetune") or {}).get("max_epochs"), *own] if v is not None]
    return max(values, default=None)


def _run_title(record: dict) -> str:
    seeds = record["seeds"] or []
    return (
        f"this run: {record['backbone']} ({record['weights']} weights), "
        f"up to {record['max_epochs']} epochs, seeds {', '.join(map(str, seeds))}"
    )


def run_papers(
    output_dir,
    *,
    metrics,
    metrics_manifest,
    efficiency,
    merging=None,
    pruning=None,
    lmc=None,
    lmc_barriers=None,
) -> dict[str, pd.DataFrame]:
    """Write every layout's table and figure into `output_dir`, and its manifest; a layout
    whose source tables are absent (None: the analysis is switched off) is an empty table."""
    paths = {
        "metrics": metrics,
        "efficiency": efficiency,
        "merging": merging,
        "pruning": pruning,
        "lmc": lmc,
        "lmc_barriers": lmc_barriers,
    }
    record = run_record(json.loads(Path(metrics_manifest).read_text()))
    complex_tasks = [t for t, kind in record["tasks"].items() if kind == COMPLEX_KIND]
    built = build_layouts({k: optional_table(p) for k, p in paths.items()}, complex_tasks)
    folder = Path(output_dir)
    for name, table in built.items():
        write_table(folder / f"{name}.tsv", table)
        title, plot, reason = LAYOUTS[name]
        if table.empty:
            plot_not_run(folder / f"{name}.png", title, reason)
        else:
            plot(table, folder / f"{name}.png", _run_title(record))
    write_manifest(
        folder / "manifest.json",
        inputs=[p for p in [*paths.values(), metrics_manifest] if p],
        run=record,
        layouts={
            name: {"rows": len(table), "ran": not table.empty} for name, table in built.items()
        },
        sources={name: str(p) if p else None for name, p in paths.items()},
    )
    return built
