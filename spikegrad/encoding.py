"""Input encoders: intensities in [0, 1] -> time-first input sequences ``[T, B, ...]``.

Functional core (pure functions of ``x``) and thin parameter-free ``nn.Module`` wrappers usable as
Hydra ``_target_`` classes. Every encoder keeps the trailing shape of ``x`` (``[B, 1, 16, 16]`` becomes
``[T, B, 1, 16, 16]``; nothing is flattened) and returns the dtype of ``x``.

* :func:`latency_encode` -- time-to-first-spike: each pixel fires at most once, brighter earlier.
  :func:`latency_times` returns the same spike times as numbers (``inf`` = silent).
* :func:`rate_encode` (alias ``poisson_encode``) -- Bernoulli spikes with probability ``x * max_rate``.
* :func:`current_encode` -- the analog intensity ``gain * x`` fed as a constant current at every step.
* :class:`TimeFirst` -- sequences that are already spikes or currents (temporal data sets, batches
  ``[B, T, ...]``) made time-first.

Time is counted in steps (``T`` steps, ``tau`` in steps, rates in spikes/step).
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
from torch import Tensor, nn

from . import checks
from .kernels.events import SpikeTimes

__all__ = [
    "latency_times",
    "latency_encode",
    "rate_encode",
    "poisson_encode",
    "current_encode",
    "LatencyEncoder",
    "RateEncoder",
    "CurrentEncoder",
    "TimeFirst",
]

LatencyMethod = Literal["log", "linear"]
BINNINGS = ("round", "floor")
_METHODS = ("log", "linear")


# ----------------------------------------------------------------------------- validation
def _check_x(fn: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor of intensities in [0, 1], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: x must be a floating-point tensor of intensities in [0, 1], got {x.dtype}; "
                        "normalise images to [0, 1] first, e.g. x = images.to(torch.float32) / 255")
    if torch.compiler.is_compiling():  # value checks need a host sync; skip them inside compiled graphs
        return
    if not x.numel():
        return
    lo, hi = (v.item() for v in torch.aminmax(x))  # one pass; NaN gives NaN, which fails the test
    if not (lo >= 0 and hi <= 1):
        raise ValueError(f"{fn}: x must hold intensities in [0, 1], got values in [{lo:g}, {hi:g}] (or NaN); "
                         "normalise images to [0, 1] first, e.g. x = images / 255")


def _check_T(fn: str, T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        raise TypeError(f"{fn}: T (number of steps) must be a positive int, got {T!r} ({type(T).__name__})")
    return checks.positive_int(fn, "T (number of steps)", T)


def _real(fn: str, name: str, value: float, ok: bool, rule: str) -> float:
    """:func:`spikegrad.checks.real` with the rule already evaluated (``ok``)."""
    return checks.real(fn, name, value, lambda _: ok, rule)


def _check_latency_args(fn: str, method: str, threshold: float, tau: float) -> tuple[float, float]:
    checks.one_of(fn, "method", method, _METHODS)
    ok = isinstance(threshold, numbers.Real) and 0 <= threshold < 1
    threshold = _real(fn, "threshold", threshold, ok,
                      "a number in [0, 1) (intensity at or below which pixels stay silent)")
    ok = isinstance(tau, numbers.Real) and 0 < tau < math.inf
    tau = _real(fn, "tau", tau, ok, "a finite number > 0 (RC time constant in steps)")
    return threshold, tau


def _work_dtype(x: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64 (spike times are computed here)."""
    return torch.promote_types(x.dtype, torch.float32)


# ----------------------------------------------------------------------------- latency
def latency_times(
    x: Tensor,
    T: int,
    method: LatencyMethod = "log",
    threshold: float = 0.2,
    tau: float = 5.0,
    normalize: bool = True,
    clip: bool = False,
    binning: str = "round",
) -> Tensor:
    """Time-to-first-spike of every pixel, in whole steps (``inf`` = silent).

    A pixel fires iff ``x > threshold`` (strictly); ``x <= threshold`` is always silent. Its
    continuous firing time ``t`` (steps) is

    * ``method="log"`` (RC charging, as in snnTorch ``spikegen.latency`` and the BrainScaleS-2
      latency code of Cramer et al. 2022): a membrane ``v(t) = x (1 - exp(-t / tau))`` driven by the
      constant input ``x`` crosses ``threshold`` at ``t = tau * ln(x / (x - threshold))``.
      With ``normalize=True`` this is shifted by its value at ``x = 1`` so the brightest possible
      pixel fires at step 0::

          t = tau * ln(x * (1 - threshold) / (x - threshold))        # normalize=True
          t = tau * ln(x / (x - threshold))                          # normalize=False

      ``t`` grows without bound as ``x`` -> ``threshold``, so dim pixels can fall past the window.
      The shift is ``tau * ln(1 - threshold)`` steps (-1.8 steps for ``tau = 8``, ``threshold =
      0.2``): every pixel fires that much earlier than in the unnormalised code of the
      BrainScaleS-2 software model (hxtorch's ``PixelsToSpikeTimes``), which ``normalize=False``
      with ``binning="floor"`` reproduces.
    * ``method="linear"``: with ``x' = (x - threshold) / (1 - threshold)`` in (0, 1]::

          t = (T - 1) * (1 - x')

      which maps (threshold, 1] onto [0, T - 1) (``tau`` and ``normalize`` are not used: x = 1
      already fires at step 0 and every pixel above threshold fires inside the window).

    The spike step is ``k = round(t)`` (``binning="round"``, ``torch.round``: half to even) or
    ``k = floor(t)`` (``binning="floor"``: the bin that contains ``t``, as the BrainScaleS-2 software
    model bins spike times). If ``k > T - 1`` the pixel is silent (``clip=False``) or fires at the
    last step ``T - 1`` (``clip=True``).

    Args:
        x: intensities in [0, 1], shape [B, ...], floating dtype.
        T: number of steps (window length).
        method: ``"log"`` or ``"linear"``.
        threshold: intensity at or below which pixels stay silent, in [0, 1).
        tau: RC time constant of ``method="log"``, in steps (> 0).
        normalize: ``method="log"`` only: shift times so ``x == 1`` fires at step 0.
        clip: fire late pixels at step ``T - 1`` instead of dropping them.
        binning: ``"round"`` (nearest step) or ``"floor"`` (the step whose bin contains the time).
    Returns:
        spike steps, shape of ``x``, integer values in [0, T - 1] or ``inf`` for silent pixels;
        dtype float32 (float64 if ``x`` is float64). Not differentiable (pure data transform).
    """
    T = _check_T("latency_times", T)
    threshold, tau = _check_latency_args("latency_times", method, threshold, tau)
    checks.one_of("latency_times", "binning", binning, BINNINGS)
    _check_x("latency_times", x)
    xw = x.detach().to(_work_dtype(x))
    fires = xw > threshold
    xs = torch.where(fires, xw, torch.ones_like(xw))  # any value > threshold keeps the math finite
    if method == "log":
        # ln(x / (x - th)) = -log1p(-th / x); normalised: - ln(1 / (1 - th)) = + log1p(-th)
        t = -tau * torch.log1p(-threshold / xs)
        if normalize:
            t = t + tau * math.log1p(-threshold)
    else:
        t = (T - 1) * (1 - (xs - threshold) / (1 - threshold))
    k = (torch.round(t) if binning == "round" else torch.floor(t)).clamp_min(0)  # clamp: -0.0 / noise at x == 1
    if clip:
        k = k.clamp_max(T - 1)
    else:
        fires = fires & (k <= T - 1)
    return torch.where(fires, k, torch.full_like(k, math.inf))


def latency_encode(
    x: Tensor,
    T: int,
    method: LatencyMethod = "log",
    threshold: float = 0.2,
    tau: float = 5.0,
    normalize: bool = True,
    clip: bool = False,
    binning: str = "round",
) -> Tensor:
    """Time-to-first-spike (latency) code: each pixel fires at most once, brighter pixels earlier.

    ``spikes[t] == 1`` exactly where ``latency_times(x, ...) == t``; see :func:`latency_times` for
    the closed-form spike times and the meaning of every argument.

    Args:
        x: intensities in [0, 1], shape [B, ...], floating dtype.
        T: number of steps.
    Returns:
        spikes [T, B, ...], dtype of ``x``, values in {0, 1}, at most one spike per pixel.
    """
    times = latency_times(x, T, method, threshold, tau, normalize, clip, binning).reshape(-1)
    spikes = torch.zeros((int(T), *x.shape), device=x.device, dtype=x.dtype)  # [T, B, ...]
    fire = (times < T).nonzero().squeeze(1)                    # the pixels that fire (inf: never)
    # one write per spike, not per step and pixel: flat index t * pixels + pixel
    spikes.view(-1).index_fill_(0, times[fire].long().mul_(times.numel()).add_(fire), 1)
    return spikes


# ----------------------------------------------------------------------------- rate / current
def rate_encode(x: Tensor, T: int, max_rate: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli (discrete-time Poisson) spike trains from intensities.

    ``spikes[t, ...] ~ Bernoulli(p)`` independently for every step and pixel, with
    ``p = x * max_rate``: implemented as ``u < p`` with ``u ~ U[0, 1)`` drawn in float32 (float64
    for float64 ``x``), so ``p = 0`` never and ``p = 1`` always fires. The same ``generator`` state
    gives identical spikes.

    Args:
        x: intensities in [0, 1], shape [B, ...], floating dtype.
        T: number of steps.
        max_rate: spike probability per step at ``x == 1`` (spikes/step), in [0, 1].
        generator: optional ``torch.Generator`` on the device of ``x``.
    Returns:
        spikes [T, B, ...], dtype of ``x``, values in {0, 1}; expected rate ``x * max_rate`` per step.
    """
    T = _check_T("rate_encode", T)
    max_rate = _real("rate_encode", "max_rate", max_rate,
                     isinstance(max_rate, numbers.Real) and 0 <= max_rate <= 1, "a number in [0, 1] (spikes/step)")
    _check_x("rate_encode", x)
    work = _work_dtype(x)
    p = x.detach().to(work) * max_rate
    u = torch.rand((T, *x.shape), generator=generator, dtype=work, device=x.device)  # [T, B, ...]
    return (u < p).to(x.dtype)


poisson_encode = rate_encode


def current_encode(x: Tensor, T: int, gain: float = 1.0) -> Tensor:
    """Analog input: the constant current ``gain * x`` repeated at each of the ``T`` steps.

    Args:
        x: intensities in [0, 1], shape [B, ...], floating dtype.
        T: number of steps.
        gain: input current per unit intensity (threshold units per step).
    Returns:
        currents [T, B, ...], dtype of ``x`` (not binary), a contiguous copy (safe to modify).
        Differentiable with respect to ``x``.
    """
    T = _check_T("current_encode", T)
    gain = _real("current_encode", "gain", gain,
                 isinstance(gain, numbers.Real) and math.isfinite(gain), "a finite number")
    _check_x("current_encode", x)
    return (x * gain).unsqueeze(0).expand(T, *x.shape).clone()  # [T, B, ...]


# ----------------------------------------------------------------------------- modules
class LatencyEncoder(nn.Module):
    """Module form of :func:`latency_encode` (no parameters); ``forward(x [B, ...]) -> [T, B, ...]``."""

    def __init__(self, T: int, method: LatencyMethod = "log", threshold: float = 0.2, tau: float = 5.0,
                 normalize: bool = True, clip: bool = False, binning: str = "round"):
        super().__init__()
        self.T = _check_T("LatencyEncoder", T)
        self.binning = checks.one_of("LatencyEncoder", "binning", binning, BINNINGS)
        self.threshold, self.tau = _check_latency_args("LatencyEncoder", method, threshold, tau)
        self.method = method
        self.normalize = bool(normalize)
        self.clip = bool(clip)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``generator`` is accepted for a uniform encoder interface and ignored (deterministic)."""
        return latency_encode(x, self.T, self.method, self.threshold, self.tau, self.normalize, self.clip,
                              self.binning)

    def times(self, x: Tensor) -> SpikeTimes:
        """The same spikes as :meth:`forward` as one spike time per pixel (:class:`SpikeTimes`, pixels
        flattened to ``[B, N]``): ``SpikingMLP`` runs them without a dense ``[T, B, N]`` tensor."""
        times = latency_times(x, self.T, self.method, self.threshold, self.tau, self.normalize, self.clip,
                              self.binning)
        return SpikeTimes(times.flatten(1), self.T)

    def extra_repr(self) -> str:
        return (f"T={self.T}, method={self.method!r}, threshold={self.threshold:g}, tau={self.tau:g}, "
                f"normalize={self.normalize}, clip={self.clip}, binning={self.binning!r}")


class RateEncoder(nn.Module):
    """Module form of :func:`rate_encode` (no parameters); ``forward(x [B, ...], generator) -> [T, B, ...]``."""

    def __init__(self, T: int, max_rate: float = 1.0):
        super().__init__()
        self.T = _check_T("RateEncoder", T)
        self.max_rate = _real("RateEncoder", "max_rate", max_rate,
                              isinstance(max_rate, numbers.Real) and 0 <= max_rate <= 1,
                              "a number in [0, 1] (spikes/step)")

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return rate_encode(x, self.T, self.max_rate, generator)

    def extra_repr(self) -> str:
        return f"T={self.T}, max_rate={self.max_rate:g}"


class CurrentEncoder(nn.Module):
    """Module form of :func:`current_encode` (no parameters); ``forward(x [B, ...]) -> [T, B, ...]``."""

    def __init__(self, T: int, gain: float = 1.0):
        super().__init__()
        self.T = _check_T("CurrentEncoder", T)
        self.gain = _real("CurrentEncoder", "gain", gain,
                          isinstance(gain, numbers.Real) and math.isfinite(gain), "a finite number")

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``generator`` is accepted for a uniform encoder interface and ignored (deterministic)."""
        return current_encode(x, self.T, self.gain)

    def extra_repr(self) -> str:
        return f"T={self.T}, gain={self.gain:g}"


class TimeFirst(nn.Module):
    """Batches of sequences ``x [B, T, ...]`` (as the temporal data loaders yield them) ->
    time-first ``[T, B, ...]`` (contiguous, the dtype of ``x``); no parameters.

    Args:
        T: the number of steps the sequences must have (a clear error otherwise); None: any.
    """

    def __init__(self, T: int | None = None):
        super().__init__()
        self.T = None if T is None else _check_T("TimeFirst", T)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``generator`` is accepted for a uniform encoder interface and ignored."""
        if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
            got = f"shape {tuple(x.shape)}, {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"TimeFirst: x must be a floating-point batch of sequences [B, T, ...], got {got}; "
                             "use encoding=sequence only with temporal data (data=shd, ssc, smnist, randman)")
        if self.T is not None and x.shape[1] != self.T:
            raise ValueError(f"TimeFirst: the sequences have {x.shape[1]} steps (x {tuple(x.shape)}) but T={self.T}; "
                             "give the data as many steps as the run (T=N sets both in the temporal experiments)")
        return x.transpose(0, 1).contiguous()

    def extra_repr(self) -> str:
        return f"T={self.T}"
