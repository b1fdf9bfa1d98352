"""TensorBoard helpers: per-layer sharpness scalars and a figure of every activation's shape."""

from __future__ import annotations

from typing import Sequence

import torch
from matplotlib.figure import Figure

from .activations import Sharpenable, sharpen_act

__all__ = ["activation_figure", "log_sharpness", "log_activation_figure"]


@torch.no_grad()
def activation_figure(layers: Sequence[Sharpenable], x_min: float = -0.25, x_max: float = 1.25,
                      points: int = 601, max_cols: int = 4) -> Figure:
    """One panel per activation: its forward curve at the current sharpness and its backward slope.

    Args:
        layers: sharpenable activations, input to output.
        x_min, x_max, points: the pre-activation grid (input units) for a step at 0.5; shifted by
            ``center - 0.5`` for activations with another step position (the sigmoid's is 0).
    Returns:
        a matplotlib ``Figure`` (no pyplot state), e.g. for ``writer.add_figure``.
    """
    if not layers:
        raise ValueError("activation_figure: no layers to plot")
    cols = min(max_cols, len(layers))
    rows = -(-len(layers) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    x = torch.linspace(x_min, x_max, points, dtype=torch.float64)
    for k, act in enumerate(layers):
        ax = fig.add_subplot(rows, cols, k + 1)
        xk = x + (act.center - 0.5)
        with torch.enable_grad():
            xg = xk.clone().requires_grad_(True)
            y = sharpen_act(xg, act.get_sharpness(), act.kind, act.min_width)
            (g,) = torch.autograd.grad(y.sum(), xg)
        ax.plot(xk.numpy(), y.detach().numpy(), color="C0", label="forward")
        ax.plot(xk.numpy(), g.numpy() / max(float(g.max()), 1e-12), color="C1", linestyle="--",
                linewidth=0.8, label="backward (scaled)")
        ax.axvline(act.center, color="k", linewidth=0.5, linestyle=":")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"layer {k} ({act.kind}): s = {act.get_sharpness():.3f}", fontsize=9)
        ax.set_xlabel("pre-activation")
        if k == 0:
            ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


def log_sharpness(writer, layers: Sequence[Sharpenable], step: int, prefix: str = "sharpen") -> None:
    """Write ``{prefix}/layer<k>`` = sharpness of every layer at ``step`` (e.g. the epoch)."""
    for k, act in enumerate(layers):
        writer.add_scalar(f"{prefix}/layer{k}", act.get_sharpness(), step)


def log_activation_figure(writer, layers: Sequence[Sharpenable], step: int, tag: str = "sharpen/activations") -> None:
    """Add :func:`activation_figure` of ``layers`` to TensorBoard under ``tag`` at ``step``."""
    writer.add_figure(tag, activation_figure(layers), step)
