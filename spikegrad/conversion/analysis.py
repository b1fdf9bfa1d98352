"""Post-training hook of ``train.py`` (``analysis=conversion``): convert the trained ANN and simulate it.

Reports accuracy versus time step, synaptic operations versus the ANN's multiply-accumulates, the
number of steps the SNN needs to come within 0.5 / 1 point of the ANN, per-layer firing rates, and
(optionally) the same curves for max-norm (``p = 100``) as a baseline. TensorBoard gets the curves,
an operations-versus-accuracy figure, firing rates and activation histograms with the chosen
percentile marked.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from typing import Any

import torch
from matplotlib.figure import Figure  # plain figures: no pyplot state, no backend switch
from torch import nn

from .normalization import Calibration, calibrate, normalize, percentile as percentile_fn
from .snn import SimulationResult, SpikingNetwork, simulate

__all__ = ["conversion_analysis", "curves_figure", "activations_figure", "firing_rates_figure"]

TOLERANCES = {"0p5": 0.005, "1p0": 0.01}  # within 0.5 and 1 percentage point of the ANN


def _in_order(loader: Iterable) -> Iterable:
    """The loader's dataset in a fixed order (a shuffling loader would make the calibration set
    depend on how many epochs were trained before); other iterables unchanged."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return loader
    return torch.utils.data.DataLoader(dataset, batch_size=getattr(loader, "batch_size", None) or 256, shuffle=False)


def _summary(r: SimulationResult, ann_accuracy: float, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        f"{prefix}snn_accuracy": r.accuracy,
        f"{prefix}snn_accuracy_by_step": [round(float(a), 6) for a in r.accuracy_by_step],
        f"{prefix}synops_per_input": r.synops_per_input,
        f"{prefix}synops_by_step": [round(float(s), 1) for s in r.synops_by_step],
    }
    cum = r.synops_cumulative
    for key, tol in TOLERANCES.items():
        t = r.steps_to_accuracy(ann_accuracy - tol)
        out[f"{prefix}steps_to_ann_within_{key}"] = t
        out[f"{prefix}synops_to_ann_within_{key}"] = None if t is None else float(cum[t - 1])
    return out


def curves_figure(runs: dict[str, SimulationResult], ann_accuracy: float, ann_macs: float):
    """Accuracy versus time step and versus cumulative synaptic operations per input (two panels)."""
    fig = Figure(figsize=(10, 3.8))
    a, b = fig.subplots(1, 2)
    for name, r in runs.items():
        steps = range(1, r.T + 1)
        a.plot(steps, 100 * r.accuracy_by_step.numpy(), label=name)
        b.plot(r.synops_cumulative.numpy(), 100 * r.accuracy_by_step.numpy(), label=name)
    for ax in (a, b):
        ax.axhline(100 * ann_accuracy, color="k", linestyle="--", linewidth=0.8, label="ANN")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0.0, 100 * ann_accuracy - 10), min(100.0, 100 * ann_accuracy + 1))
        ax.legend(loc="lower right")
    b.axvline(ann_macs, color="gray", linestyle=":", linewidth=0.8)
    b.set_xscale("log")
    a.set_xlabel("time step")
    b.set_xlabel("synaptic operations per input (dotted: ANN MACs)")
    fig.tight_layout()
    return fig


def activations_figure(calib: Calibration, p: float, names: dict[int, str], max_points: int = 200_000):
    """Histograms of the nonzero calibration activations per layer, with the ``p``-th percentile
    (dashed, the scale factor of layer-wise normalisation) and the maximum (dotted) marked."""
    idx = list(names)
    cols = min(3, len(idx))
    rows = math.ceil(len(idx) / cols)
    fig = Figure(figsize=(4 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, i in zip(axes.flat, idx):
        v = calib.samples[i].flatten()
        v = v[v != 0]
        if len(v) > max_points:
            v = v[torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[:max_points].to(v.device)]
        lam = float(percentile_fn(calib.samples[i].reshape(1, -1), p)[0])
        mx = float(calib.maxima[i].max())
        ax.hist(v.to(torch.float32).cpu().numpy(), bins=100, color="tab:blue", log=True)
        ax.axvline(lam, color="tab:red", linestyle="--", label=f"p{p:g} = {lam:.3g}")
        ax.axvline(mx, color="k", linestyle=":", label=f"max = {mx:.3g}")
        ax.set_title(names[i], fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(idx):]:
        ax.axis("off")
    fig.supxlabel("activation (ANN units)")
    fig.tight_layout()
    return fig


def firing_rates_figure(runs: dict[str, SimulationResult]):
    """Mean firing rate (spikes/step/neuron) of every IF layer, one bar group per run."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    names = list(next(iter(runs.values())).firing_rates)
    width = 0.8 / len(runs)
    for k, (run, r) in enumerate(runs.items()):
        ax.bar([j + k * width for j in range(len(names))], [r.firing_rates[n] for n in names], width, label=run)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30, fontsize=8)
    ax.set_ylabel("firing rate (spikes/step)")
    ax.legend()
    fig.tight_layout()
    return fig


def conversion_analysis(model: nn.Module, train_loader: Iterable | None = None, val_loader: Iterable | None = None,
                        test_loader: Iterable | None = None, device: str | torch.device = "cpu", writer=None,
                        out_dir: str | os.PathLike | None = None, *, T: int = 200, percentile: float = 99.9,
                        channelwise: bool = False, reset: str = "subtract", input_mode: str = "analog",
                        readout: str = "membrane", calib_inputs: int | None = 10000, max_test: int | None = None,
                        compare_max_norm: bool = True, count_bias: bool = False, seed: int = 0,
                        progress: bool = True, maxpool_gate: str = "count",
                        softmax_clock_rate: float = 0.3, synapses: str = "auto") -> dict[str, Any]:
    """Converts the trained ANN (Rueckauer et al. 2017) and simulates the SNN on the test set.

    Args:
        model: the trained ANN (Conv2d / Linear / BatchNorm / ReLU / pooling; left unchanged).
        train_loader: calibration data: the first ``calib_inputs`` images of its dataset, in dataset
            order (not the loader's shuffled order, so a reloaded ANN gets the same calibration).
        test_loader: evaluation data. ``val_loader`` is unused.
        device: where to calibrate and simulate. writer: TensorBoard ``SummaryWriter`` or None.
        out_dir: unused (metrics go to metrics.json through the returned dict).
        T: simulation steps. percentile: normalisation percentile (100 = max-norm).
        channelwise: per-channel scale factors. reset: "subtract" | "zero".
        input_mode: "analog" | "poisson". readout: "membrane" | "spiking_softmax" | "softmax_clock".
        maxpool_gate: "count" | "fir" | "avg" | "exp" (spiking max-pool rate estimate).
        softmax_clock_rate: clock ticks per step of ``readout="softmax_clock"``.
        synapses: "auto" | "event" | "dense": how the SNN computes its synapses (see :class:`SpikingNetwork`).
        calib_inputs: number of training images for calibration (None: all).
        max_test: simulate only this many test images (None: all).
        compare_max_norm: also convert and simulate with ``percentile=100`` (keys ``maxnorm_*``).
        count_bias: count one operation per biased neuron and step.
        seed: seeds Poisson input / spiking softmax and the calibration subsampling.
        progress: tqdm bars over test batches.
    Returns:
        ``ann_accuracy``, ``snn_accuracy`` (after ``T`` steps), ``snn_accuracy_by_step`` (list of
        ``T``), ``synops_per_input``, ``synops_by_step``, ``ann_macs_per_input``,
        ``steps_to_ann_within_0p5`` / ``_1p0`` (first step within 0.5 / 1 point of the ANN; None if
        never) and ``synops_to_ann_within_0p5`` / ``_1p0`` (operations spent by then),
        ``snn_firing_rates``, ``synops_by_layer``, ``scale_factors``, ``snn_seconds``; with
        ``compare_max_norm`` the same keys prefixed ``maxnorm_``.
    """
    if train_loader is None or test_loader is None:
        raise ValueError("conversion_analysis needs train_loader (calibration) and test_loader (evaluation)")
    device = torch.device(device)
    model.to(device)

    def run(p: float, calib: Calibration, with_ann: bool) -> tuple[SpikingNetwork, SimulationResult, float]:
        snn = SpikingNetwork(normalize(calib, p, channelwise), reset=reset, input_mode=input_mode, readout=readout,
                             maxpool_gate=maxpool_gate, softmax_clock_rate=softmax_clock_rate, synapses=synapses)
        gen = torch.Generator(device=device).manual_seed(seed)
        t0 = time.perf_counter()
        r = simulate(snn, test_loader, T, ann=model if with_ann else None, generator=gen, max_inputs=max_test,
                     count_bias=count_bias, progress=progress)
        return snn, r, time.perf_counter() - t0

    calib = calibrate(model, _in_order(train_loader), max_inputs=calib_inputs, device=device, seed=seed)
    snn, res, seconds = run(percentile, calib, True)
    ann_accuracy = res.ann_accuracy
    metrics: dict[str, Any] = {"ann_accuracy": ann_accuracy, "ann_macs_per_input": res.ann_macs, "snn_T": T,
                               **_summary(res, ann_accuracy),
                               "snn_spikes_per_input": res.spikes_per_input,
                               "snn_firing_rates": res.firing_rates, "synops_by_layer": res.synops_by_layer,
                               "scale_factors": {k: v.flatten().tolist() for k, v in snn.lambdas().items()},
                               "snn_seconds": seconds,
                               "snn_image_steps_per_second": res.n_inputs * T / max(seconds, 1e-9),
                               "calibration_inputs": calib.n_inputs, "snn_test_inputs": res.n_inputs}
    runs = {f"p={percentile:g}": res}
    if compare_max_norm and percentile < 100:
        _, base, _ = run(100.0, calib, False)
        metrics.update(_summary(base, ann_accuracy, "maxnorm_"))
        metrics["maxnorm_snn_firing_rates"] = base.firing_rates
        runs["max-norm (p=100)"] = base
    print(f"ANN {100 * ann_accuracy:.2f}% -> SNN {100 * res.accuracy:.2f}% after {T} steps "
          f"(within 0.5 point after {metrics['steps_to_ann_within_0p5']} steps); "
          f"{res.synops_per_input:.3g} synops vs {res.ann_macs:.3g} ANN MACs per input", flush=True)

    if writer is not None:
        for name, r in runs.items():
            tag = "conversion" if name == f"p={percentile:g}" else "conversion_maxnorm"
            for t, a in enumerate(r.accuracy_by_step.tolist()):
                writer.add_scalar(f"{tag}/accuracy_by_step", a, t + 1)
            for layer, rate in r.firing_rates.items():
                writer.add_scalar(f"{tag}/firing_rate/{layer}", rate, T)
        writer.add_scalar("conversion/ann_accuracy", ann_accuracy, T)
        writer.add_figure("conversion/accuracy_vs_steps_and_ops", curves_figure(runs, ann_accuracy, res.ann_macs), T)
        writer.add_figure("conversion/firing_rates", firing_rates_figure(runs), T)
        program = calib.program
        names = {i: program.nodes[i].name for i in [*program.neurons, program.out]}
        for i, name in names.items():
            v = calib.samples[i].flatten()
            writer.add_histogram(f"conversion/activations/{name}", v[v != 0].to(torch.float32).cpu(), T)
        writer.add_figure("conversion/activations", activations_figure(calib, percentile, names), T)
        writer.flush()
    return metrics
