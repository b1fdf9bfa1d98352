"""The time contract between spikegrad's steps and NIR's continuous time.

A step length ``dt`` (s) and a discretization (:data:`DISCRETIZATIONS`) map a per-step decay
``d = exp(-1 / tau_steps)`` to NIR's ``tau`` and gains (:func:`export_constants`) and back
(:func:`import_decay`), as tabulated in :mod:`spikegrad.interop`. Also the loader of the optional
``nir`` package, which both directions need.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["DISCRETIZATIONS", "export_constants", "import_decay"]

DISCRETIZATIONS = ("exact", "euler")
"""How continuous-time NIR constants relate to per-step decays (see :mod:`spikegrad.interop`)."""

_UNIT_GAIN_RTOL = 1e-9  # an imported gain this close to 1 is 1 (float64 rounding of tau * dt / dt)


def _nir():
    try:
        import nir
    except ImportError as e:  # an optional dependency
        raise ImportError("spikegrad.interop needs the package 'nir' (with numpy and h5py): "
                          "pip install 'spikegrad[nir]'") from e
    return nir


def _check_dt(who: str, dt: Any) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) or not (0 < float(dt) < math.inf):
        raise ValueError(f"{who}: dt must be the step length in seconds, a finite number > 0 (e.g. dt=1e-3), "
                         f"got {dt!r}")
    return float(dt)


def _check_discretization(who: str, discretization: Any) -> str:
    if discretization not in DISCRETIZATIONS:
        raise ValueError(f"{who}: discretization must be one of {DISCRETIZATIONS}, got {discretization!r}: 'exact' "
                         "for importers that integrate exactly (spikegrad), 'euler' for forward-Euler importers "
                         "(snnTorch, Norse, SpikingJelly)")
    return discretization


# ---------------------------------------------------------------------------------------------
# The contract, on float64 arrays
# ---------------------------------------------------------------------------------------------

def export_constants(tau_steps: np.ndarray, dt: float, discretization: str) -> tuple[np.ndarray, np.ndarray]:
    """NIR ``(tau, gain)`` of a leaky stage with time constant ``tau_steps`` (steps, > 0, finite).

    Args:
        tau_steps: time constants in steps, any shape, float64.
        dt: step length (s). discretization: ``"exact"`` or ``"euler"``.
    Returns:
        ``tau`` (s) and the gain (``r`` of a membrane, ``w_in`` of a synapse), ``1 / (1 - d)`` with
        ``d = exp(-1 / tau_steps)``; both float64 of the shape of ``tau_steps``.
    """
    d = np.exp(-1.0 / tau_steps)
    tau = tau_steps * dt if discretization == "exact" else dt / (1.0 - d)
    return tau, 1.0 / -np.expm1(-1.0 / tau_steps)


def import_decay(tau: np.ndarray, dt: float, discretization: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-step decay ``d`` and input factor of a NIR leaky stage ``tau dv/dt = -v + r I``.

    Args:
        tau: time constants (s), float64. dt: step (s). discretization: ``"exact"`` or ``"euler"``.
    Returns:
        ``d`` (``exp(-dt / tau)`` or ``1 - dt / tau``) and the factor that multiplies ``r I`` in
        one step (``1 - exp(-dt / tau)`` or ``dt / tau``), float64 of the shape of ``tau``.
    Raises:
        ValueError: euler with ``tau < dt`` (the forward-Euler decay would be negative).
    """
    if discretization == "exact":
        return np.exp(-dt / tau), -np.expm1(-dt / tau)
    if np.any(tau < dt):
        raise ValueError(f"from_nir: a time constant of {float(np.min(tau)):g} s is shorter than dt={dt:g} s, so "
                         "its forward-Euler decay 1 - dt/tau would be negative; import with a smaller dt or with "
                         "discretization='exact'")
    return 1.0 - dt / tau, dt / tau


def _tau_steps(d: np.ndarray) -> np.ndarray:
    """Time constant in steps of a per-step decay (``0 -> 0``, ``1 -> inf``)."""
    with np.errstate(divide="ignore"):
        return np.where(d <= 0, 0.0, np.where(d >= 1, np.inf, -1.0 / np.log(np.clip(d, 1e-300, 1.0))))

