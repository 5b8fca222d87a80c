"""Figures people compare: test metrics per task and method, and training curves.

Every figure is written as PNG and SVG; each method has one colour in all of them
(`method_colour`), legends sit outside the panels, and `_save` logs a warning naming any two
pieces of text that overlap.
"""

import itertools
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from scipy import stats  # noqa: E402

from copra.atomic import atomic_path  # noqa: E402
from copra.intervals import interval_table  # noqa: E402
from copra.methods import names as method_names  # noqa: E402
from copra.targets import PRIMARY_METRIC  # noqa: E402

log = logging.getLogger(__name__)
SHOWN = sorted(set(PRIMARY_METRIC.values()))


def drawn_texts(fig) -> list[Text]:
    """The texts a draw of `fig` actually renders (not, e.g., tick labels outside the limits)."""
    renderer = fig.canvas.get_renderer()
    drawn = []

    def record(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and s.strip():
            drawn.append(mtext)

    renderer.draw_text = record
    try:
        fig.draw(renderer)
    finally:
        del renderer.draw_text  # back to the class's method
    return list(dict.fromkeys(drawn))


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of drawn texts of `fig` whose boxes overlap (by more than a sliver)."""
    renderer = fig.canvas.get_renderer()
    boxes = [
        (t.get_text(), t.get_window_extent(renderer).expanded(0.98, 0.9)) for t in drawn_texts(fig)
    ]
    return [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]


def _save(fig, output) -> None:
    """`output` as PNG (120 dpi) and, beside it, the same figure as SVG for print."""
    fig.tight_layout()
    for first, second in overlapping_texts(fig):
        log.warning("%s: overlapping text: %r and %r", Path(output).name, first, second)
    for path, suffix in ((Path(output), ".png"), (Path(output).with_suffix(".svg"), ".svg")):
        with atomic_path(path, suffix=suffix) as tmp:
            fig.savefig(tmp, dpi=120, format=suffix[1:], bbox_inches="tight")
    plt.close(fig)


def method_colour(method: str) -> str:
    """The registered methods' colours in registration order; anything else (a multi-task
    merge of several methods) the next one."""
    order = method_names()
    return f"C{order.index(method) if method in order else len(order)}"


def _figure_legend(fig, handles, title=None) -> None:
    """One legend for the whole figure, right of its panels."""
    fig.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        title=title,
        title_fontsize=8,
        frameon=False,
    )


def _method_handles(methods, **style) -> list[Line2D]:
    return [Line2D([], [], color=method_colour(m), label=m, **style) for m in _ordered(methods)]


def _panels(count: int, rows: int = 1):
    fig, axes = plt.subplots(
        rows, max(count, 1), figsize=(3.4 * max(count, 1), 3.2 * rows), squeeze=False
    )
    return fig, axes


def _ordered(methods) -> list[str]:
    order = method_names()
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


def counted(n: int, noun: str) -> str:
    """`n=3 seeds`, `n=1 seed`: how many values a mean and its interval stand on."""
    return f"n={n} {noun}{'s' * (n != 1)}"


def seed_summary(part: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds with a 95% t-interval across seeds; one seed keeps its bootstrap interval
    (copra.intervals). Indexed by method, in plot order."""
    summary = interval_table(part, ["method"]).rename(columns={"n": "seeds"})
    summary = summary.drop(columns="interval").set_index("method")
    return summary.loc[_ordered(summary.index)]


def plot_metrics(metrics_path, output, split: str = "test") -> None:
    """One panel per task: its primary metric per method over seeds, with intervals."""
    table = pd.read_csv(metrics_path, sep="\t")
    table = table[(table.split == split) & table.metric.isin(SHOWN)]
    tasks = sorted(table.task.unique())
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes[0], tasks, strict=False):
        part = table[table.task == task]
        metric = part.metric.iloc[0]
        summary = seed_summary(part[part.metric == metric])
        errors = [summary.value - summary.low, summary.high - summary.value]
        ax.bar(
            summary.index,
            summary.value,
            yerr=errors,
            capsize=4,
            color=[method_colour(m) for m in summary.index],
        )
        seeds = summary.seeds.max()
        interval = f"95% CI over {seeds} seeds" if seeds > 1 else "bootstrap 95% CI"
        ax.set_title(f"{task}\n({interval})", fontsize=9)
        ax.set_ylabel(f"{split} {metric}")
        ax.tick_params(axis="x", rotation=90)  # six methods' names side by side would overlap
    _save(fig, output)


def read_training_logs(paths) -> pd.DataFrame:
    """Training logs of results/<task>/<method>/seed<k>/training_log.tsv, tagged by run."""
    frames = []
    for path in map(Path, paths):
        log = pd.read_csv(path, sep="\t")
        metric = next(c for c in log.columns if c.startswith("valid_") and c != "valid_loss")
        log = log.rename(columns={metric: "valid_metric"}).assign(
            metric=metric.removeprefix("valid_"),
            task=path.parts[-4],
            method=path.parts[-3],
            seed=path.parts[-2],
        )
        frames.append(log)
    return pd.concat(frames, ignore_index=True)


def plot_training_curves(log_paths, output) -> None:
    """Per task: validation metric (top) and training loss (bottom) per epoch, per method."""
    logs = read_training_logs(log_paths)
    tasks = sorted(logs.task.unique())
    fig, axes = _panels(len(tasks), rows=2)
    for column, task in enumerate(tasks):
        part = logs[logs.task == task]
        for (method, _), run in part.groupby(["method", "seed"]):
            axes[0][column].plot(run.epoch, run.valid_metric, color=method_colour(method))
            axes[1][column].plot(run.epoch, run.train_loss, color=method_colour(method))
        axes[0][column].set_title(task)
        axes[0][column].set_ylabel(f"valid {part.metric.iloc[0]}")
        axes[1][column].set_ylabel("train loss (log scale)")
        axes[1][column].set_xlabel("epoch")
        axes[1][column].set_yscale("log")
    _figure_legend(fig, _method_handles(logs.method.unique()), title="method (a line per seed)")
    _save(fig, output)


LMC_PATHS = {"product": "-", "factors": "--"}


def plot_lmc(curve_path, output, split: str = "test") -> None:
    """Rows: tasks; columns: methods. The task metric along both interpolation paths: the mean
    over the pairs of seeds, with its t-interval as a band where there are several."""
    curve = pd.read_csv(curve_path, sep="\t")
    curve = curve[(curve.split == split) & (curve.metric != "loss")]
    tasks, methods = sorted(curve.task.unique()), _ordered(curve.method.unique())
    fig, axes = plt.subplots(
        len(tasks),
        len(methods),
        figsize=(3.6 * len(methods), 3 * len(tasks)),
        squeeze=False,
        sharey="row",
    )
    for row, task in enumerate(tasks):
        for column, method in enumerate(methods):
            ax = axes[row][column]
            part = curve[(curve.task == task) & (curve.method == method)]
            for path, style in LMC_PATHS.items():
                line = interval_table(part[part.path == path], ["alpha"]).sort_values("alpha")
                colour = method_colour(method)
                ax.plot(line.alpha, line.value, style, marker="o", markersize=3, color=colour)
                ax.fill_between(line.alpha, line.low, line.high, color=colour, alpha=0.15)
            pairs = part[["seed_a", "seed_b"]].drop_duplicates()
            ax.set_title(f"{task}: {method}, {counted(len(pairs), 'seed pair')}", fontsize=10)
            ax.set_xlabel("alpha (seed a -> seed b)")
            ax.set_ylabel(f"{split} {part.metric.iloc[0] if len(part) else ''}")
    paths = [
        Line2D([], [], color="grey", linestyle=style, marker="o", markersize=3, label=path)
        for path, style in LMC_PATHS.items()
    ]
    _figure_legend(fig, paths, title="interpolated")
    _save(fig, output)


def plot_merging(table: pd.DataFrame, folder, split: str = "test") -> None:
    """Per task: the merged models' metric per combination (dots: the mean over the merges of
    that weighting, e.g. each pair of seeds, with its t-interval), LoRA beside CopRA, one panel
    per weighting; dashed lines are the sources' mean (each source with its own head)."""
    table = table[(table.split == split) & (table.metric != "loss")]
    for task, part in table.groupby("task"):
        panels = list(dict.fromkeys(zip(part["merge"], part.weights, strict=True)))
        fig, axes = plt.subplots(
            1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False, sharey=True
        )
        for ax, (merge, weights) in zip(axes[0], panels, strict=True):
            panel = part[(part["merge"] == merge) & (part.weights == weights)]
            methods = _ordered(panel.method.unique())
            combinations = list(dict.fromkeys(panel.combination))
            width = 0.8 / len(methods)
            for k, method in enumerate(methods):
                mine = panel[panel.method == method]
                rows = interval_table(mine, ["combination"], value="merged")
                rows = rows.set_index("combination").loc[combinations]
                x = np.arange(len(combinations)) + (k - (len(methods) - 1) / 2) * width
                colour = method_colour(method)
                below, above = rows.value - rows.low, rows.high - rows.value
                ax.errorbar(x, rows.value, yerr=[below, above], fmt="o", color=colour, capsize=2)
                ax.axhline(mine.source_mean.mean(), color=colour, linestyle="--", linewidth=1)
            ax.set_xticks(np.arange(len(combinations)), combinations, rotation=90, fontsize=8)
            title = f"{len(weights.split(':'))} seeds {weights}" if merge == "seeds" else "tasks"
            merges = counted(panel.sources.nunique(), "merge")
            ax.set_title(f"{task}: {title}, {merges}", fontsize=10)
            ax.set_ylabel(f"{split} {panel.metric.iloc[0]}")
            ax.grid(axis="y", linewidth=0.3)
        handles = _method_handles(part.method.unique(), marker="o", linestyle="none")
        mean = Line2D([], [], color="grey", linestyle="--", linewidth=1, label="sources' mean")
        _figure_legend(fig, [*handles, mean], title="merged model")
        _save(fig, Path(folder) / f"{task}.png")


def plot_federated(table: pd.DataFrame, output, split: str = "test") -> None:
    """Rows: task and partition; columns: aggregations. The global model's metric per round,
    one line per method (LoRA vs CopRA)."""
    table = table[(table.split == split) & (table.metric != "loss")]
    panels = list(dict.fromkeys(zip(table.task, table.partition, strict=True)))
    aggregations = list(dict.fromkeys(table.aggregation))
    fig, axes = plt.subplots(
        len(panels),
        len(aggregations),
        squeeze=False,
        sharey="row",
        figsize=(3.4 * len(aggregations), 2.8 * len(panels)),
    )
    for row, (task, partition) in enumerate(panels):
        for column, aggregation in enumerate(aggregations):
            ax = axes[row][column]
            part = table[
                (table.task == task)
                & (table.partition == partition)
                & (table.aggregation == aggregation)
            ]
            for method in _ordered(part.method.unique()):
                line = part[part.method == method].sort_values("round")
                ax.plot(
                    line["round"], line.value, marker="o", markersize=3, color=method_colour(method)
                )
            clients = part.clients.iloc[0] if len(part) else "?"
            ax.set_title(f"{task}, {partition}, {clients} clients: {aggregation}", fontsize=9)
            ax.set_xlabel("round (0: before training)")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_ylabel(f"{split} {part.metric.iloc[0] if len(part) else ''}")
    _figure_legend(fig, _method_handles(table.method.unique(), marker="o", markersize=3))
    _save(fig, output)


def plot_shapley(table: pd.DataFrame, output) -> None:
    """One panel per task: each layer's Shapley value for the task metric (mean over seeds, with
    its t-interval across seeds; one seed: the estimator's standard error), LoRA beside CopRA."""
    table = table[table.value != "neg_loss"]
    tasks = sorted(table.task.unique())
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes[0], tasks, strict=False):
        part = table[table.task == task]
        per_player = interval_table(part, ["method", "player"], value="shapley")
        per_player = per_player.merge(
            part.groupby(["method", "player"], as_index=False).agg(
                stderr=("stderr", "max"), layer=("layer", "first")
            )
        )
        across = per_player.n > 1
        per_player["shapley"] = per_player.value
        per_player["stderr"] = per_player.stderr.where(~across, per_player.high - per_player.value)
        players = list(dict.fromkeys(part.sort_values(["layer", "player"]).player))
        methods = _ordered(per_player.method.unique())
        width = 0.8 / len(methods)
        for k, method in enumerate(methods):
            rows = per_player[per_player.method == method].set_index("player").loc[players]
            x = np.arange(len(players)) + (k - (len(methods) - 1) / 2) * width
            ax.bar(x, rows.shapley, width, yerr=rows.stderr, capsize=2, color=method_colour(method))
        ax.set_xticks(
            np.arange(len(players)), players, fontsize=7, rotation=60 if len(players) > 12 else 0
        )
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("layer" if part.module.eq("all").all() else "layer:module")
        ax.set_ylabel(f"Shapley value (valid {part.value.iloc[0]})")
        ax.set_title(f"{task}, {counted(part.seed.nunique(), 'seed')}")
    _figure_legend(fig, _method_handles(table.method.unique(), linewidth=6))
    _save(fig, output)


RANKED_STYLES = {"lowest_shapley": "-", "lowest_norm": "--", "random": ":"}
MAGNITUDE_STYLES = {"magnitude_dw": "-", "magnitude_ab": "--"}
PRUNING_STYLE_LABELS = {
    "-": "lowest Shapley first / dW entries",
    "--": "lowest norm first / A and B entries",
    ":": "random layers",
}
STRUCTURED_ORDER = [
    "none",
    "every_other",
    "keep_low",
    "keep_middle",
    "keep_high",
    "keep_q",
    "keep_k",
    "keep_v",
]


def plot_pruning(table: pd.DataFrame, output, split: str = "test") -> None:
    """Rows: tasks. Columns: layers removed by rank, magnitude sparsity, structured schemes.
    The test metric (mean over seeds, with its t-interval as a band or bar where there are
    several) against the amount pruned, LoRA beside CopRA."""
    table = table[(table.split == split) & (table.metric != "loss")]
    seeds = counted(table.seed.nunique(), "seed")
    table = interval_table(table, ["task", "method", "scheme", "amount", "metric"])
    tasks = sorted(table.task.unique())
    fig, axes = plt.subplots(
        len(tasks), 3, figsize=(13, 3.2 * len(tasks)), squeeze=False, sharey="row"
    )
    for row, task in enumerate(tasks):
        part = table[table.task == task]
        metric = part.metric.iloc[0]
        for method in _ordered(part.method.unique()):
            runs = part[part.method == method]
            colour = method_colour(method)
            for column, styles in ((0, RANKED_STYLES), (1, MAGNITUDE_STYLES)):
                for scheme, style in styles.items():
                    line = runs[runs.scheme == scheme].sort_values("amount")
                    if column == 0 and len(line):  # nothing removed: the unpruned run
                        line = pd.concat([runs[runs.scheme == "none"], line])
                    ax = axes[row][column]
                    ax.plot(line.amount, line.value, style, color=colour, marker=".")
                    ax.fill_between(line.amount, line.low, line.high, color=colour, alpha=0.1)
            shapes = runs[~runs.scheme.isin([*RANKED_STYLES, *MAGNITUDE_STYLES])].set_index(
                "scheme"
            )
            order = [s for s in STRUCTURED_ORDER if s in shapes.index]
            shapes = shapes.loc[order]
            bars = [(shapes.value - shapes.low).fillna(0), (shapes.high - shapes.value).fillna(0)]
            axes[row][2].errorbar(order, shapes.value, yerr=bars, fmt="o", color=colour, capsize=2)
        axes[row][0].set_xlabel("fraction of layers removed (lowest first)")
        axes[row][1].set_xlabel("sparsity")
        axes[row][2].tick_params(axis="x", rotation=90)
        for column, title in enumerate(("layer removal", "magnitude pruning", "structured")):
            axes[row][column].set_title(f"{task}: {title}, {seeds}", fontsize=10)
        axes[row][0].set_ylabel(f"{split} {metric}")
    styles = [
        Line2D([], [], color="grey", linestyle=style, label=label)
        for style, label in PRUNING_STYLE_LABELS.items()
    ]
    _figure_legend(fig, [*_method_handles(table.method.unique(), marker="."), *styles])
    _save(fig, output)


def plot_rank_allocation(final: pd.DataFrame, output) -> None:
    """Rows: tasks; columns: adaptive-rank methods. The final rank of every module (mean over
    seeds), layers across and module types down, with the kept and budgeted triplets."""
    tasks, methods = sorted(final.task.unique()), _ordered(final.method.unique())
    types = sorted(final.type.unique())
    layers = sorted(final.layer.unique())
    fig, axes = plt.subplots(
        len(tasks),
        len(methods),
        figsize=(1.2 + 0.55 * len(layers) * len(methods), 0.9 + 0.5 * len(types) * len(tasks)),
        squeeze=False,
    )
    top = final.groupby(["task", "method", "seed"]).kept.sum().groupby(["task", "method"]).mean()
    budget = final.groupby(["task", "method", "seed"]).budget.first().groupby(["task", "method"])
    for row, task in enumerate(tasks):
        for column, method in enumerate(methods):
            ax = axes[row][column]
            part = final[(final.task == task) & (final.method == method)]
            grid = part.pivot_table(index="type", columns="layer", values="kept", aggfunc="mean")
            grid = grid.reindex(index=types, columns=layers)
            ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, aspect="auto")
            for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.3g}", ha="center", va="center", color="w", fontsize=8)
            ax.set_xticks(range(len(layers)), layers)
            ax.set_yticks(range(len(types)), types)
            ax.set_xlabel("layer")
            if (task, method) in top.index:
                seeds = part.seed.nunique()
                kept, allowed = top[task, method], budget.mean()[task, method]
                ax.set_title(
                    f"{task}: {method}\nkept {kept:.4g} of budget {allowed:.4g} "
                    f"({seeds} seed{'s' * (seeds > 1)})",
                    fontsize=9,
                )
    _save(fig, output)


def read_run_predictions(paths) -> pd.DataFrame:
    """predictions.tsv of results/<task>/<method>/seed<k>/, tagged by run."""
    frames = [
        pd.read_csv(path, sep="\t").assign(
            task=Path(path).parts[-4], method=Path(path).parts[-3], seed=Path(path).parts[-2]
        )
        for path in paths
    ]
    return pd.concat(frames, ignore_index=True)


def plot_complexes(prediction_paths, output) -> None:
    """Rows: complex tasks, dG and (where mutations were measured) ddG. Columns: methods.
    Out-of-fold predictions against the measured values."""
    table = read_run_predictions(prediction_paths).dropna(subset=["label"])
    methods = _ordered(table.method.unique())
    rows = [
        (task, split)
        for task in sorted(table.task.unique())
        for split in ("test", "ddg")
        if (table[table.task == task].split == split).sum() > 1
    ]
    fig, axes = plt.subplots(
        len(rows), len(methods), figsize=(3.6 * len(methods), 3.4 * len(rows)), squeeze=False
    )
    for (task, split), line in zip(rows, axes, strict=True):
        name = "dG" if split == "test" else "ddG"
        for ax, method in zip(line, methods, strict=True):
            points = table[(table.task == task) & (table.method == method) & (table.split == split)]
            ax.scatter(points.label, points.prediction, s=14, color=method_colour(method))
            low = min(points.label.min(), points.prediction.min())
            high = max(points.label.max(), points.prediction.max())
            ax.plot([low, high], [low, high], ":", color="grey", linewidth=1)
            rho = stats.spearmanr(points.label, points.prediction).statistic
            ax.set_title(f"{task}: {method}\n{name}, Spearman {rho:.2f}", fontsize=9)
            ax.set_xlabel(f"measured {name} (kcal/mol)")
            ax.set_ylabel(f"predicted {name}, out of fold")
    _save(fig, output)


def plot_prediction_scores(frame: pd.DataFrame, columns: list[str], output, title: str) -> None:
    """Histogram of a prediction table's (ensemble mean) scores: one panel per score column (at
    most four), new inputs and those the run trained on stacked."""
    shown = columns[:4]
    fig, axes = _panels(len(shown))
    for ax, column in zip(axes[0], shown, strict=True):
        values = frame[column].dropna()
        bins = np.histogram_bin_edges(values, bins=min(30, max(len(values), 1)))
        parts = [values[~frame.in_training], values[frame.in_training]]
        ax.hist(parts, bins=bins, stacked=True, color=["C0", "C7"], label=["new", "in training"])
        ax.set_xlabel(column)
        ax.set_ylabel("inputs")
        ax.set_title(f"{title}: {len(values)} predicted", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    _save(fig, output)


def plot_screen(histogram: pd.DataFrame, top: pd.DataFrame, column: str, output, title) -> None:
    """A pair screen: the histogram of every pair's score (log scale) with the kept pairs'
    lowest score marked, and the best pairs by name."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    left.stairs(histogram.pairs, np.append(histogram.low, histogram.high.iloc[-1]), fill=True)
    left.set_yscale("log")
    if len(top):
        lowest = top[column].min()
        left.axvline(lowest, color="C3", linestyle=":", label=f"kept: {len(top)} pairs")
        left.legend(fontsize=8, frameon=False)
    left.set_xlabel(f"{column} (mean over seeds)")
    left.set_ylabel("pairs")
    left.set_title(f"{title}: {int(histogram.pairs.sum())} pairs", fontsize=9)
    best = top.head(10).iloc[::-1]
    right.barh(np.arange(len(best)), best[column], xerr=best[f"{column}_std"].fillna(0))
    names = [f"{a}  {b}" for a, b in zip(best.id_a, best.id_b, strict=True)]
    right.set_yticks(np.arange(len(best)), names)
    right.tick_params(axis="y", labelsize=7)
    right.set_xlabel(column)
    right.set_title("best pairs", fontsize=9)
    _save(fig, output)


def plot_continual(table: pd.DataFrame, output) -> None:
    """One row per sequence: the metric on every step seen so far after each step (A_t: the mean
    over orders and seeds, their range shaded) for every method, then the accuracy matrix a[t, j]
    (mean over orders and seeds, by position in the order) of `lae` beside `sequential`."""
    from copra.continual import LEARNER_OF

    runs = table[table.statistic == "value"]
    sequences = list(dict.fromkeys(runs.sequence))
    shown = [m for m in ("lae", "sequential") if m in set(runs.method)]
    fig, axes = plt.subplots(
        len(sequences),
        1 + len(shown),
        squeeze=False,
        figsize=(4.2 + 3.0 * len(shown), 3.0 * len(sequences)),
    )
    colours = {m: f"C{i}" for i, m in enumerate(LEARNER_OF)}
    for row, sequence in enumerate(sequences):
        part = runs[runs.sequence == sequence]
        metric = part.metric.iloc[0]  # accuracy (classification) or Spearman (regression)
        part = part[part.metric == metric]
        ax = axes[row][0]
        seen = part[part.quantity == "seen"].assign(step=lambda f: f.after_step.astype(int) + 1)
        for method, lines in seen.groupby("method", sort=False):
            curve = lines.groupby("step").value.agg(["mean", "min", "max"])
            ax.plot(curve.index, curve["mean"], marker="o", markersize=3, color=colours[method])
            ax.fill_between(
                curve.index, curve["min"], curve["max"], alpha=0.15, color=colours[method]
            )
        ax.set_title(f"{sequence} ({part['mode'].iloc[0]}-incremental)", fontsize=9)
        ax.set_xlabel("steps learned")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(f"test {metric}, steps seen")
        for column, method in enumerate(shown, start=1):
            _continual_matrix(axes[row][column], part, method, metric)
    handles = [
        Line2D([], [], color=colours[m], marker="o", markersize=3, label=m)
        for m in LEARNER_OF
        if m in set(runs.method)
    ]
    _figure_legend(fig, handles)
    _save(fig, output)


def _continual_matrix(ax, part: pd.DataFrame, method: str, metric: str) -> None:
    cells = part[(part.quantity == "a") & (part.method == method)]
    if cells.empty:
        ax.set_axis_off()
        ax.set_title(f"{method}: not run on this sequence", fontsize=9)
        return
    cells = cells.assign(t=cells.after_step.astype(int), j=cells.on_step.astype(int))
    mean = cells.groupby(["t", "j"]).value.mean().unstack("j").sort_index()
    image = ax.imshow(mean.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    steps = len(mean)
    ax.set_xticks(range(steps), [str(j + 1) for j in range(steps)])
    ax.set_yticks(range(steps), [str(t + 1) for t in range(steps)])
    ax.set_xlabel("on step j")
    ax.set_ylabel("after step t")
    ax.set_title(f"{method}: {metric} a[t, j]", fontsize=9)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def plot_design(scores: pd.DataFrame, table: pd.DataFrame, output) -> None:
    """One panel per design problem: the measured data (its offline part, all of it) and each
    method's designs (all seeds) scored by the oracle, normalised by the data's range; the
    offline set's best (D(best)) dashed."""
    designs = list(dict.fromkeys(scores.design))
    width = 1.6 + 0.7 * scores.groupby("design").method.nunique().max()
    fig, axes = plt.subplots(1, len(designs), figsize=(width * len(designs), 3.8), squeeze=False)
    for ax, name in zip(axes[0], designs, strict=False):
        part = scores[scores.design == name]
        groups = list(dict.fromkeys(part.method))
        values = [part.score[part.method == g].to_numpy() for g in groups]
        box = ax.boxplot(values, widths=0.6, showfliers=False, patch_artist=True)
        for patch, group in zip(box["boxes"], groups, strict=True):
            patch.set_facecolor("0.85" if group.endswith("data") else f"C{groups.index(group)}")
            patch.set_alpha(0.6)
        rng = np.random.default_rng(0)
        for i, value in enumerate(values, start=1):
            shown = value if value.size <= 400 else rng.choice(value, 400, replace=False)
            jitter = rng.uniform(-0.15, 0.15, shown.size)
            ax.scatter(i + jitter, shown, s=4, color="0.2", alpha=0.5, linewidths=0)
        best = table[(table.design == name) & (table.seed == "all")].offline_best.iloc[0]
        ax.axhline(best, color="0.3", linestyle="--", linewidth=1)
        ax.set_xticks(range(1, len(groups) + 1), groups, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("score (oracle; data: measured), normalised")
        ax.set_title(f"{name} (dashed: offline best)", fontsize=9)
    _save(fig, output)
