"""Randman: classes of random smooth manifolds whose points are spike-time patterns.

The task of Zenke & Vogels (2021), "The remarkable robustness of surrogate gradient learning for
instilling complex function in spiking neural networks" (Neural Computation 33(4)); reference
generator: github.com/fzenke/randman, with the spiking data set of its example notebook and of
``stork.datasets.make_tempo_randman``. Reimplemented here from the description of the algorithm.

Each class owns ``spikes_per_unit`` random manifolds of dimension ``D = dim_manifold`` embedded in
``U = n_units`` dimensions. Embedding coordinate ``u`` of a manifold is a product over the ``D``
intrinsic axes of random 1-D functions, each a sum of ``F`` sine terms (:func:`eval_manifold`)::

    f_ud(x) = sum_{k=0}^{F-1} a_udk * s_k * sin(2 pi (k * w_udk * x + phi_udk))
    s_k = 1 / ((k + 1)^alpha + 1)            (power spectrum; larger alpha: smoother manifold)
    F = min(ceil(precision^(-1 / alpha)), 1000),  precision = 1e-3

with amplitudes ``a``, frequency factors ``w`` and phases ``phi`` uniform in [0, 1) and the
constant ``k = 0`` term's amplitude set to 0. A sample of class ``c`` draws intrinsic coordinates
``x`` uniform in ``[0, 1)^D``; every manifold of the class maps them to ``U`` values, min-max
normalised per unit over the class's samples to spike times in [0, 1) (:func:`normalize_times`)
and placed in the first ``step_frac`` of the ``n_steps`` steps. Unit ``u`` fires once per
manifold: exactly ``spikes_per_unit`` spikes per unit and sample, all repetitions sharing that one
window (as in the reference, which concatenates their events). Spike counts are equal in every
sample; the class is carried only by the timing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from spikegrad.data import is_int
from .events import EventSamples, event_loaders

__all__ = ["RandomManifold", "RandmanData", "eval_manifold", "make_randman", "n_frequencies",
           "normalize_times", "power_spectrum", "random_manifold", "spike_steps"]

PRECISION = 1e-3       # smallest spectrum weight kept: sets the number of sine terms F
MAX_FREQUENCIES = 1000  # upper bound on F (reached for alpha <= 1)
TIME_EPS = 1e-7        # added to the range in normalize_times, so times stay below 1
_CHUNK = 1 << 22       # elements of the [samples, U, D, F] sine tensor evaluated at once


class RandomManifold(NamedTuple):
    """Parameters of one random manifold, float64.

    Attributes:
        amplitude: ``a`` [U, D, F] in [0, 1), with ``amplitude[..., 0] == 0`` (no constant term).
        frequency: ``w`` [U, D, F] in [0, 1); term ``k`` oscillates ``k * w`` times per unit of x.
        phase: ``phi`` [U, D, F] in [0, 1) (cycles).
        spectrum: ``s`` [F], see :func:`power_spectrum`.
    """

    amplitude: Tensor
    frequency: Tensor
    phase: Tensor
    spectrum: Tensor


def n_frequencies(alpha: float, precision: float = PRECISION, max_frequencies: int = MAX_FREQUENCIES) -> int:
    """Number of sine terms ``F = min(ceil(precision^(-1/alpha)), max_frequencies)`` (``alpha == 0``:
    ``max_frequencies``): the terms whose weight ``~ k^-alpha`` is still above ``precision``."""
    _check_alpha(alpha)
    if alpha == 0:
        return int(max_frequencies)
    return int(min(math.ceil(precision ** (-1.0 / alpha)), max_frequencies))


def power_spectrum(alpha: float, n: int) -> Tensor:
    """Weights ``s_k = 1 / ((k + 1)^alpha + 1)`` of the sine terms ``k = 0 .. n - 1``, float64 [n]."""
    _check_alpha(alpha)
    k = torch.arange(n, dtype=torch.float64)
    return 1.0 / ((k + 1).pow(float(alpha)) + 1.0)


def random_manifold(n_units: int, dim_manifold: int, alpha: float, generator: torch.Generator) -> RandomManifold:
    """Draws one manifold: amplitudes, frequencies and phases uniform in [0, 1).

    Args:
        n_units: embedding dimension ``U`` (input units).
        dim_manifold: intrinsic dimension ``D``.
        alpha: spectrum exponent (>= 0).
        generator: source of all random numbers (one ``[3, U, D, F]`` float64 draw).
    Returns:
        :class:`RandomManifold` with ``F = n_frequencies(alpha)`` terms.
    """
    f = n_frequencies(alpha)
    amplitude, frequency, phase = torch.rand(3, n_units, dim_manifold, f, dtype=torch.float64,
                                             generator=generator)
    amplitude[..., 0] = 0.0  # the k = 0 term is a constant offset; the reference drops it
    return RandomManifold(amplitude, frequency, phase, power_spectrum(alpha, f))


def eval_manifold(manifold: RandomManifold, coords: Tensor) -> Tensor:
    """Embedding coordinates of points given by their intrinsic coordinates.

    Computes ``y[n, u] = prod_d sum_k a[u, d, k] s[k] sin(2 pi (k w[u, d, k] x[n, d] + phi[u, d, k]))``
    in float64, in chunks of samples so the sine tensor stays near 32 MB.

    Args:
        manifold: a :class:`RandomManifold` of shape ``[U, D, F]``.
        coords: intrinsic coordinates ``x`` [N, D] (the manifold is defined on ``[0, 1)^D``).
    Returns:
        values ``y`` float64 [N, U] (not normalised).
    """
    n_units, dim, f = manifold.amplitude.shape
    if coords.dim() != 2 or coords.shape[1] != dim:
        raise ValueError(f"eval_manifold: coords must be [N, {dim}] (one row of intrinsic coordinates per "
                         f"point), got shape {tuple(coords.shape)}")
    coords = coords.to(torch.float64)
    weight = manifold.amplitude * manifold.spectrum                       # [U, D, F]
    rate = manifold.frequency * torch.arange(f, dtype=torch.float64)      # [U, D, F], cycles per unit x
    chunk = max(1, _CHUNK // max(1, n_units * dim * f))
    out = []
    for x in coords.split(chunk):
        cycles = x[:, None, :, None] * rate + manifold.phase              # [n, U, D, F]
        per_axis = (weight * torch.sin(2 * math.pi * cycles)).sum(-1)     # [n, U, D]
        out.append(per_axis.prod(-1))                                     # [n, U]
    return torch.cat(out) if out else coords.new_zeros(0, n_units)


def normalize_times(values: Tensor, eps: float = TIME_EPS) -> Tensor:
    """Min-max normalisation per unit over samples: ``(y - min) / (max - min + eps)``.

    Args:
        values: [N, U], one manifold's values for the ``N`` samples of a class.
    Returns:
        spike times [N, U] in [0, 1) (fraction of the trial), dtype of ``values``.
    """
    lo, hi = values.min(0).values, values.max(0).values
    return (values - lo) / (hi - lo + eps)


def spike_steps(times: Tensor, n_steps: int, step_frac: float = 1.0) -> Tensor:
    """Time steps of spike times: ``min(floor(t * step_frac * n_steps), n_steps - 1)``, int64.

    Args:
        times: spike times [...] in [0, 1) (fractions of the spiking window).
        n_steps: steps ``T`` per sample.
        step_frac: fraction of the ``T`` steps, from the start, that the window covers.
    """
    return (times * step_frac * n_steps).floor().to(torch.int64).clamp_(0, n_steps - 1)


def make_randman(n_classes: int = 10, n_units: int = 20, n_steps: int = 100, dim_manifold: int = 1,
                 alpha: float = 1.0, spikes_per_unit: int = 1, samples_per_class: int = 1000,
                 seed: int = 0, step_frac: float = 1.0) -> EventSamples:
    """Generates the Randman spike-timing data set.

    All random numbers come from one ``torch.Generator`` seeded by ``seed``: first the
    ``n_classes * spikes_per_unit`` manifolds (class by class), then each class's intrinsic
    coordinates, so the manifolds of a seed do not depend on ``samples_per_class``.

    Args:
        n_classes: classes (one set of manifolds each).
        n_units: input units ``U`` (embedding dimension).
        n_steps: steps ``T`` per sample.
        dim_manifold: intrinsic dimension ``D`` of the manifolds.
        alpha: spectrum exponent (>= 0; larger: smoother manifolds, fewer sine terms).
        spikes_per_unit: spikes of every unit in every sample (one manifold per spike).
        samples_per_class: samples of each class.
        seed: generation seed (>= 0).
        step_frac: fraction of the ``n_steps`` steps, from the start, that holds the spikes
            (in (0, 1]; the stork tutorial uses 0.5, the rest of the window stays silent).
    Returns:
        :class:`EventSamples` of ``N = n_classes * samples_per_class`` samples ordered class by
        class (labels ``0, 0, ..., 1, ...``), each with ``spikes_per_unit * n_units`` events.
    """
    _check_generator_args(n_classes, n_units, n_steps, dim_manifold, alpha, spikes_per_unit,
                          samples_per_class, seed, step_frac)
    gen = torch.Generator().manual_seed(seed)
    manifolds = [[random_manifold(n_units, dim_manifold, alpha, gen) for _ in range(spikes_per_unit)]
                 for _ in range(n_classes)]
    steps = []
    for class_manifolds in manifolds:
        coords = torch.rand(samples_per_class, dim_manifold, dtype=torch.float64, generator=gen)  # [S, D]
        times = [normalize_times(eval_manifold(m, coords)) for m in class_manifolds]         # R x [S, U]
        steps.append(spike_steps(torch.stack(times, 1), n_steps, step_frac))               # [S, R, U]
    steps = torch.cat(steps)                                                               # [N, R, U]
    n, per_sample = steps.shape[0], spikes_per_unit * n_units
    units = torch.arange(n_units).repeat(n * spikes_per_unit)                              # [N * R * U]
    labels = torch.arange(n_classes).repeat_interleave(samples_per_class)
    offsets = torch.arange(n + 1, dtype=torch.int64) * per_sample
    return EventSamples(steps.reshape(-1), units, offsets, labels, n_steps, n_units)


@dataclass
class RandmanData:
    """Randman settings for Hydra (``_target_: spikegrad.temporal.randman.RandmanData``).

    The data depend only on the generation fields and ``seed`` (not on the training seed): the
    samples come from :func:`make_randman`, and a permutation drawn from ``seed`` splits them into
    ``train_fraction`` / ``val_fraction`` / the rest (test), so every training seed sees the same
    test set. ``.loaders(seed)`` yields batch-first ``(x [B, n_steps, n_units] float32 spike counts,
    y [B] int64)``; ``n_units`` and ``n_classes`` size the model (``${data.n_units}``).
    """

    n_classes: int = 10
    n_units: int = 20
    n_steps: int = 100
    step_frac: float = 1.0
    dim_manifold: int = 1
    alpha: float = 1.0
    spikes_per_unit: int = 1
    samples_per_class: int = 1000
    seed: int = 0
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    batch_size: int = 250
    eval_batch_size: int = 1000
    drop_last: bool = False

    def __post_init__(self) -> None:
        _check_generator_args(self.n_classes, self.n_units, self.n_steps, self.dim_manifold, self.alpha,
                              self.spikes_per_unit, self.samples_per_class, self.seed, self.step_frac)
        self.split_sizes()  # checks the fractions
        for arg in ("batch_size", "eval_batch_size"):
            v = getattr(self, arg)
            if not is_int(v) or v < 1:
                raise ValueError(f"RandmanData: {arg} must be an int >= 1 (samples), got {v!r}")

    def split_sizes(self) -> tuple[int, int, int]:
        """``(n_train, n_val, n_test)``: rounded fractions of the ``n_classes * samples_per_class`` samples."""
        n = self.n_classes * self.samples_per_class
        tf, vf = self.train_fraction, self.val_fraction
        if not isinstance(tf, (int, float)) or not isinstance(vf, (int, float)) or not (0 < tf < 1) \
                or not (0 <= vf < 1) or tf + vf >= 1:
            raise ValueError(f"RandmanData: need 0 < train_fraction < 1, 0 <= val_fraction < 1 and "
                             f"train_fraction + val_fraction < 1 (the rest is the test set), got "
                             f"train_fraction={tf!r}, val_fraction={vf!r}")
        n_train, n_val = round(n * tf), round(n * vf)
        n_test = n - n_train - n_val
        if n_train < 1 or n_test < 1:
            raise ValueError(f"RandmanData: {n} samples split {tf}/{vf}/rest give {n_train} training and "
                             f"{n_test} test samples; raise samples_per_class or change the fractions")
        return n_train, n_val, n_test

    def split_indices(self) -> tuple[Tensor, Tensor, Tensor]:
        """int64 ``(train [n_train], val [n_val], test [n_test])`` indices into :meth:`samples`:
        consecutive pieces of one permutation drawn from ``seed``."""
        n_train, n_val, _ = self.split_sizes()
        perm = torch.randperm(self.n_classes * self.samples_per_class,
                              generator=torch.Generator().manual_seed(self.seed))
        return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]

    def samples(self) -> EventSamples:
        """All ``n_classes * samples_per_class`` samples, class by class (:func:`make_randman`)."""
        return make_randman(self.n_classes, self.n_units, self.n_steps, self.dim_manifold, self.alpha,
                            self.spikes_per_unit, self.samples_per_class, self.seed, self.step_frac)

    def splits(self) -> tuple[EventSamples, EventSamples | None, EventSamples]:
        """``(train, val or None when val_fraction == 0, test)`` :class:`EventSamples`."""
        samples = self.samples()
        train, val, test = self.split_indices()
        return samples.subset(train), samples.subset(val) if len(val) else None, samples.subset(test)

    def loaders(self, seed: int = 0) -> tuple[DataLoader, DataLoader | None, DataLoader]:
        """(train, val or None, test) loaders; ``seed`` only orders the training batches
        (see :func:`spikegrad.temporal.events.event_loaders`)."""
        train, val, test = self.splits()
        return event_loaders(train, val, test, self.batch_size, self.eval_batch_size, seed, self.drop_last)


# ------------------------------------------------------------------------------ validation
def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"Randman: alpha (power-spectrum exponent) must be a finite number >= 0, got {alpha!r}; "
                         "1.0 is the task's default, larger values give smoother manifolds")


def _check_generator_args(n_classes: int, n_units: int, n_steps: int, dim_manifold: int, alpha: float,
                          spikes_per_unit: int, samples_per_class: int, seed: int, step_frac: float) -> None:
    for arg, v, low, unit in [("n_classes", n_classes, 1, "classes"), ("n_units", n_units, 1, "input units"),
                              ("n_steps", n_steps, 1, "steps"), ("dim_manifold", dim_manifold, 1, "dimensions"),
                              ("spikes_per_unit", spikes_per_unit, 1, "spikes"),
                              ("samples_per_class", samples_per_class, 1, "samples"), ("seed", seed, 0, "")]:
        if not is_int(v) or v < low:
            raise ValueError(f"Randman: {arg} must be an int >= {low}{f' ({unit})' if unit else ''}, got {v!r}")
    _check_alpha(alpha)
    if isinstance(step_frac, bool) or not isinstance(step_frac, (int, float)) or not 0 < step_frac <= 1:
        raise ValueError(f"Randman: step_frac (fraction of the n_steps steps that holds the spikes) must lie in "
                         f"(0, 1], got {step_frac!r}")
