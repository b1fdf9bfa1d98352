"""Sweep summary: one table row per job of a Hydra multirun, written at the sweep root.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``); after a
multirun it reads every job's ``metrics.json`` and writes ``summary.csv`` and ``summary.md``.
(It subclasses Hydra's ``Callback`` so that Hydra can call its other, empty, hooks.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hydra.experimental.callback import Callback

__all__ = ["SweepSummary", "summarize"]

COLUMNS = ("test_accuracy", "val_accuracy", "test_loss", "spikes_per_input", "epochs", "train_seconds",
           "train_samples_per_second")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


def summarize(sweep_dir: str | Path) -> list[dict]:
    """Collect ``*/metrics.json`` under ``sweep_dir`` (job folders) into rows; write CSV and Markdown.

    Each row holds ``job`` (folder name), ``overrides`` (the job's command-line overrides) and the
    scalar metrics. Returns the rows, sorted by job folder.
    """
    sweep_dir = Path(sweep_dir)
    rows = []
    for path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        m = json.loads(path.read_text())
        row = {"job": path.parent.name, "overrides": " ".join(m.get("overrides", []))}
        row.update({k: v for k, v in m.items() if not isinstance(v, (list, dict))})
        rows.append(row)
    if not rows:
        return rows
    keys = ["job", "overrides"] + [c for c in COLUMNS if any(c in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return rows


class SweepSummary(Callback):
    """Hydra callback writing ``summary.csv`` / ``summary.md`` at the sweep root after a multirun."""

    def on_multirun_end(self, config, **kwargs) -> None:
        rows = summarize(config.hydra.sweep.dir)
        print(f"sweep summary of {len(rows)} jobs: {Path(config.hydra.sweep.dir) / 'summary.md'}")
