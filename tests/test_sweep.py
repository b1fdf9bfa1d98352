"""Sweep summaries: swept keys as columns, fixed overrides once, mean and spread over seeds, figure."""

import csv
import json
import statistics

import pytest
import yaml

from spikegrad.sweep import FIGURE_NAME, aggregate_seeds, summarize, write_sweep_figure


def fake_sweep(root, accuracies):
    """Job folders as Hydra writes them: ``.hydra/overrides.yaml`` and ``metrics.json``."""
    for k, (overrides, acc) in enumerate(accuracies):
        job = root / str(k)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if acc is None:
            (job / "failed.json").write_text(json.dumps({"error": "ValueError: boom"}))
        else:
            (job / "metrics.json").write_text(json.dumps({"val_accuracy": acc, "test_accuracy": acc - 0.01,
                                                          "history": [1, 2]}))


def grid():
    jobs, k = [], 0
    for shape in ("fast_sigmoid", "atan"):
        for slope in (1, 10, 100):
            for seed in (0, 1, 2):
                acc = 0.5 + 0.1 * (slope > 1) + 0.01 * seed + (0.05 if shape == "atan" else 0.0)
                jobs.append((["experiment=randman", f"surrogate={shape}", f"surrogate.slope={slope}", f"seed={seed}"],
                             None if k == 4 else acc))
                k += 1
    return jobs


def test_summary_shows_swept_keys_and_fixed_overrides_once(tmp_path):
    fake_sweep(tmp_path, grid())
    rows = summarize(tmp_path)
    assert len(rows) == 18
    md = (tmp_path / "summary.md").read_text()
    assert md.count("experiment=randman") == 1 and "Fixed overrides: `experiment=randman`" in md
    header = next(line for line in md.splitlines() if line.startswith("| job"))
    assert header.split(" | ")[1:4] == ["surrogate", "surrogate.slope", "seed"]
    table = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert table[4]["status"] == "failed" and table[5]["surrogate.slope"] == "10" and table[5]["seed"] == "2"
    assert "surrogate=fast_sigmoid" in table[0]["overrides"]  # the full override string stays in the csv


def test_mean_and_spread_over_seeds_by_hand(tmp_path):
    fake_sweep(tmp_path, grid())
    rows = summarize(tmp_path)
    agg = aggregate_seeds(rows, ["surrogate", "surrogate.slope", "seed"])
    assert len(agg) == 6 and [a["surrogate.slope"] for a in agg[:3]] == ["1", "10", "100"]
    a = next(a for a in agg if a["surrogate"] == "atan" and a["surrogate.slope"] == "10")
    vals = [0.65, 0.66, 0.67]
    assert a["n"] == 3 and a["val_accuracy_mean"] == pytest.approx(statistics.fmean(vals))
    assert a["val_accuracy_std"] == pytest.approx(statistics.stdev(vals))
    assert (a["val_accuracy_min"], a["val_accuracy_max"]) == (pytest.approx(0.65), pytest.approx(0.67))
    failed = next(a for a in agg if a["surrogate"] == "fast_sigmoid" and a["surrogate.slope"] == "10")
    assert failed["n"] == 2 and failed["seeds"] == 3  # the failed job is not averaged in
    assert "Mean and spread over seeds" in (tmp_path / "summary.md").read_text()


def test_sweep_figure_is_written_for_one_or_two_keys(tmp_path):
    fake_sweep(tmp_path / "a", grid())
    path = write_sweep_figure(tmp_path / "a")
    assert path == tmp_path / "a" / FIGURE_NAME and path.stat().st_size > 10_000
    assert any((tmp_path / "a" / "tb").iterdir())
    fake_sweep(tmp_path / "b", [(["seed=0"], 0.5), (["seed=1"], 0.6)])  # only seeds: no axis to plot
    assert write_sweep_figure(tmp_path / "b") is None
    three = [([f"a={i}", f"b={j}", f"c={k}"], 0.5) for i in range(2) for j in range(2) for k in range(2)]
    fake_sweep(tmp_path / "c", three)
    assert write_sweep_figure(tmp_path / "c") is None
