"""Activity regularisers: pure functions of recorded spikes / membranes returning a scalar loss term.

Notation: ``spikes`` is a recorded sequence ``[T, B, N...]`` (time first; ``N...`` are the neuron
dims of one layer, e.g. ``[N]`` or ``[C, H, W]``, flattened to ``M`` neurons). The spike count of
neuron ``i`` on sample ``b`` is ``zeta[b, i] = sum_t spikes[t, b, i]`` (:func:`spike_counts`), in
**spikes per sample** (per window of ``T`` steps); every ``theta`` is in the same unit.

=========================  ==================================================================
function                   value (``relu(z) = max(z, 0)``)
=========================  ==================================================================
upper_rate_penalty         ``1/B sum_b relu(1/M sum_i zeta[b, i] - theta)^p``
lower_rate_penalty         ``1/(B M) sum_b sum_i relu(theta - zeta[b, i])^p``  (``form="per_sample"``)
                           ``1/M sum_i relu(theta - 1/B sum_b zeta[b, i])^p``  (``form="batch_mean"``)
spike_count_penalty        ``1/B sum_b sum_i zeta[b, i]^p``  (L1 for p = 1, squared L2 for p = 2)
voltage_range_penalty      ``mean over [T, B, ...] of relu(v - high)^2 + relu(low - v)^2``
=========================  ==================================================================

The upper bound acts on the population mean of each sample and the lower bound on each neuron's
count in each sample, as in Zenke & Vogels (2021) and Cramer et al. (2022, BrainScaleS-2): a neuron
below ``theta`` on some samples is pushed up on those samples even if it fires on others. The
``batch_mean`` form of the lower bound (a spikegrad option) only asks each neuron's mean over the
batch to reach ``theta``. Gradients reach the network through the surrogate derivative of the spike
function that produced ``spikes``.

The callable classes (:class:`UpperRate`, :class:`LowerRate`, :class:`SpikeCount`,
:class:`VoltageRange`) hold a ``weight`` and the constants, for configs; all share one signature,
``reg(spikes=None, v=None) -> weight * penalty``, so a training loop can call every regulariser
the same way and each one reads the recording it needs.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from . import checks

__all__ = [
    "spike_counts",
    "upper_rate_penalty",
    "lower_rate_penalty",
    "LOWER_FORMS",
    "spike_count_penalty",
    "voltage_range_penalty",
    "Regularizer",
    "UpperRate",
    "LowerRate",
    "SpikeCount",
    "VoltageRange",
]


# ----------------------------------------------------------------------------- validation
def _theta(fn: str, theta: float) -> float:
    return checks.real(fn, "theta", theta, lambda t: 0 <= t < math.inf,
                       "a finite number >= 0 (spikes per sample)")


def _power(fn: str, p: float) -> float:
    return checks.real(fn, "p", p, lambda q: 1 <= q < math.inf,
                       "a finite number >= 1 (1 = L1, 2 = squared L2; p < 1 has an infinite slope at 0)")


def _form(fn: str, form: str) -> str:
    if form not in LOWER_FORMS:
        raise ValueError(f"{fn}: form must be one of {LOWER_FORMS} (per_sample: every sample's count; batch_mean: "
                         f"the count averaged over the batch), got {form!r}")
    return form


def _bounds(fn: str, low: float, high: float) -> tuple[float, float]:
    low = checks.real(fn, "low", low, math.isfinite, "a finite number (threshold units)")
    high = checks.real(fn, "high", high, math.isfinite, "a finite number (threshold units)")
    if not low < high:
        raise ValueError(f"{fn}: need low < high (threshold units), got low={low:g}, high={high:g}")
    return low, high


# ----------------------------------------------------------------------------- functional core
def spike_counts(spikes: Tensor) -> Tensor:
    """Spike count per sample and neuron, ``zeta = spikes.sum(0)``.

    Args:
        spikes: recorded spikes [T, B, N...], floating dtype.
    Returns:
        zeta [B, N...], dtype of ``spikes``, in spikes per sample.
    """
    checks.float_seq("spike_counts", "spikes", spikes, 3, "[T, B, N...]")
    return spikes.sum(0)


def upper_rate_penalty(spikes: Tensor, theta: float, p: float = 2.0) -> Tensor:
    """Population upper bound: ``1/B sum_b relu(1/M sum_i zeta[b, i] - theta)^p``.

    Penalises samples whose mean spike count per neuron exceeds ``theta``; zero while every
    sample's population mean is at most ``theta``.

    Args:
        spikes: recorded spikes [T, B, N...] (``M`` = number of neurons in ``N...``), floating dtype.
        theta: allowed mean count per neuron and sample (spikes per sample), >= 0.
        p: exponent, >= 1.
    Returns:
        0-dim tensor, dtype of ``spikes`` (units: (spikes per sample)^p).
    """
    fn = "upper_rate_penalty"
    theta, p = _theta(fn, theta), _power(fn, p)
    checks.float_seq(fn, "spikes", spikes, 3, "[T, B, N...]")
    pop = spikes.sum(0).flatten(1).mean(1)  # [B] mean count per neuron
    return torch.relu(pop - theta).pow(p).mean()


LOWER_FORMS = ("per_sample", "batch_mean")


def lower_rate_penalty(spikes: Tensor, theta: float, p: float = 2.0, form: str = "per_sample") -> Tensor:
    """Per-neuron lower bound (anti-silence).

    ``form="per_sample"`` (Zenke & Vogels 2021; Cramer et al. 2022):
    ``1/(B M) sum_b sum_i relu(theta - zeta[b, i])^p``, zero once every neuron fires at least
    ``theta`` spikes on every sample. ``form="batch_mean"``: ``1/M sum_i relu(theta - 1/B sum_b
    zeta[b, i])^p``, zero once every neuron's mean count over the batch reaches ``theta``.

    Args:
        spikes: recorded spikes [T, B, N...] (``M`` = number of neurons in ``N...``), floating dtype.
        theta: required count per neuron (spikes per sample), >= 0.
        p: exponent, >= 1.
        form: ``"per_sample"`` or ``"batch_mean"``.
    Returns:
        0-dim tensor, dtype of ``spikes`` (units: (spikes per sample)^p).
    """
    fn = "lower_rate_penalty"
    theta, p, form = _theta(fn, theta), _power(fn, p), _form(fn, form)
    checks.float_seq(fn, "spikes", spikes, 3, "[T, B, N...]")
    counts = spikes.sum(0)  # [B, N...] count of each neuron on each sample
    if form == "batch_mean":
        counts = counts.mean(0)  # [N...] batch-mean count of each neuron
    return torch.relu(theta - counts).pow(p).mean()


def spike_count_penalty(spikes: Tensor, p: float = 1.0) -> Tensor:
    """Activity cost: ``1/B sum_b sum_i zeta[b, i]^p`` (L1 for ``p = 1``, squared L2 for ``p = 2``).

    Args:
        spikes: recorded spikes [T, B, N...], floating dtype, non-negative.
        p: exponent, >= 1.
    Returns:
        0-dim tensor, dtype of ``spikes`` (units: (spikes per sample)^p summed over neurons).
    """
    p = _power("spike_count_penalty", p)
    checks.float_seq("spike_count_penalty", "spikes", spikes, 3, "[T, B, N...]")
    return spikes.sum(0).flatten(1).pow(p).sum(1).mean()  # no abs(): keeps d/dzeta = 1 at 0 for p = 1


def voltage_range_penalty(v: Tensor, low: float = -1.0, high: float = 1.0) -> Tensor:
    """Soft membrane range: ``mean over all elements of relu(v - high)^2 + relu(low - v)^2``.

    Zero while every recorded membrane value lies in ``[low, high]``.

    Args:
        v: recorded membrane potentials [T, B, ...] in threshold units, floating dtype.
        low: lower edge of the allowed range (threshold units).
        high: upper edge of the allowed range (threshold units), > low.
    Returns:
        0-dim tensor, dtype of ``v`` (units: threshold units squared).
    """
    low, high = _bounds("voltage_range_penalty", low, high)
    checks.float_seq("voltage_range_penalty", "v", v, 2, "[T, B, ...]")
    return (torch.relu(v - high).square() + torch.relu(low - v).square()).mean()


# ----------------------------------------------------------------------------- callable classes
class Regularizer:
    """Base of the config-facing regularisers: ``reg(spikes=None, v=None) -> weight * penalty``.

    ``spikes`` / ``v`` may be one recorded tensor or a sequence of them (one per layer); the
    penalty is then summed over the layers. Each subclass reads only the recording it needs
    (``needs`` is ``"spikes"`` or ``"v"``) and ignores the other, so a loop can call every
    regulariser alike: ``loss = loss + sum(r(spikes=s, v=v) for r in regularizers)``.
    """

    needs: str = "spikes"

    def __init__(self, weight: float):
        self.weight = checks.real(type(self).__name__, "weight", weight,
                                  lambda w: 0 <= w < math.inf, "a finite number >= 0")

    def penalty(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, spikes: Tensor | Sequence[Tensor] | None = None,
                 v: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        rec = spikes if self.needs == "spikes" else v
        name = type(self).__name__
        if rec is None:
            raise ValueError(f"{name} needs the recorded {self.needs}: call it as {name}(...)({self.needs}=...)")
        layers = [rec] if isinstance(rec, Tensor) else list(rec)
        if not layers:
            hint = (" (a spikegrad model built with record_v=False records none: set model.record_v=true)"
                    if self.needs == "v" else "")
            raise ValueError(f"{name}: got an empty sequence for {self.needs}; pass at least one tensor{hint}")
        total = self.penalty(layers[0])
        for t in layers[1:]:
            total = total + self.penalty(t)
        return self.weight * total

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class UpperRate(Regularizer):
    """``weight * upper_rate_penalty(spikes, theta, p)``; see :func:`upper_rate_penalty`."""

    def __init__(self, weight: float, theta: float, p: float = 2.0):
        super().__init__(weight)
        self.theta, self.p = _theta("UpperRate", theta), _power("UpperRate", p)

    def penalty(self, t: Tensor) -> Tensor:
        return upper_rate_penalty(t, self.theta, self.p)


class LowerRate(Regularizer):
    """``weight * lower_rate_penalty(spikes, theta, p, form)``; see :func:`lower_rate_penalty`."""

    def __init__(self, weight: float, theta: float, p: float = 2.0, form: str = "per_sample"):
        super().__init__(weight)
        self.theta, self.p = _theta("LowerRate", theta), _power("LowerRate", p)
        self.form = _form("LowerRate", form)

    def penalty(self, t: Tensor) -> Tensor:
        return lower_rate_penalty(t, self.theta, self.p, self.form)


class SpikeCount(Regularizer):
    """``weight * spike_count_penalty(spikes, p)``; see :func:`spike_count_penalty`."""

    def __init__(self, weight: float, p: float = 1.0):
        super().__init__(weight)
        self.p = _power("SpikeCount", p)

    def penalty(self, t: Tensor) -> Tensor:
        return spike_count_penalty(t, self.p)


class VoltageRange(Regularizer):
    """``weight * voltage_range_penalty(v, low, high)``; see :func:`voltage_range_penalty`."""

    needs = "v"

    def __init__(self, weight: float, low: float = -1.0, high: float = 1.0):
        super().__init__(weight)
        self.low, self.high = _bounds("VoltageRange", low, high)

    def penalty(self, t: Tensor) -> Tensor:
        return voltage_range_penalty(t, self.low, self.high)
