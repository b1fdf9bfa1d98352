"""Sweeps: the objective a sweeper optimises, and a summary with one row per job of a multirun.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``). After every
job it records a failed job's error in the job folder (``failed.json``) and rewrites
``summary.csv`` / ``summary.md`` at the sweep root, so the summary lists every job that ran, failed
ones with their error, even when a failure ends the sweep. (It subclasses Hydra's ``Callback`` so
that Hydra can call its other, empty, hooks.)

The summary shows the swept keys as columns (the overrides every job shares are listed once,
above the table). When ``seed`` is among the swept keys, a second table gives per setting of the
other keys the mean, standard deviation, minimum and maximum over seeds. When one or two keys
other than ``seed`` are swept, ``objective.png`` (and the TensorBoard folder ``tb/`` at the sweep
root) plots validation and test accuracy against them: the numeric key on the x axis (log scale
when it spans more than a decade), one line per value of the other key, mean and range over seeds.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
import statistics
from pathlib import Path

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

__all__ = ["SweepSummary", "summarize", "aggregate_seeds", "sweep_figure", "write_sweep_figure",
           "check_objective", "OBJECTIVES"]

COLUMNS = ("status", "val_accuracy", "test_accuracy", "test_loss", "spikes_per_input", "epochs", "train_seconds",
           "train_samples_per_second", "error")
# metrics a sweep may select on: validation only (the test set is evaluated once per run and only reported)
OBJECTIVES = ("val_accuracy",)
AGGREGATED = ("val_accuracy", "test_accuracy", "spikes_per_input", "train_seconds")  # over seeds
FIGURE_NAME = "objective.png"


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


def _overrides(job: Path) -> list[str]:
    path = job / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def _job_row(job: Path) -> dict:
    overrides = _overrides(job)
    row = {"job": job.name, "overrides": " ".join(overrides),
           "_keys": dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)}
    if (job / "metrics.json").is_file():
        m = json.loads((job / "metrics.json").read_text())
        row["status"] = "ok"
        row.update({k: v for k, v in m.items() if not isinstance(v, (list, dict))})
    elif (job / "failed.json").is_file():
        row.update(status="failed", error=json.loads((job / "failed.json").read_text())["error"])
    else:
        row.update(status="no result", error="the job has no metrics.json (still running, or killed)")
    return row


def _swept(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(keys whose value differs between jobs, in override order; ``key=value`` overrides all jobs share)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r["_keys"] if k not in keys]
    swept = [k for k in keys if len({r["_keys"].get(k) for r in rows}) > 1]
    fixed = [f"{k}={rows[0]['_keys'][k]}" for k in keys if k not in swept]
    return swept, fixed


def _value(text: str | None):
    """An override's value as a number where it is one (for sorting and axes), else the text."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def aggregate_seeds(rows: list[dict], swept: list[str]) -> list[dict]:
    """Per setting of the swept keys other than ``seed``: ``n`` (finished seeds) and the mean, std
    (sample, 0 for one seed), min and max of each metric of :data:`AGGREGATED` over the jobs that finished."""
    others = [k for k in swept if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["_keys"].get(k) for k in others), []).append(r)
    out = []
    for setting, members in groups.items():
        ok = [r for r in members if r.get("status") == "ok"]
        agg = {**dict(zip(others, setting)), "n": len(ok), "seeds": len(members)}
        for metric in AGGREGATED:
            vals = [float(r[metric]) for r in ok if isinstance(r.get(metric), (int, float))]
            if vals:
                agg.update({f"{metric}_mean": statistics.fmean(vals),
                            f"{metric}_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                            f"{metric}_min": min(vals), f"{metric}_max": max(vals)})
        out.append(agg)
    return sorted(out, key=lambda a: [(isinstance(_value(a[k]), str), _value(a[k])) for k in others])


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]


def summarize(sweep_dir: str | Path) -> list[dict]:
    """Collect every job folder under ``sweep_dir`` into rows; write ``summary.csv`` and ``summary.md``
    (and ``objective.png`` for a sweep over one or two keys besides ``seed``, see the module docstring).

    A job folder is a subfolder with a ``.hydra`` folder. Each row holds ``job`` (folder name),
    ``overrides``, the swept keys' values, ``status`` (``ok``, ``failed`` or ``no result``), the
    scalar metrics of ``metrics.json`` and, for failed jobs, ``error``. Returns the rows, sorted by job folder.
    """
    sweep_dir = Path(sweep_dir)
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()) if sweep_dir.is_dir() else [],
                  key=lambda p: (len(p.name), p.name))
    rows = [_job_row(job) for job in jobs]
    if not rows:
        return rows
    swept, fixed = _swept(rows)
    for r in rows:
        r.update({k: r["_keys"].get(k) for k in swept})
    metrics = [c for c in COLUMNS if any(c in r for r in rows)]
    keys = ["job", *swept, "overrides"] + metrics
    keys += sorted({k for r in rows for k in r if not k.startswith("_")} - set(keys))
    with open(sweep_dir / ".summary.csv.part", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [f"# Sweep of {len(rows)} jobs", "",
             "Fixed overrides: " + (" ".join(f"`{o}`" for o in fixed) if fixed else "(none)"), ""]
    lines += _table(rows, ["job", *swept] + metrics)
    if "seed" in swept:
        agg = aggregate_seeds(rows, swept)
        cols = [k for k in swept if k != "seed"] + ["n"]
        cols += [f"{m}_{s}" for m in AGGREGATED for s in ("mean", "std", "min", "max") if any(f"{m}_mean" in a for a in agg)]
        lines += ["", "## Mean and spread over seeds", ""] + _table(agg, cols)
    (sweep_dir / ".summary.md.part").write_text("\n".join(lines) + "\n")
    os.replace(sweep_dir / ".summary.csv.part", sweep_dir / "summary.csv")
    os.replace(sweep_dir / ".summary.md.part", sweep_dir / "summary.md")
    return rows


def sweep_figure(rows: list[dict], swept: list[str]):
    """Validation and test accuracy (%) against the swept keys other than ``seed`` (one or two),
    mean over seeds with their range shaded; a matplotlib Figure, or None for another number of keys
    or when no job finished."""
    from matplotlib.figure import Figure

    others = [k for k in swept if k != "seed"]
    agg = [a for a in aggregate_seeds(rows, swept) if a["n"]]
    if not 1 <= len(others) <= 2 or not agg:
        return None
    numeric = [k for k in others if all(isinstance(_value(a[k]), float) for a in agg)]
    x_key = numeric[0] if numeric else others[0]
    line_key = next((k for k in others if k != x_key), None)
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    lines = sorted({a[line_key] for a in agg} if line_key else {None}, key=lambda v: (v is None, str(v)))
    for ax, metric in zip(axes, ("val_accuracy", "test_accuracy")):
        for c, value in enumerate(lines):
            pts = sorted((a for a in agg if (line_key is None or a[line_key] == value) and f"{metric}_mean" in a),
                         key=lambda a: _value(a[x_key]) if x_key in numeric else str(a[x_key]))
            if not pts:
                continue
            xs = [_value(a[x_key]) if x_key in numeric else str(a[x_key]) for a in pts]
            ax.plot(xs, [100 * a[f"{metric}_mean"] for a in pts], marker="o", color=f"C{c}",
                    label=None if line_key is None else f"{line_key}={value}")
            if any(a["n"] > 1 for a in pts):
                ax.fill_between(xs, [100 * a[f"{metric}_min"] for a in pts], [100 * a[f"{metric}_max"] for a in pts],
                                color=f"C{c}", alpha=0.2, linewidth=0)
        if x_key in numeric:
            values = [_value(a[x_key]) for a in agg]
            if min(values) > 0 and max(values) / min(values) > 10:
                ax.set_xscale("log")
        ax.set_xlabel(x_key)
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    if line_key is not None:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_sweep_figure(sweep_dir: str | Path, rows: list[dict] | None = None) -> Path | None:
    """:func:`sweep_figure` of the jobs in ``sweep_dir`` as ``objective.png`` there and in TensorBoard
    (``sweep_dir/tb``); None when the sweep has no such figure."""
    sweep_dir = Path(sweep_dir)
    rows = summarize(sweep_dir) if rows is None else rows
    if not rows:
        return None
    fig = sweep_figure(rows, _swept(rows)[0])
    if fig is None:
        return None
    path = sweep_dir / FIGURE_NAME
    fig.savefig(path, dpi=150)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(sweep_dir / "tb")) as writer:
        writer.add_figure("sweep/accuracy", fig, 0)
    return path


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
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = _summarize_locked(sweep_dir)
        failed = sum(r["status"] != "ok" for r in rows)
        print(f"sweep summary of {len(rows)} jobs ({failed} failed): {sweep_dir / 'summary.md'}")
        figure = write_sweep_figure(sweep_dir, rows)
        if figure is not None:
            print(f"accuracy against the swept keys: {figure}")
