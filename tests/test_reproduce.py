"""`copra reproduce`: a finished run rerun from its manifest gives the same metrics."""

import json

import pandas as pd
import pytest

from copra.cli import main
from copra.reproduce import KEYS, compare

pytestmark = pytest.mark.slow


def test_the_demo_head_baseline_reproduces(head_only_demo, tmp_path, capsys):
    manifest = json.loads((head_only_demo / "results/metrics.manifest.json").read_text())
    assert manifest["hardware"]["cpus"] >= 1 and "git_commit" in manifest
    rerun = tmp_path / "rerun"
    assert main(["reproduce", str(head_only_demo / "results"), "--workdir", str(rerun)]) == 0
    assert capsys.readouterr().out.startswith("match: all ")
    assert not (rerun / "resources").exists()  # the task files came from the original run
    assert pd.read_csv(rerun / "reproduce.tsv", sep="\t").empty


def test_a_changed_or_missing_number_is_a_mismatch():
    rows = [
        ("t", "head", 0, "test", "aupr", 0.8),
        ("t", "head", 0, "test", "mcc", float("nan")),
        ("t", "head", 0, "valid", "aupr", 0.7),
    ]
    original = pd.DataFrame(rows, columns=[*KEYS, "value"])
    assert compare(original, original.copy(), 0.0).match  # NaN in both counts as equal
    changed = original.copy()
    changed.loc[0, "value"] = 0.8 + 1e-9
    result = compare(original, changed, 0.0)
    assert not result.match and result.differing.metric.tolist() == ["aupr"]
    assert compare(original, changed, 1e-6).match
    missing = compare(original, original.iloc[:2], 0.0)
    assert missing.differing.split.tolist() == ["valid"]
