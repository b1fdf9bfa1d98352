"""After training: accuracy on a substrate (weight transfer, chip-to-chip), epoch cost, sweep figure.

:func:`substrate_analysis` is the post-training hook of ``train.py`` (``analysis=substrate``). It
evaluates the trained weights in software and on the substrate, on other chips of the same kind
(chip-to-chip transfer), optionally at other mismatch levels (a transfer curve from one trained
model), and can time an in-the-loop epoch against a software epoch on the same batches.

:func:`mismatch_figure` / :func:`write_mismatch_figure` draw test accuracy on the substrate
against mismatch, one curve for in-the-loop training and one for weight transfer (the shape of
Fig. 4B of Cramer et al., PNAS 2022), from the ``metrics.json`` files of a sweep;
:class:`MismatchFigure` is a Hydra callback that writes it at the end of a multirun.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

from ..training import evaluate, train_epoch
from .loop import InTheLoop
from .substrate import AnalogSubstrate, Substrate

__all__ = ["substrate_analysis", "epoch_times", "mismatch_figure", "mismatch_points", "write_mismatch_figure",
           "MismatchFigure", "FIGURE_NAME"]

FIGURE_NAME = "accuracy_vs_mismatch.png"
_LABELS = {"substrate": "in the loop", "software": "weight transfer"}


def _key(value: float) -> str:
    return f"{value:g}"


def epoch_times(model: nn.Module, substrate: Substrate, batches: Sequence, loss_fn, *, encoder=None,
                regularizers: Sequence = (), device: str | torch.device = "cpu", rounds: int = 2,
                lr: float = 1e-3) -> dict[str, float]:
    """Seconds of one training pass over ``batches`` in software and in the loop, on copies of ``model``.

    The two modes alternate ``rounds`` times (so a change of machine load hits both) and the
    fastest round of each counts, in wall-clock seconds and in CPU seconds of this process (all
    threads; less sensitive to other programs sharing the machine). The model is not changed.

    Returns:
        ``{"software_seconds", "in_the_loop_seconds", "ratio", "software_cpu_seconds",
        "in_the_loop_cpu_seconds", "cpu_ratio"}`` (ratios: in the loop / software).
    """
    wall = {"software": math.inf, "substrate": math.inf}
    cpu = dict(wall)
    for _ in range(rounds):
        for mode in wall:
            net = InTheLoop(copy.deepcopy(model), copy.deepcopy(substrate), train_on=mode).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            gen = torch.Generator(device=device).manual_seed(0)
            t0, c0 = time.perf_counter(), time.process_time()
            train_epoch(net, batches, opt, loss_fn, encoder=encoder, regularizers=regularizers, device=device,
                        generator=gen, progress=False)
            wall[mode] = min(wall[mode], time.perf_counter() - t0)
            cpu[mode] = min(cpu[mode], time.process_time() - c0)
    return {"software_seconds": wall["software"], "in_the_loop_seconds": wall["substrate"],
            "ratio": wall["substrate"] / wall["software"], "software_cpu_seconds": cpu["software"],
            "in_the_loop_cpu_seconds": cpu["substrate"], "cpu_ratio": cpu["substrate"] / max(cpu["software"], 1e-9)}


def substrate_analysis(model: nn.Module, train_loader: Iterable | None = None, val_loader: Iterable | None = None,
                       test_loader: Iterable | None = None, device: str | torch.device = "cpu", writer=None,
                       out_dir: str | os.PathLike | None = None, *, substrate: Substrate, loss, encoder=None,
                       regularizers: Mapping | Sequence | None = None, other_chips: Sequence[int] = (1,),
                       mismatches: Sequence[float] = (), timing_batches: int = 0, seed: int = 0,
                       progress: bool = True) -> dict[str, Any]:
    """Evaluate trained weights in software and on substrates; time in-the-loop training.

    Args:
        model: the trained model: an :class:`~spikegrad.hardware.InTheLoop` (its own substrate is
            "chip A") or a plain :class:`~spikegrad.models.SpikingMLP` (then ``substrate`` is chip A).
        test_loader: the data every accuracy is measured on.
        substrate: the substrate of a plain model (ignored for an ``InTheLoop`` model).
        loss: the training loss (its ``predict`` gives the class).
        encoder: maps images ``[B, ...]`` to spikes ``[T, B, ...]``.
        regularizers: the training regularizers (a dict or list), used by the epoch timing only.
        other_chips: chip seeds to test on besides chip A (needs an :class:`AnalogSubstrate`).
        mismatches: further mismatch levels at which to test on chip A (a transfer curve).
        timing_batches: time a training pass over this many training batches in software and in the
            loop (:func:`epoch_times`); 0 = no timing.
        seed: seed of the encoder's random numbers during evaluation.
    Returns:
        metrics: ``software_test_accuracy``, ``substrate_test_accuracy``,
        ``substrate_spikes_per_input``, ``substrate_test_loss``, ``substrate_chip{c}_test_accuracy``
        per other chip, ``substrate_accuracy_by_mismatch`` ({mismatch: accuracy}), the substrate's
        settings (``substrate``: dict; ``substrate_mismatch``, ``substrate_chip``,
        ``substrate_train_on``: scalars for sweep tables), and with timing ``epoch_time_ratio``,
        ``software_epoch_seconds``, ``in_the_loop_epoch_seconds`` (extrapolated to a full epoch) and
        the same in CPU seconds (``epoch_cpu_time_ratio``, ...).
    """
    if test_loader is None:
        raise ValueError("substrate_analysis needs a test loader (the accuracies are measured on it)")
    wrapped = isinstance(model, InTheLoop)
    software = model.model if wrapped else model
    chip = model.substrate if wrapped else substrate
    if not isinstance(chip, Substrate):
        raise TypeError(f"substrate_analysis: substrate must be a spikegrad.hardware.Substrate, got {type(chip).__name__}")
    device = torch.device(device)

    def accuracy_on(net: nn.Module, desc: str) -> dict:
        gen = torch.Generator(device=device).manual_seed(seed)
        return evaluate(net, test_loader, loss, encoder=encoder, device=device, generator=gen, progress=progress,
                        desc=desc)

    sw = accuracy_on(software, "test (software)")
    hw = accuracy_on(InTheLoop(software, chip).to(device), "test (substrate)")
    settings = chip.settings()
    out: dict[str, Any] = {
        "software_test_accuracy": sw["accuracy"], "software_spikes_per_input": sw["spikes_per_input"],
        "substrate_test_accuracy": hw["accuracy"], "substrate_test_loss": hw["loss"],
        "substrate_spikes_per_input": hw["spikes_per_input"], "substrate": settings,
        "substrate_mismatch": settings.get("mismatch"), "substrate_chip": settings.get("chip"),
        "substrate_train_on": model.train_on if wrapped else "software",
    }
    if other_chips or mismatches:
        if not isinstance(chip, AnalogSubstrate):
            raise ValueError("substrate_analysis: other_chips and mismatches need an AnalogSubstrate (a simulated chip "
                             "can be re-drawn); set them to [] for this substrate")
        for c in other_chips:
            r = accuracy_on(InTheLoop(software, chip.replace(chip=int(c))).to(device), f"test (chip {c})")
            out[f"substrate_chip{c}_test_accuracy"] = r["accuracy"]
        by_mismatch = {_key(settings["mismatch"]): hw["accuracy"]}
        for m in mismatches:
            if _key(m) not in by_mismatch:
                r = accuracy_on(InTheLoop(software, chip.replace(mismatch=float(m))).to(device), f"test (mismatch {m:g})")
                by_mismatch[_key(m)] = r["accuracy"]
        out["substrate_accuracy_by_mismatch"] = dict(sorted(by_mismatch.items(), key=lambda kv: float(kv[0])))
    if timing_batches:
        if train_loader is None:
            raise ValueError("substrate_analysis: timing_batches > 0 needs the training loader")
        regs = list(regularizers.values()) if isinstance(regularizers, Mapping) else list(regularizers or [])
        batches = list(islice(train_loader, int(timing_batches)))
        t = epoch_times(software, chip, batches, loss, encoder=encoder, regularizers=regs, device=device)
        per_epoch = len(train_loader) / len(batches) if hasattr(train_loader, "__len__") else 1.0
        out.update(epoch_time_ratio=t["ratio"], software_epoch_seconds=t["software_seconds"] * per_epoch,
                   in_the_loop_epoch_seconds=t["in_the_loop_seconds"] * per_epoch, epoch_cpu_time_ratio=t["cpu_ratio"],
                   software_epoch_cpu_seconds=t["software_cpu_seconds"] * per_epoch,
                   in_the_loop_epoch_cpu_seconds=t["in_the_loop_cpu_seconds"] * per_epoch, timing_batches=len(batches))
    if writer is not None:
        for k, v in out.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                writer.add_scalar(f"substrate/{k}", v, 0)
    return out


# ---------------------------------------------------------------------------------- the figure
def mismatch_points(metrics: Iterable[Mapping[str, Any]]) -> dict[str, dict[float, list[float]]]:
    """Test accuracies on the substrate by curve and mismatch, from runs' ``metrics.json`` dicts.

    A run trained in the loop adds a point to ``"in the loop"``; a run trained in software adds
    its ``substrate_accuracy_by_mismatch`` (or its one accuracy) to ``"weight transfer"``. Runs
    without substrate metrics are skipped.

    Returns:
        ``{curve: {mismatch: [accuracy, ...]}}`` (several accuracies where seeds repeat a point).
    """
    curves: dict[str, dict[float, list[float]]] = {}
    for m in metrics:
        if m.get("substrate_test_accuracy") is None or m.get("substrate_mismatch") is None:
            continue
        label = _LABELS.get(m.get("substrate_train_on"), str(m.get("substrate_train_on")))
        points = {float(m["substrate_mismatch"]): m["substrate_test_accuracy"]}
        if m.get("substrate_train_on") == "software":
            points.update({float(k): v for k, v in (m.get("substrate_accuracy_by_mismatch") or {}).items()})
        for x, acc in points.items():
            curves.setdefault(label, {}).setdefault(x, []).append(float(acc))
    return curves


def mismatch_figure(curves: Mapping[str, Mapping[float, Sequence[float]]]) -> Figure:
    """Test accuracy (%) against mismatch (relative spread): one line per curve, mean and range of
    the runs at each point (:func:`mismatch_points` gives ``curves``)."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for k, (label, pts) in enumerate(sorted(curves.items())):
        xs = sorted(pts)
        mean = [100 * sum(pts[x]) / len(pts[x]) for x in xs]
        ax.plot(xs, mean, marker="o", color=f"C{k}", label=label)
        if any(len(pts[x]) > 1 for x in xs):
            ax.fill_between(xs, [100 * min(pts[x]) for x in xs], [100 * max(pts[x]) for x in xs], color=f"C{k}",
                            alpha=0.2, linewidth=0)
    ax.set_xlabel("fixed-pattern mismatch (relative spread)")
    ax.set_ylabel("test accuracy on the substrate (%)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def write_mismatch_figure(sweep_dir: str | os.PathLike, writer=None,
                          extra: Sequence[str | os.PathLike] = ()) -> Path | None:
    """Draw :func:`mismatch_figure` from ``sweep_dir/*/metrics.json`` into ``sweep_dir/accuracy_vs_mismatch.png``
    and to TensorBoard (``writer``, or a new writer in ``sweep_dir/tb``).

    Args:
        extra: more runs to draw (run folders or their ``metrics.json``), e.g. a weight-transfer
            run (``experiment=mnist16_transfer``) next to an in-the-loop sweep.
    Returns:
        the PNG's path, or None when no run has substrate metrics.
    """
    sweep_dir = Path(sweep_dir)
    paths = sorted(sweep_dir.glob("*/metrics.json"))
    paths += [Path(p) / "metrics.json" if Path(p).is_dir() else Path(p) for p in extra]
    metrics = [json.loads(p.read_text()) for p in paths]
    curves = mismatch_points(metrics)
    if not curves:
        return None
    fig = mismatch_figure(curves)
    path = sweep_dir / FIGURE_NAME
    fig.savefig(path, dpi=150)
    own = writer is None
    if own:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(sweep_dir / "tb"))
    writer.add_figure("substrate/accuracy_vs_mismatch", fig, 0)
    if own:
        writer.close()
    return path


class MismatchFigure:
    """Hydra callback (``hydra.callbacks``): after a multirun, write :func:`write_mismatch_figure` at
    the sweep root. It has every hook Hydra calls; all but ``on_multirun_end`` do nothing (the
    library imports no hydra outside :mod:`spikegrad.sweep`).

    Args:
        extra: more runs to draw (see :func:`write_mismatch_figure`).
    """

    def __init__(self, extra: Sequence[str] = ()):
        self.extra = list(extra or ())

    def on_run_start(self, config, **kwargs) -> None:
        pass

    def on_run_end(self, config, **kwargs) -> None:
        pass

    def on_multirun_start(self, config, **kwargs) -> None:
        pass

    def on_job_start(self, config, **kwargs) -> None:
        pass

    def on_job_end(self, config, job_return, **kwargs) -> None:
        pass

    def on_compose_config(self, config, **kwargs) -> None:
        pass

    def on_multirun_end(self, config, **kwargs) -> None:
        path = write_mismatch_figure(config.hydra.sweep.dir, extra=self.extra)
        if path is not None:
            print(f"accuracy against mismatch: {path}")
