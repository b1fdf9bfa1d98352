"""Readout losses: each maps a model output and labels to a scalar, and predicts classes.

All losses have ``__call__(output, y) -> 0-dim tensor`` and ``predict(output) -> [B] int64``, where
``output`` is a :class:`~spikegrad.models.SpikingOutput` (its ``readout [T, B, C]``) or, for
conventional networks, logits ``[B, C]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .models import SpikingOutput

__all__ = ["CrossEntropy", "MaxOverTime", "MeanOverTime", "SumOverTime", "LastStep", "SpikeCount", "FirstSpike",
           "first_spike_steps"]


def _readout(output) -> Tensor:
    if isinstance(output, SpikingOutput):
        return output.readout
    if isinstance(output, Tensor) and output.dim() == 3:
        return output
    raise TypeError("this loss expects a SpikingOutput or a readout tensor [T, B, C], "
                    f"got {type(output).__name__}{'' if not isinstance(output, Tensor) else tuple(output.shape)}")


def _check_labels(scores: Tensor, y: Tensor) -> None:
    if y.dim() != 1 or y.shape[0] != scores.shape[0]:
        raise ValueError(f"labels must have shape [B] = [{scores.shape[0]}], got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices (int64), got {y.dtype}; convert them with y.long()")
    n_classes = scores.shape[-1]
    outside = (y < 0) | (y >= n_classes)
    if bool(outside.any()):
        bad = int(y[outside][0])
        raise ValueError(f"label {bad} is outside the {n_classes} classes of the model output (0..{n_classes - 1}); "
                         "check the labels of the data set or give the model one output per class "
                         f"(model.sizes: last entry >= {bad + 1})")


class CrossEntropy:
    """Softmax cross-entropy on logits ``[B, C]`` (conventional networks)."""

    def logits(self, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.dim() != 2:
            raise TypeError("CrossEntropy expects logits [B, C]; for spiking models use MaxOverTime, "
                            "SpikeCount or FirstSpike")
        return output

    def __call__(self, output, y: Tensor) -> Tensor:
        logits = self.logits(output)
        _check_labels(logits, y)
        return F.cross_entropy(logits.float(), y)

    def predict(self, output) -> Tensor:
        return self.logits(output).argmax(-1)


class _ScaledReadout(CrossEntropy):
    """Cross-entropy on ``scale`` times a statistic of the readout ``[T, B, C]`` over time."""

    def __init__(self, scale: float = 1.0):
        if not scale > 0:
            raise ValueError(f"{type(self).__name__}: scale must be > 0, got {scale}")
        self.scale = float(scale)


class MaxOverTime(_ScaledReadout):
    """Cross-entropy on the maximum over time of the readout membrane (as on BrainScaleS-2).

    ``logits[b, c] = scale * max_t readout[t, b, c]``; ``scale`` (inverse temperature) multiplies
    membranes in threshold units.
    """

    def logits(self, output) -> Tensor:
        return self.scale * _readout(output).amax(0)


class MeanOverTime(_ScaledReadout):
    """Cross-entropy on the mean over time of the readout membrane:
    ``logits[b, c] = scale * mean_t readout[t, b, c]`` (threshold units)."""

    def logits(self, output) -> Tensor:
        return self.scale * _readout(output).mean(0)


class SumOverTime(_ScaledReadout):
    """Cross-entropy on the sum over time of the readout membrane:
    ``logits[b, c] = scale * sum_t readout[t, b, c]`` (as the membrane integral of Cramer et al. 2020, SHD)."""

    def logits(self, output) -> Tensor:
        return self.scale * _readout(output).sum(0)


class LastStep(_ScaledReadout):
    """Cross-entropy on the readout membrane at the last step: ``logits[b, c] = scale * readout[T-1, b, c]``
    (the readout of sequential MNIST in recurrent networks that see the whole sequence first)."""

    def logits(self, output) -> Tensor:
        return self.scale * _readout(output)[-1]


class SpikeCount(_ScaledReadout):
    """Cross-entropy on output spike counts (needs a spiking readout): ``logits = scale * sum_t s``."""

    def logits(self, output) -> Tensor:
        return self.scale * _readout(output).sum(0)


def first_spike_steps(spikes: Tensor) -> Tensor:
    """Differentiable number of steps before the first spike: ``sum_t prod_{t' <= t} (1 - s[t'])``.

    Args:
        spikes: ``[T, B, ...]`` in {0, 1} (with surrogate gradients).
    Returns:
        ``[B, ...]`` first-spike step (0 = spike at step 0); ``T`` for a neuron that never spikes.
    """
    return torch.cumprod(1 - spikes, dim=0).sum(0)


class FirstSpike(_ScaledReadout):
    """Time-to-first-spike loss (needs a spiking readout): the correct class should fire first.

    ``logits = -scale * first_spike_steps(readout)``: cross-entropy over negative first-spike steps,
    so gradients move the correct output's first spike earlier and the others' later.
    """

    def logits(self, output) -> Tensor:
        return -self.scale * first_spike_steps(_readout(output))
