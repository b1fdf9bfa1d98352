"""Matplotlib figures for TensorBoard (``SummaryWriter.add_figure``): rasters and traces."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = ["raster_figure", "traces_figure"]


def raster_figure(spikes: Tensor, title: str = "", max_neurons: int = 256):
    """Spike raster of one sample: ``spikes [T, N]`` -> a figure (time in steps vs neuron index)."""
    s = spikes.detach().float().cpu().flatten(1)[:, :max_neurons]
    t, n = s.nonzero(as_tuple=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(t.numpy(), n.numpy(), s=4, marker="|", color="k")
    ax.set_xlim(-0.5, s.shape[0] - 0.5)
    ax.set_ylim(-0.5, s.shape[1] - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    ax.set_title(f"{title} ({int(s.sum())} spikes)")
    fig.tight_layout()
    return fig


def traces_figure(v: Tensor, title: str = "", threshold: float | None = 1.0, max_traces: int = 8):
    """Membrane traces of one sample: ``v [T, N]`` (threshold units) -> a figure of the first traces."""
    x = v.detach().float().cpu().flatten(1)[:, :max_traces]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x.numpy(), linewidth=1)
    if threshold is not None:
        ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label="threshold")
        ax.legend(loc="upper right")
    ax.set_xlabel("time step")
    ax.set_ylabel("membrane (threshold units)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
