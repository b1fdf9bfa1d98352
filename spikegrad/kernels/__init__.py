"""Fast paths for whole LIF sequences: one autograd node (or one kernel launch) per direction.

:class:`~spikegrad.neurons.LIF` (and :class:`~spikegrad.neurons.IF`) call :func:`lif_sequence`
through their ``backend`` argument; it can also be called directly. Backends:

* ``"torch"``: the reference :func:`~spikegrad.functional.scan` of
  :func:`~spikegrad.functional.lif_step` (autograd records every step).
* ``"native"``: :mod:`spikegrad.kernels.native`, C kernels for CPU tensors (float32/float64, any
  registered surrogate), compiled on first use with the system C compiler: one call runs the
  whole time loop forward, one backward. Same spikes and states as ``"torch"`` bit for bit.
  With a built-in surrogate backward recomputes ``v - v_th`` from the saved input (nothing
  ``[T, ...]`` of its own is kept); with others it keeps ``v - v_th`` (4 bytes per neuron-step
  in float32).
* ``"fused"``: :mod:`spikegrad.kernels.cpu`, a hand-written ``torch.autograd.Function`` in PyTorch
  ops (any device and float dtype, any registered surrogate). Same spikes and states as
  ``"torch"`` bit for bit; float32 gradients equal to rounding (< 1e-6 relative in the tests).
  Keeps only the pre-reset membrane, in the input dtype, for backward (4 bytes per neuron-step
  in float32; the reference keeps 8).
* ``"triton"``: :mod:`spikegrad.kernels.triton_lif`, one forward and one backward kernel for the
  whole time loop (CUDA tensors, float32/bfloat16/float16; built-in surrogates, others fall back to
  ``"fused"``). Same spikes and states as ``"torch"`` bit for bit; keeps ``v - v_th`` (input
  dtype) for backward.
* ``"fused_lowmem"`` / ``"triton_lowmem"``: as above, but ``v - v_th`` is kept in bfloat16 for
  backward (2 bytes per neuron-step for float32 inputs). The forward pass is unchanged (exact);
  input gradients are off by < 1e-3 relative (measured in ``bench/RESULTS.md``).
* ``"auto"`` (default): ``"triton"`` for CUDA tensors when Triton is installed; ``"native"`` for
  float32/float64 CPU tensors when a C compiler is found (else a one-time warning); else ``"fused"``.

:func:`li_sequence` runs the leaky integrator (:class:`~spikegrad.neurons.LI`) the same way, with
the backends ``"auto"`` (``"native"`` where it applies), ``"native"`` and ``"torch"``.

:func:`sparse_linear` / :class:`SparseInputLinear` compute a ``Linear`` on the non-zeros of a sparse
spike input (latency codes), for the first layer of a network.

Recurrent LIF layers (``w_rec``) and ALIF layers (:func:`alif_sequence`, recurrent or not) run
:mod:`spikegrad.kernels.recurrent` for every backend but ``"torch"`` (called ``"fused"``): the whole
sequence in one autograd node (constants that require grad included). On float32/float64 CPU
tensors with a surrogate the C kernels compute, that is its C engine (``recurrent.c``: the time loop
in C, the recurrent input as the sum of the rows of ``w_rec`` of the neurons that spiked, per step
of backward one BLAS product and one C call); elsewhere (any device and float dtype, any registered
surrogate) a loop of PyTorch operations, whose recurrent product is the reference's GEMM (same
spikes and states as ``scan`` bit for bit) or, on CPU for large layers at low firing rates, the
same sum of active rows. Sums of rows round in another order than the GEMM, so states are equal to
rounding and, over long sequences, a few spikes can differ (see :mod:`spikegrad.kernels.recurrent`).
:func:`explain_backend` names the engine. No refractory period there (such layers run ``scan``).

Constants that require gradients (``learn_tau`` / ``learn_threshold``, per layer or per neuron)
run on the C kernels: the backward call returns their gradients too, summed over time in the same
pass (``constants=True`` of :func:`~spikegrad.kernels.native.lif_backward`); with a refractory
period, a surrogate the kernels do not compute, or another backend they run the reference scan. Every fast
path falls back to ``"torch"`` where it does not apply: a surrogate with ``spiking=False``, its own
``forward`` or forward hooks. While ``torch.compile`` traces a model,
the C kernels run as custom operators (:mod:`spikegrad.kernels.ops`: one graph node, symbolic in
``T``) and other paths as ``scan``. :func:`explain_backend` is the one place that decides; it
returns the path and the reason, and ``"auto"`` logs the reason when it falls back to ``scan``
(``logging.getLogger("spikegrad.kernels")``, debug level).

Half-precision inputs (float16, bfloat16) run every backend in float32 (:func:`~spikegrad.functional.state_dtype`):
the input is widened once, constants and states stay float32, and the spikes (or the LI output)
come back in the input's dtype, so a bfloat16 input does not move the time constants.

The C and Triton kernels evaluate the derivatives of some built-in surrogates themselves. Before a
kernel's formula is used for a surrogate (per dtype and slope), it is checked against the
surrogate's own ``grad`` (the one definition, in :mod:`spikegrad.surrogates`) on a grid of points;
a formula that disagrees is not used (the derivative is then computed from ``grad`` in PyTorch,
with a warning), so an edit of a surrogate can never leave the kernels computing another one.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import torch
from torch import Tensor

from .. import checks
from ..functional import (ALIFParams, ALIFState, LIFParams, LIFState, LIParams, LIState, alif_step, li_step,
                          lif_step, recurrent_alif_step, recurrent_lif_step, scan, state_dtype)
from ..surrogates import Surrogate, registered_name
from . import cpu, native, ops, recurrent
from ._common import FusedConfig, hooked
from .sparse import SparseInputLinear, sparse_linear

__all__ = ["ALIF_BACKENDS", "BACKENDS", "LI_BACKENDS", "alif_sequence", "check_backend", "explain_backend",
           "explain_li_backend",
           "li_sequence", "lif_sequence", "native_available", "resolve_backend", "triton_available", "sparse_linear",
           "SparseInputLinear"]

BACKENDS = ("auto", "torch", "native", "fused", "fused_lowmem", "triton", "triton_lowmem")
LI_BACKENDS = ("auto", "torch", "native")
ALIF_BACKENDS = ("auto", "torch", "fused")
"""Backends of :func:`alif_sequence` (and :class:`~spikegrad.neurons.ALIF`): ``"fused"`` is
:mod:`spikegrad.kernels.recurrent`, ``"auto"`` runs it where it applies."""

log = logging.getLogger("spikegrad.kernels")
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_backend(owner: str, backend: str, allowed: tuple[str, ...] = BACKENDS) -> None:
    """Raise a ValueError naming ``owner`` unless ``backend`` is one of ``allowed``."""
    checks.one_of(owner, "backend", backend, allowed)


_warned: set = set()


def native_available(warn: bool = False) -> bool:
    """True if the C kernels of :mod:`spikegrad.kernels.native` are built and loaded (builds them).

    Args:
        warn: warn once per process, with the compiler's message, when they cannot be built.
    """
    ok = native.available()
    if not ok and warn and "native" not in _warned:
        _warned.add("native")
        warnings.warn(f"spikegrad: the C kernels could not be built ({native.build_error()}); CPU neurons "
                      "use the slower 'fused' PyTorch path. Install a C compiler (or set CC) to speed them up, "
                      "or pass backend='fused' to silence this warning.", RuntimeWarning, stacklevel=3)
    return ok


def _native_or_raise(backend: str, x_seq: Tensor) -> None:
    if x_seq.device.type != "cpu":
        raise ValueError(f"backend={backend!r} needs CPU tensors (got device {x_seq.device}); use backend='auto'")
    if not native.available():
        raise ValueError(f"backend={backend!r}: the C kernels could not be built ({native.build_error()}); "
                         "install a C compiler or set CC, or use backend='auto' or 'fused'")


def triton_available() -> bool:
    """True if the ``triton`` package imports (the GPU kernels need it; ``pip install spikegrad[triton]``)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _as_state_dtype(p, dtype: torch.dtype):
    """Constants or a state (a NamedTuple of tensors, flags and None; or None) with their float
    tensors in :func:`state_dtype` ``(dtype)``."""
    if p is None:
        return None
    return type(p)(*(t.to(state_dtype(dtype)) if isinstance(t, Tensor) and t.is_floating_point() else t for t in p))


def _widened(run: Any, x_seq: Tensor, state: Any, p: Any, *args: Any) -> tuple[Tensor, Any]:
    """``run`` on a half-precision input widened to float32, with float32 states and constants
    (:func:`~spikegrad.functional.state_dtype`); the output is narrowed back to the input's dtype."""
    out, st = run(x_seq.to(state_dtype(x_seq.dtype)), _as_state_dtype(state, x_seq.dtype),
                  _as_state_dtype(p, x_seq.dtype), *args)
    return out.to(x_seq.dtype), st


def _params_need_grad(p: LIFParams | LIParams) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in p)


def _fusable_surrogate(spike_fn: Any) -> bool:
    return (isinstance(spike_fn, Surrogate) and spike_fn.spiking
            and type(spike_fn).forward is Surrogate.forward)


def _learnable_path(backend: str, x_seq: Tensor, p: LIFParams, spike_fn: Any) -> tuple[str, str]:
    """The path of a feed-forward LIF layer whose constants require grad: the C kernels, whose
    backward returns the constants' gradients too, where they apply; else the reference scan."""
    if backend not in ("auto", "native"):
        return "torch", (f"constants that require grad (learn_tau / learn_threshold) with backend={backend!r}: "
                         "only the C kernels return their gradients")
    if p.refractory > 0 or (isinstance(p.v_reset, Tensor) and p.v_reset.requires_grad):
        return "torch", "constants that require grad with a refractory period or a learnable v_reset"
    if torch.compiler.is_compiling():
        return "torch", "constants that require grad while torch.compile traces (it compiles the reference scan)"
    if not (native.supports(x_seq) and native_available(warn=backend == "auto")):
        if backend == "native":
            _native_or_raise(backend, x_seq)
        return "torch", "constants that require grad on a tensor the C kernels do not take (float32 / float64 CPU)"
    if not native.surrogate_code(type(spike_fn).grad, x_seq.dtype, float(spike_fn.slope)):
        return "torch", "constants that require grad with a surrogate whose derivative the C kernels do not compute"
    return "native", "learnable constants: the C kernels, which return their gradients"


def explain_backend(backend: str, x_seq: Tensor, p: LIFParams | ALIFParams, spike_fn: Any,
                    state: Any = None, w_rec: Tensor | None = None) -> tuple[str, str]:
    """The path :func:`lif_sequence` (``p`` a :class:`~spikegrad.functional.LIFParams`) or
    :func:`alif_sequence` (``p`` an :class:`~spikegrad.functional.ALIFParams`) will run, and why.

    The one place that decides; :func:`resolve_backend` returns its first element, and the sequence
    functions log the reason at debug level on ``logging.getLogger("spikegrad.kernels")`` when
    ``"auto"`` falls back to the reference scan.

    Args:
        backend: requested backend (see the module docstring; :data:`ALIF_BACKENDS` for ALIF).
        x_seq: input ``[T, B, ...]``. p: the layer's constants.
        spike_fn: the spike function (a spiking :class:`~spikegrad.surrogates.Surrogate` for the fast paths).
        state: initial state or None. w_rec: recurrent weights ``[N, N]`` or None.
    Returns:
        ``(backend, reason)``: ``backend`` is ``"torch"`` (the reference scan), ``"fused"``
        (for a recurrent or ALIF layer: :mod:`spikegrad.kernels.recurrent`), ``"native"``,
        ``"fused_lowmem"``, ``"triton"`` or ``"triton_lowmem"``; ``reason`` is a short sentence.
    Raises:
        ValueError: unknown ``backend``; ``"triton"`` asked for without Triton installed or for a
            tensor that is not on a CUDA device (unless ``TRITON_INTERPRET=1``).
    """
    adaptive = isinstance(p, ALIFParams)
    if adaptive:
        check_backend("alif_sequence", backend, ALIF_BACKENDS)
    else:
        check_backend("lif_sequence", backend)
    if backend == "torch":
        return "torch", "backend='torch' asked for (the reference scan)"
    if not _fusable_surrogate(spike_fn):
        return "torch", ("the spike function is not a spiking Surrogate with the standard forward "
                         "(spiking=False, its own forward, or a plain function)")
    if hooked(spike_fn):
        return "torch", "forward hooks on the surrogate (the fused paths do not call it)"
    has_z = state is not None and getattr(state, "z", None) is not None
    if w_rec is None and has_z:
        return "torch", "the state holds spikes z but the layer has no recurrent weights"
    if adaptive or w_rec is not None:
        if getattr(p, "refractory", 0) > 0:
            return "torch", "refractory period (the fused recurrent path has none)"
        if torch.compiler.is_compiling():
            why = recurrent.compile_reason(x_seq, p, spike_fn)
            if why is not None:
                return "torch", f"torch.compile is tracing and the custom operators do not apply: {why}"
            return "fused", "torch.compile is tracing: the fused recurrent path's C engine as custom operators"
        what = "recurrent weights: the fused recurrent path" if w_rec is not None else \
            "adaptive threshold: the fused ALIF path"
        return "fused", f"{what} (kernels.recurrent), {recurrent.engine(x_seq, p, spike_fn)[1]}"
    if _params_need_grad(p):
        return _learnable_path(backend, x_seq, p, spike_fn)
    if torch.compiler.is_compiling():  # the C kernels as custom operators; elsewhere the compiler fuses scan
        ok = native.supports(x_seq) and native.available() and registered_name(type(spike_fn).grad) is not None
        if ok and backend in ("auto", "native"):
            return "native", "torch.compile is tracing: the C kernels as custom operators"
        return "torch", "torch.compile is tracing (it compiles the reference scan)"
    lowmem = backend.endswith("_lowmem")
    if backend.startswith("triton"):
        if not triton_available():
            raise ValueError(f"backend={backend!r} needs the triton package: pip install 'spikegrad[triton]', "
                             "or use backend='auto'")
        if not (x_seq.is_cuda or _interpreting()):
            raise ValueError(f"backend={backend!r} needs CUDA tensors (got device {x_seq.device}); use "
                             "backend='auto' or 'fused' on this device, or set TRITON_INTERPRET=1 to debug")
        from .triton_lif import supports_surrogate

        if x_seq.dtype not in _TRITON_DTYPES or not supports_surrogate(spike_fn, x_seq.device):
            return ("fused_lowmem" if lowmem else "fused"), "no Triton kernel for this dtype or surrogate"
        return backend, "asked for"
    if backend == "native":
        _native_or_raise(backend, x_seq)
        if native.supports(x_seq):
            return "native", "asked for"
        return "fused", "the C kernels take float32 / float64 CPU tensors only"
    if backend == "auto":
        if x_seq.is_cuda and x_seq.dtype in _TRITON_DTYPES and triton_available():
            from .triton_lif import supports_surrogate

            if supports_surrogate(spike_fn, x_seq.device):
                return "triton", "CUDA tensor with Triton installed"
        if native.supports(x_seq) and native_available(warn=True):
            return "native", "float32 / float64 CPU tensor: the C kernels"
        return "fused", "no C or Triton kernel for this tensor: the fused PyTorch loop"
    return backend, "asked for"


def resolve_backend(backend: str, x_seq: Tensor, p: LIFParams | ALIFParams, spike_fn: Any,
                    state: LIFState | ALIFState | None = None, w_rec: Tensor | None = None) -> str:
    """The backend that :func:`lif_sequence` (or :func:`alif_sequence`) will run: the first element of
    :func:`explain_backend` (same arguments), one of ``BACKENDS`` other than ``"auto"``.

    Recurrent LIF layers and ALIF layers run ``"fused"`` (:mod:`spikegrad.kernels.recurrent`) unless
    ``"torch"`` is asked for or a fallback applies (see :func:`explain_backend`).
    """
    return explain_backend(backend, x_seq, p, spike_fn, state, w_rec)[0]


def _choose(who: str, backend: str, x_seq: Tensor, p, spike_fn: Any, state, w_rec) -> str:
    """:func:`explain_backend`, logging the reason when ``"auto"`` falls back to the reference scan."""
    chosen, why = explain_backend(backend, x_seq, p, spike_fn, state, w_rec)
    if chosen == "torch" and backend == "auto" and not torch.compiler.is_compiling():
        log.debug("%s: backend='auto' runs the reference scan: %s", who, why)
    return chosen


def _sequence(run: Any, step: Any, recurrent_step: Any, fused: Any, x_seq: Tensor, state: Any, p: Any,
              spike_fn: Any, backend: str, record: bool, w_rec: Tensor | None) -> tuple[Tensor, Any]:
    """The dispatch :func:`lif_sequence` and :func:`alif_sequence` share. Half precision runs ``run`` (the
    public function) widened to float32; otherwise :func:`_choose` picks the path: ``"torch"`` scans ``step``
    (``recurrent_step`` with ``w_rec``), a recurrent layer, or any layer when ``fused`` is None (ALIF), runs
    :func:`~spikegrad.kernels.recurrent.recurrent_fused`, and the other paths call
    ``fused(chosen, x_seq, state, p, spike_fn, record)``."""
    if state_dtype(x_seq.dtype) != x_seq.dtype:
        return _widened(run, x_seq, state, p, spike_fn, backend, record, w_rec)
    chosen = _choose(run.__name__, backend, x_seq, p, spike_fn, state, w_rec)
    if chosen == "torch":
        if w_rec is not None:
            return scan(recurrent_step, x_seq, state, p, w_rec, spike_fn, record=record)
        return scan(step, x_seq, state, p, spike_fn, record=record)
    if w_rec is not None or fused is None:
        return recurrent.recurrent_fused(x_seq, state, p, w_rec, spike_fn, record)
    return fused(chosen, x_seq, state, p, spike_fn, record)


def lif_sequence(x_seq: Tensor, state: LIFState | None, p: LIFParams, spike_fn: Any,
                 backend: str = "auto", record: bool = False,
                 w_rec: Tensor | None = None) -> tuple[Tensor, LIFState]:
    """Run :func:`~spikegrad.functional.lif_step` over ``T`` steps with the chosen backend.

    Same contract as ``scan(lif_step, x_seq, state, p, spike_fn, record=record)`` (with
    :func:`~spikegrad.functional.recurrent_lif_step` when ``w_rec`` is given).

    Args:
        x_seq: input current ``[T, B, ...]`` (threshold units per step), float dtype.
        state: :class:`~spikegrad.functional.LIFState` with ``[B, ...]`` tensors, or None (rest).
        p: :class:`~spikegrad.functional.LIFParams` (tensors broadcast against ``[B, ...]``).
        spike_fn: a :class:`~spikegrad.surrogates.Surrogate` (others run on ``"torch"``).
        backend: one of :data:`BACKENDS`.
        record: return the per-step states stacked to ``[T, B, ...]`` instead of the final state.
        w_rec: recurrent weights ``[N, N]`` acting on the previous step's spikes (``x_seq`` then
            ``[T, B, N]``), or None.
    Returns:
        ``(spikes [T, B, ...] in {0, 1} with the dtype of x_seq, final or recorded LIFState)``.
    """
    return _sequence(lif_sequence, lif_step, recurrent_lif_step, _lif_fused, x_seq, state, p, spike_fn, backend,
                     record, w_rec)


def _lif_fused(chosen: str, x_seq: Tensor, state: LIFState | None, p: LIFParams, spike_fn: Any,
               record: bool) -> tuple[Tensor, LIFState]:
    """The feed-forward LIF layer on the fused path ``chosen`` (native, triton or cpu, ``_lowmem`` or not)."""
    lowmem = chosen.endswith("_lowmem")
    save_dtype = torch.bfloat16 if lowmem and x_seq.dtype in (torch.float32, torch.float64) else x_seq.dtype
    cfg = FusedConfig(p.reset, bool(p.detach_reset), int(p.refractory), bool(record), save_dtype,
                      type(spike_fn).grad)
    v0 = i0 = r0 = None
    if state is not None:
        v0, i0 = state.v, state.i
        r0 = state.r if p.refractory > 0 else None
    if chosen.startswith("triton"):
        from .triton_lif import lif_fused_triton as run
    elif chosen == "native" and torch.compiler.is_compiling():
        spikes, v, i, r, v_seq, i_seq, r_seq = ops.lif_compiled(
            x_seq, v0, i0, r0, p.decay_mem, p.decay_syn, p.v_th, p.v_reset, spike_fn.slope, cfg,
            registered_name(type(spike_fn).grad))
        return spikes, (LIFState(v_seq, i_seq, r_seq) if record else LIFState(v, i, r))
    elif chosen == "native":
        run = native.lif_native
    else:
        run = cpu.lif_fused_cpu
    spikes, v, i, r, v_seq, i_seq, r_seq = run(x_seq, v0, i0, r0, p.decay_mem, p.decay_syn, p.v_th,
                                               p.v_reset, spike_fn.slope, cfg)
    if record:
        return spikes, LIFState(v_seq, i_seq, r_seq)
    return spikes, LIFState(v, i, r)


def alif_sequence(x_seq: Tensor, state: ALIFState | None, p: ALIFParams, spike_fn: Any, backend: str = "auto",
                  record: bool = False, w_rec: Tensor | None = None) -> tuple[Tensor, ALIFState]:
    """Run :func:`~spikegrad.functional.alif_step` (``recurrent_alif_step`` with ``w_rec``) over ``T`` steps.

    Same contract as ``scan(alif_step, x_seq, state, p, spike_fn, record=record)``. Half-precision inputs
    run in float32 (states and constants float32, spikes in the input's dtype), as in :func:`lif_sequence`.

    Args:
        x_seq: input current ``[T, B, ...]`` (``[T, B, N]`` with ``w_rec``), float dtype.
        state: :class:`~spikegrad.functional.ALIFState` with ``[B, ...]`` tensors, or None (rest).
        p: :class:`~spikegrad.functional.ALIFParams`. spike_fn: the spike function.
        backend: one of :data:`ALIF_BACKENDS`: ``"fused"`` (:mod:`spikegrad.kernels.recurrent`),
            ``"torch"`` (the reference scan), ``"auto"`` (``"fused"`` where it applies, see :func:`explain_backend`).
        record: return the per-step states stacked to ``[T, B, ...]`` instead of the final state.
        w_rec: recurrent weights ``[N, N]`` on the previous step's spikes, or None.
    Returns:
        ``(spikes [T, B, ...] in {0, 1} with the dtype of x_seq, final or recorded ALIFState)``.
    """
    return _sequence(alif_sequence, alif_step, recurrent_alif_step, None, x_seq, state, p, spike_fn, backend,
                     record, w_rec)


def explain_li_backend(backend: str, x_seq: Tensor, p: LIParams) -> tuple[str, str]:
    """The path :func:`li_sequence` will run for a leaky-integrator layer, and why:
    ``("native", reason)`` (the C kernels) or ``("torch", reason)`` (the reference ``scan``)."""
    check_backend("li_sequence", backend, LI_BACKENDS)
    if backend == "torch":
        return "torch", "backend='torch' asked for"
    if not native.supports(x_seq):
        return "torch", f"the C kernels take float32 / float64 CPU tensors, got {x_seq.dtype} on {x_seq.device.type}"
    if _params_need_grad(p) and torch.compiler.is_compiling():
        return "torch", "constants that require grad while torch.compile traces (it compiles the reference scan)"
    built = native.available() if torch.compiler.is_compiling() else (backend == "native" or native_available(warn=True))
    if not built:
        return "torch", "the C kernels are not built (no C compiler?)"
    return "native", "float32 / float64 CPU tensor: the C kernels"


def li_sequence(x_seq: Tensor, state: LIState | None, p: LIParams, backend: str = "auto",
                record: bool = False) -> tuple[Tensor, LIState]:
    """Run :func:`~spikegrad.functional.li_step` over ``T`` steps with the chosen backend.

    Same contract as ``scan(li_step, x_seq, state, p, record=record)``.

    Args:
        x_seq: input current ``[T, B, ...]``. state: :class:`~spikegrad.functional.LIState` or None.
        p: :class:`~spikegrad.functional.LIParams`. backend: one of :data:`LI_BACKENDS`; ``"auto"``
            runs ``"native"`` for float32/float64 CPU tensors when the C kernels are built.
        record: return the per-step states stacked to ``[T, B, ...]`` instead of the final state.
    Returns:
        ``(v_seq [T, B, ...], final or recorded LIState)``.
    """
    check_backend("li_sequence", backend, LI_BACKENDS)
    if state_dtype(x_seq.dtype) != x_seq.dtype:
        return _widened(li_sequence, x_seq, state, p, backend, record)
    if backend == "native":
        _native_or_raise(backend, x_seq)
    chosen, why = explain_li_backend(backend, x_seq, p)
    if chosen == "torch":
        if backend == "auto":
            log.debug("li_sequence: the reference scan runs (%s)", why)
        return scan(li_step, x_seq, state, p, record=record)
    compiling = torch.compiler.is_compiling()
    v0, i0 = (None, None) if state is None else (state.v, state.i)
    if compiling:
        v_seq, v, i, i_seq = ops.li_compiled(x_seq, v0, i0, p.decay_mem, p.decay_syn, record)
        return v_seq, (LIState(v_seq, i_seq) if record else LIState(v, i))
    v_seq, v, i, i_seq = native.li_native(x_seq, v0, i0, p.decay_mem, p.decay_syn, record)
    return v_seq, (LIState(v_seq, i_seq) if record else LIState(v, i))
