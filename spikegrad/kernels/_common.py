"""Shared preparation for the fused LIF paths: flattening, parameter layout, configuration."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from ..functional import RESET_MODES
from ..surrogates import SURROGATES

RESET_CODES = {mode: code for code, mode in enumerate(RESET_MODES)}  # the kernels' numbers

SURROGATE_GIVEN = 0
"""The surrogate number that means: the derivative is computed by the caller (in PyTorch) and handed
to the kernel (``lif.c``'s ``SUR_GIVEN``)."""
SURROGATE_CODES = {"fast_sigmoid": 1, "sigmoid": 2, "atan": 3, "triangle": 4, "gaussian": 5, "exponential": 6,
                   "boxcar": 7, "superspike_asymptotic": 8}
"""One numbering of the built-in surrogates for every kernel (``lif.c``'s ``SUR_*`` defines, the
Triton kernels' ``SURR`` branches); a backend computes some of them itself, listed below."""
C_SURROGATES = ("fast_sigmoid", "atan", "triangle", "boxcar")
"""The surrogates whose derivative the C kernels (``lif.c``) compute themselves: the rational ones."""
TRITON_SURROGATES = tuple(SURROGATE_CODES)
"""The surrogates whose derivative the Triton kernels compute themselves: every built-in one."""


def backend_codes(names: tuple[str, ...]) -> dict[str, int]:
    """``{name: number}`` of :data:`SURROGATE_CODES` for the surrogates a backend computes (a new dict)."""
    return {name: SURROGATE_CODES[name] for name in names}


class FusedConfig(NamedTuple):
    """Static (non-tensor) settings of one fused LIF call.

    reset: one of :data:`~spikegrad.functional.RESET_MODES`. detach_reset: stop the gradient through the reset.
    refractory: refractory period (steps). record: also return the per-step states.
    save_dtype: dtype of the membrane distance ``v - v_th`` kept for backward.
    grad_fn: the surrogate derivative ``grad(x, slope)`` (a Surrogate's static method).
    """

    reset: str
    detach_reset: bool
    refractory: int
    record: bool
    save_dtype: torch.dtype
    grad_fn: object


def flat_param(value: Tensor | float, x_seq: Tensor) -> Tensor:
    """A neuron constant laid out against one step ``x_seq[0]`` viewed as ``[B, F]``.

    Args:
        value: float or tensor broadcastable to ``x_seq.shape[1:]`` (``[B, ...]``).
        x_seq: input ``[T, B, ...]``; the result has its dtype and device.
    Returns:
        a contiguous tensor of shape ``[1, 1]`` (one value), ``[1, F]`` (per feature, shared over
        the batch) or ``[B, F]`` (anything else), ``F = prod(x_seq.shape[2:])``.
    """
    if isinstance(value, Tensor):
        t = value.to(device=x_seq.device, dtype=x_seq.dtype)
    else:  # a Python number: as lif_step multiplies by it (exact for float32 / float64 inputs)
        t = torch.tensor(float(value), device=x_seq.device, dtype=x_seq.dtype)
    B = x_seq.shape[1]
    F = x_seq[0, 0].numel()
    if t.numel() == 1:
        return t.reshape(1, 1)
    step_shape = x_seq.shape[1:]
    if t.dim() < len(step_shape) or t.shape[0] == 1:  # shared over the batch
        feat = t.reshape(t.shape[1:]) if t.dim() == len(step_shape) else t
        return torch.broadcast_to(feat, step_shape[1:]).reshape(1, F).contiguous()
    return torch.broadcast_to(t, step_shape).reshape(B, F).contiguous()


def compact_param(value: Tensor | float, x_seq: Tensor) -> Tensor:
    """A neuron constant as ``[1]`` (one value) or ``[M]``, ``M = x_seq[0].numel()`` (see :func:`flat_param`)."""
    p = flat_param(value, x_seq)                                      # [1|B, 1|F]
    return p.reshape(1) if p.numel() == 1 else p.expand(x_seq.shape[1], -1).reshape(-1)


def unflatten_outputs(outs: tuple, x_seq: Tensor, cfg: FusedConfig) -> tuple:
    """``(spikes, v, i, r, v_seq, i_seq, r_seq)`` of a fused call on flat ``[T, M]`` / ``[M]`` tensors,
    reshaped to ``[T, B, ...]`` / ``[B, ...]``; None where ``cfg`` did not ask for it (the final
    ``v`` and ``i`` when recording, ``r`` without a refractory period, the sequences unless recording)."""
    spikes, v, i, r, v_seq, i_seq, r_seq = outs
    step_shape, rec, refr = x_seq.shape[1:], cfg.record, cfg.refractory > 0
    return (spikes.reshape(x_seq.shape), None if rec else v.reshape(step_shape),
            None if rec else i.reshape(step_shape), r.reshape(step_shape) if refr else None,
            v_seq.reshape(x_seq.shape) if rec else None, i_seq.reshape(x_seq.shape) if rec else None,
            r_seq.reshape(x_seq.shape) if rec and refr else None)


def probe_points(slope: float, dtype: torch.dtype) -> Tensor:
    """Points ``z`` (CPU, ``dtype``) at which a kernel's surrogate derivative is checked against the
    surrogate's ``grad``: a dense grid over ``|z| <= 8 / slope`` (where every built-in surrogate
    varies), a coarse one out to ``+-100 / slope``, and 0."""
    near = torch.linspace(-8.0, 8.0, 4001, dtype=torch.float64)
    far = torch.linspace(-100.0, 100.0, 401, dtype=torch.float64)
    return (torch.cat([near, far, torch.zeros(1, dtype=torch.float64)]) / slope).to(dtype)


def formula_agrees(kernels: str, name: str, got: Tensor, want: Tensor, rtol: float, atol_rel: float,
                   fallback: str) -> bool:
    """Whether a kernel's surrogate derivative ``got`` equals the surrogate's own ``grad`` values
    ``want`` (at :func:`probe_points`) within ``rtol`` and ``atol_rel`` times the largest value;
    warns, naming the surrogate and the ``fallback`` that runs instead, when it does not."""
    ok = bool(torch.allclose(got, want, rtol=rtol, atol=atol_rel * float(want.abs().max())))
    if not ok:
        warnings.warn(f"spikegrad: the {kernels} kernels' derivative of surrogate {name!r} differs from "
                      f"{SURROGATES[name].__name__}.grad (the surrogate's definition); {fallback} instead. "
                      "Update the kernel's formula to match.", RuntimeWarning, stacklevel=3)
    return ok


def hooked(module: object) -> bool:
    """Whether forward (pre-)hooks are registered on ``module``: a fused path that does not call the
    module would skip them."""
    return bool(getattr(module, "_forward_hooks", None) or getattr(module, "_forward_pre_hooks", None))


def reset_into(u: Tensor, s: Tensor, th: Tensor, v_reset: Tensor, v_reset_zero: bool, reset: str,
               out: Tensor) -> Tensor | None:
    """The membrane after the reset of the fused loops, written into ``out`` (exact: ``s`` is 0 or 1):
    ``u - s th`` ("subtract"), ``u (1 - s) + s v_reset`` ("zero"); None for "none" (the caller keeps
    ``u``). Tensors broadcast against ``[B, ...]``."""
    if reset == "subtract":
        return torch.addcmul(u, s, th, value=-1, out=out)
    if reset == "zero":
        v = torch.addcmul(u, u, s, value=-1, out=out)
        return v if v_reset_zero else v.addcmul_(s, v_reset)
    return None

