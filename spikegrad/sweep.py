"""Sweeps: the objective a sweeper optimises, and a summary with one row per job of a multirun.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``). After every
job it records a failed job's error in the job folder (``failed.json``) and rewrites
``summary.csv`` / ``summary.md`` at the sweep root, so the summary lists every job that ran, failed
ones with their error, even when a failure ends the sweep. (It subclasses Hydra's ``Callback`` so
that Hydra can call its other, empty, hooks.)
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
from pathlib import Path

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

__all__ = ["SweepSummary", "summarize", "check_objective", "OBJECTIVES"]

COLUMNS = ("status", "val_accuracy", "test_accuracy", "test_loss", "spikes_per_input", "epochs", "train_seconds",
           "train_samples_per_second", "error")
# metrics a sweep may select on: validation only (the test set is evaluated once per run and only reported)
OBJECTIVES = ("val_accuracy",)


def check_objective(objective: str, has_validation: bool, sweep: bool = True) -> None:
    """Raise a ``ValueError`` unless ``objective`` is a validation metric the run will produce.

    Args:
        objective: name of the metric ``train.py`` returns to sweepers.
        has_validation: whether the run has a validation set (``data.val_size > 0``).
        sweep: part of a multirun; a single run without validation set is fine (nothing selects on it).
    """
    if objective.startswith("test_"):
        raise ValueError(f"objective={objective} would select hyperparameters on the test set, which makes the "
                         f"reported test score optimistic; use a validation metric ({' or '.join(OBJECTIVES)}). "
                         "The test set is evaluated once per run and reported in metrics.json")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not a metric a run returns; choose one of {list(OBJECTIVES)}")
    if sweep and not has_validation:
        raise ValueError(f"objective={objective} needs a validation set, but data.val_size=0; hold out samples "
                         "(data.val_size=5000)")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v).replace("\n", " ").replace("|", "/"))


def _job_row(job: Path) -> dict:
    overrides = job / ".hydra" / "overrides.yaml"
    row = {"job": job.name,
           "overrides": " ".join(OmegaConf.load(overrides)) if overrides.is_file() else ""}
    if (job / "metrics.json").is_file():
        m = json.loads((job / "metrics.json").read_text())
        row["status"] = "ok"
        row.update({k: v for k, v in m.items() if not isinstance(v, (list, dict))})
    elif (job / "failed.json").is_file():
        row.update(status="failed", error=json.loads((job / "failed.json").read_text())["error"])
    else:
        row.update(status="no result", error="the job has no metrics.json (still running, or killed)")
    return row


def summarize(sweep_dir: str | Path) -> list[dict]:
    """Collect every job folder under ``sweep_dir`` into rows; write ``summary.csv`` and ``summary.md``.

    A job folder is a subfolder with a ``.hydra`` folder. Each row holds ``job`` (folder name),
    ``overrides``, ``status`` (``ok``, ``failed`` or ``no result``), the scalar metrics of
    ``metrics.json`` and, for failed jobs, ``error``. Returns the rows, sorted by job folder.
    """
    sweep_dir = Path(sweep_dir)
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()) if sweep_dir.is_dir() else [],
                  key=lambda p: (len(p.name), p.name))
    rows = [_job_row(job) for job in jobs]
    if not rows:
        return rows
    keys = ["job", "overrides"] + [c for c in COLUMNS if any(c in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    with open(sweep_dir / ".summary.csv.part", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    (sweep_dir / ".summary.md.part").write_text("\n".join(lines) + "\n")
    os.replace(sweep_dir / ".summary.csv.part", sweep_dir / "summary.csv")
    os.replace(sweep_dir / ".summary.md.part", sweep_dir / "summary.md")
    return rows


def _summarize_locked(sweep_dir: Path) -> list[dict]:
    """:func:`summarize` under an exclusive lock: parallel jobs that end together rewrite it in turn."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return summarize(sweep_dir)


class SweepSummary(Callback):
    """Hydra callback: records failed jobs and keeps ``summary.csv`` / ``summary.md`` at the sweep root."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        out = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            err = job_return._return_value
            logging.getLogger("train").error(f"run failed: {type(err).__name__}: {err}")  # into train.log too
            (out / "failed.json").write_text(json.dumps({"error": f"{type(err).__name__}: {err}"}, indent=2))
        if config.hydra.mode == RunMode.MULTIRUN:
            _summarize_locked(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        rows = _summarize_locked(Path(config.hydra.sweep.dir))
        failed = sum(r["status"] != "ok" for r in rows)
        print(f"sweep summary of {len(rows)} jobs ({failed} failed): {Path(config.hydra.sweep.dir) / 'summary.md'}")
