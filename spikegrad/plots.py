"""Matplotlib figures for TensorBoard (``SummaryWriter.add_figure``): rasters, traces and the readout.

The figures are plain ``matplotlib.figure.Figure`` objects (no pyplot state, no backend switch):
importing this module leaves matplotlib's backend as the application chose it.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["raster_figure", "traces_figure", "readout_figure"]


def raster_figure(spikes: Tensor, title: str = "", max_neurons: int = 256) -> Figure:
    """Spike raster of one sample: ``spikes [T, N]`` -> a figure (time in steps vs neuron index)."""
    s = spikes.detach().float().cpu().flatten(1)[:, :max_neurons]
    t, n = s.nonzero(as_tuple=True)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.scatter(t.numpy(), n.numpy(), s=4, marker="|", color="k")
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    ax.set_title(f"{title} ({int(s.sum())} spikes)")
    fig.tight_layout()
    return fig


def traces_figure(v: Tensor, title: str = "", threshold: float | None = 1.0, max_traces: int = 8) -> Figure:
    """Membrane traces of one sample: ``v [T, N]`` (threshold units) -> a figure of the first traces."""
    x = v.detach().float().cpu().flatten(1)[:, :max_traces]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(x.numpy(), linewidth=1)
    if threshold is not None:
        ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label="threshold")
        ax.legend(loc="upper right")
    ax.set_xlabel("time step")
    ax.set_ylabel("membrane (threshold units)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def readout_figure(readout: Tensor, label: int | None = None, title: str = "") -> Figure:
    """Readout traces of one sample, every class: ``readout [T, C]`` -> a figure with a legend.

    The trace of the true class ``label`` is drawn thick and black and named in the legend and title.
    """
    x = readout.detach().float().cpu().flatten(1)  # [T, C]
    fig = Figure(figsize=(6.5, 3.5))
    ax = fig.subplots()
    for c in range(x.shape[1]):
        true = c == label
        ax.plot(x[:, c].numpy(), linewidth=2.5 if true else 1, color="k" if true else f"C{c % 10}",
                label=f"class {c}" + (" (true)" if true else ""), zorder=3 if true else 2)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    ax.set_xlabel("time step")
    ax.set_ylabel("readout")
    ax.set_title(f"{title}, readout" + (f", true label {label}" if label is not None else ""))
    fig.tight_layout()
    return fig
