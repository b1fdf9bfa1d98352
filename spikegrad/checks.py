"""Argument checks shared by every module: each raises an error that names the caller, the
argument, the rule it breaks and the value it got.

This module imports nothing from spikegrad, so every layer (functional core, kernels, modules,
methods) can use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

from torch import Tensor

__all__ = ["is_number", "real", "positive_int", "non_negative_int", "one_of", "float_seq"]


def is_number(value: Any) -> bool:
    """True for a finite real number that is not a bool (``1``, ``2.5``; not ``True``, ``nan``, ``inf``)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def real(who: str, name: str, value: Any, ok: Callable[[float], bool], rule: str) -> float:
    """``float(value)`` if it is a real number (not a bool, not NaN) with ``ok(value)``.

    Args:
        who: the caller, for the message (``"LIF"``, ``"poisson_encode"``).
        name: the argument's name. ok: the rule as a predicate. rule: the rule in words, with units.
    Raises:
        ValueError: ``"{who}: {name} must be {rule}, got {value!r}"``.
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value))
            or not ok(float(value))):
        raise ValueError(f"{who}: {name} must be {rule}, got {value!r}")
    return float(value)


def positive_int(who: str, name: str, value: Any, unit: str = "") -> int:
    """``int(value)`` if it is an integer > 0 (not a bool); else a ValueError naming ``who`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive int{f' ({unit})' if unit else ''}, got {value!r}")
    return int(value)


def non_negative_int(who: str, name: str, value: Any, unit: str = "") -> int:
    """``int(value)`` if it is an integer >= 0 (not a bool); else a ValueError naming ``who`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{who}: {name} must be a non-negative int{f' ({unit})' if unit else ''}, got {value!r}")
    return int(value)


def one_of(who: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; else a ValueError listing them."""
    try:
        ok = any(value == c and type(value) is type(c) for c in choices)
    except (TypeError, RuntimeError):  # e.g. a tensor
        ok = False
    if not ok:
        raise ValueError(f"{who}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def float_seq(who: str, name: str, t: Any, min_dim: int, shape: str) -> None:
    """Check that ``t`` is a non-empty time-first floating-point tensor with at least ``min_dim`` dims.

    Args:
        shape: the expected shape in words for the message, e.g. ``"[T, B, ...]"``.
    Raises:
        TypeError: not a tensor, or not floating point. ValueError: too few dims, or empty.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"{who}: {name} must be a tensor of shape {shape}, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{who}: {name} must be a floating-point tensor, got {t.dtype}; "
                        f"convert it with {name}.to(torch.float32)")
    if t.dim() < min_dim or t.numel() == 0:
        raise ValueError(f"{who}: {name} must be a non-empty time-first tensor of shape {shape} (at least "
                         f"{min_dim} dims), got shape {tuple(t.shape)}; record the whole sequence, and add "
                         "missing batch/neuron dims with .unsqueeze")
