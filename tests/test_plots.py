"""Figures for print: the overlap check that `_save` logs, and one colour per method."""

import logging

import matplotlib.pyplot as plt
import pandas as pd

from copra.plots import _save, method_colour, overlapping_texts, plot_metrics


def test_overlapping_texts_are_found_and_named():
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "first label")
    ax.text(0.5, 0.5, "second label")
    ax.text(0.1, 0.9, "apart")
    assert overlapping_texts(fig) == [("first label", "second label")]
    plt.close(fig)


def test_tick_labels_outside_the_limits_are_not_counted():
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.plot([0, 1], [0, 1])
    ax.set_xticks([-5, 0, 1, 5])  # -5 and 5 are not drawn once the limits are set
    ax.set_xlim(0, 1)
    assert overlapping_texts(fig) == []
    plt.close(fig)


def test_save_logs_each_overlap(tmp_path, caplog):
    fig, ax = plt.subplots()
    ax.set_xticks(range(30), [f"a long tick label {k}" for k in range(30)])
    with caplog.at_level(logging.WARNING):
        _save(fig, tmp_path / "crowded.png")
    assert "crowded.png: overlapping text: 'a long tick label 0' and 'a long tick label 1'" in (
        caplog.text
    )
    assert (tmp_path / "crowded.png").is_file() and (tmp_path / "crowded.svg").is_file()


def test_metric_bars_take_each_methods_colour(tmp_path, monkeypatch):
    rows = [
        ("t", m, 0, "test", "spearman", v, v - 0.1, v + 0.1)
        for m, v in (("full", 0.7), ("head", 0.5), ("copra", 0.6))
    ]
    columns = ["task", "method", "seed", "split", "metric", "value", "ci_low", "ci_high"]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    drawn = {}
    monkeypatch.setattr("copra.plots._save", lambda fig, output: drawn.setdefault("fig", fig))
    plot_metrics(tmp_path / "m.tsv", tmp_path / "m.png")
    ax = drawn["fig"].axes[0]
    labels = [tick.get_text() for tick in ax.get_xticklabels()]
    assert labels == ["head", "copra", "full"]
    colours = [bar.get_facecolor() for bar in ax.patches]
    assert colours == [plt.matplotlib.colors.to_rgba(method_colour(m)) for m in labels]
    assert len({method_colour(m) for m in ("head", "lora", "copra", "full")}) == 4
    plt.close(drawn["fig"])
