"""Fused LIF and LI in C for CPU tensors: one forward and one backward call for the whole time loop.

The kernels (``lif.c`` beside this file) run the same operations, in the same order and dtype, as
:func:`~spikegrad.functional.lif_step` and :func:`~spikegrad.functional.li_step`, so spikes and states
are bit-identical to the reference ``scan``; gradients agree to rounding. Backward needs the
membrane distance ``z = v - v_th`` of every step. The kernels compute the derivative of the
rational built-in surrogates (``fast_sigmoid``, ``atan``, ``triangle``, ``boxcar``) from ``z``
themselves and, for those, recompute ``z`` from the saved input (see below: no ``[T, ...]``
tensor beyond the input is kept). For any other registered surrogate forward stores ``z`` (4
bytes per neuron-step in float32) and its ``grad`` runs in PyTorch on a few steps of ``z`` at a
time, so every surrogate works.

The library is built on first use (see :mod:`~spikegrad.kernels.build`: ``$CC``, the cache folder,
OpenMP); without a compiler :func:`available` is False and ``backend="auto"`` uses the ``"fused"``
PyTorch path. With several intra-op threads (``torch.set_num_threads``) the neurons are split into
one part per thread: by the library's OpenMP regions when it has OpenMP, else by a pool of Python
threads (ctypes releases the GIL during each call), which competes with PyTorch's threads for the cores.

By default backward does not read a stored ``z``: it recomputes ``z`` from the saved input and
initial state, block by block in cache (bit-identical to the forward's), which moves fewer bytes
than writing ``z`` in forward and reading it back. Surrogates whose derivative is computed in
PyTorch need ``z`` in memory and keep the stored path.
"""

from __future__ import annotations

import ctypes
import functools
import os
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from ..surrogates import SURROGATES, registered_name
from . import build
from ._common import (C_SURROGATES, RESET_CODES, FusedConfig, backend_codes, compact_param, formula_agrees,
                      probe_points, unflatten_outputs)

__all__ = ["available", "build_error", "lif_native", "li_native", "load", "ptr", "surrogate_code", "threads_for",
           "kernel_surrogate_grad", "DTYPE_SUFFIX", "SURROGATE_CODES"]

NB = 64  # neurons per block of the LIF kernels (lif.c's NB)
MIN_PART = 4096  # neurons per thread, at least
CHUNK_BYTES = 1 << 20  # backward computes the surrogate derivative for this many bytes of z at a time
DTYPE_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
"""The dtypes the kernels take and the suffix of their functions' names."""
OPENMP = build.OPENMP  # the flags load() tries first (a test replaces them here to build without OpenMP)
_state: dict = {}  # the process's library ("lib", None if it cannot be built) and why not ("error")


def load() -> ctypes.CDLL | None:
    """The compiled kernel library (built on first call), or None if it cannot be built."""
    if "lib" not in _state:
        try:
            _state.update(lib=build.load_library(OPENMP), error=None)
        except (OSError, RuntimeError) as err:
            _state.update(lib=None, error=str(err))
    return _state["lib"]


@torch.compiler.assume_constant_result
def available() -> bool:
    """True if the C kernels are built (or can be built now) and loaded (a constant for ``torch.compile``)."""
    return load() is not None


def build_error() -> str | None:
    """Why the C kernels are unavailable (None if they are available)."""
    load()
    return _state["error"]


def supports(x: Tensor) -> bool:
    """Whether the C kernels can run this input: a float32 or float64 CPU tensor."""
    return x.device.type == "cpu" and x.dtype in DTYPE_SUFFIX


@functools.lru_cache(maxsize=4)
def _pool(pid: int, n: int) -> ThreadPoolExecutor:
    """``n`` worker threads of process ``pid`` (a forked child gets its own pool)."""
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="spikegrad-native")


def _parts(M: int, min_part: int | None = None) -> list[tuple[int, int]]:
    min_part = MIN_PART if min_part is None else min_part
    n = min(torch.get_num_threads(), M // min_part) if M >= 2 * min_part else 1
    bounds = [round(k * M / n) for k in range(n + 1)] if n > 1 else [0, M]
    return list(zip(bounds[:-1], bounds[1:]))


def _run(fn, M: int, min_part: int | None = None) -> None:
    """``fn(a, b)`` over the ranges of :func:`_parts` (at least ``min_part`` neurons or rows each,
    default ``MIN_PART``), one thread each."""
    parts = _parts(M, min_part)
    if len(parts) == 1:
        fn(*parts[0])
        return
    for f in [_pool(os.getpid(), len(parts)).submit(fn, a, b) for a, b in parts]:
        f.result()


def _launch(fn, M: int, min_part: int | None = None) -> None:
    """``fn(a, b, nthreads)`` over the neurons (or rows) ``[0, M)``: one call that splits them among
    ``nthreads`` OpenMP threads when the library has OpenMP, else one call per part of
    :func:`_parts` on the Python thread pool (``nthreads`` 1 each)."""
    if load().spikegrad_openmp():
        fn(0, M, len(_parts(M, min_part)))
    else:
        _run(lambda a, b: fn(a, b, 1), M, min_part)


def ptr(t: Tensor | None) -> int | None:
    """The data pointer of ``t`` for a kernel call (None: NULL)."""
    return None if t is None else t.data_ptr()


def threads_for(rows: int, min_rows: int) -> int:
    """Threads for a kernel call that splits ``rows`` rows among OpenMP threads, at least ``min_rows``
    each as :func:`_parts` splits them (1 without OpenMP: the call then runs on the calling thread)."""
    return len(_parts(rows, max(1, min_rows))) if load().spikegrad_openmp() else 1


def _consts(params: tuple[Tensor | None, ...], M: int) -> tuple[list[Tensor | None], int]:
    """Neuron constants (``[1]`` or ``[M]`` each, None skipped) as the kernels read them, and their
    step: one block (``NB``) of each value (step 0) when all are single values, else ``[M]`` each (step 1)."""
    if all(p is None or p.numel() == 1 for p in params):
        return [None if p is None else p.reshape(1).expand(NB).contiguous() for p in params], 0
    return [None if p is None else p.expand(M).contiguous() for p in params], 1


def _rows(g: Tensor | None) -> tuple[Tensor | None, int]:
    """A gradient ``[T, M]`` as (contiguous tensor, elements per step); a gradient broadcast over
    time (as ``x.sum()`` gives) becomes its one row ``[M]`` with step 0."""
    if g is None:
        return None, 0
    if g.stride(0) == 0:
        return g[0].contiguous(), 0
    return g.contiguous(), g.shape[1]


SURROGATE_CODES = backend_codes(C_SURROGATES)
"""Registered surrogates whose derivative the C kernels compute themselves, with their numbers
(:data:`~spikegrad.kernels._common.SURROGATE_CODES`, ``lif.c``'s ``SUR_*``)."""


def kernel_surrogate_grad(code: int, z: Tensor, slope: float) -> Tensor:
    """The C kernels' surrogate derivative number ``code`` at the points ``z`` (1-D CPU float tensor)."""
    lib = load()
    z = z.contiguous()
    out = torch.empty_like(z)
    getattr(lib, f"surrogate_grad_{DTYPE_SUFFIX[z.dtype]}")(z.numel(), z.data_ptr(), out.data_ptr(), code, slope)
    return out


@functools.lru_cache(maxsize=512)
def _verified(name: str, dtype: torch.dtype, slope: float) -> bool:
    """Whether the C formula for surrogate ``name`` equals its Python ``grad`` at ``slope`` in ``dtype``."""
    z = probe_points(slope, dtype)
    want = SURROGATES[name].grad(z, torch.tensor(slope, dtype=dtype))
    got = kernel_surrogate_grad(SURROGATE_CODES[name], z, slope)
    eps = torch.finfo(dtype).eps
    return formula_agrees("C", name, got, want, 8 * eps, 8 * eps, f"it is computed in PyTorch ({dtype}, slope {slope:g})")


def surrogate_code(grad_fn, dtype: torch.dtype, slope: float) -> int:
    """The C kernels' number for a surrogate derivative ``grad_fn`` (a registered Surrogate's
    ``grad``), or 0 (the derivative is then computed in PyTorch): 0 unless the kernel formula is
    in :data:`SURROGATE_CODES` and agrees with ``grad_fn`` at this slope and dtype."""
    name = registered_name(grad_fn)
    if name not in SURROGATE_CODES:
        return 0
    return SURROGATE_CODES[name] if _verified(name, dtype, float(slope)) else 0


def _backward(lib, dtype, z: Tensor | None, grad_fn, slope, grads, dm, ds, th, vr, reset: int, detach: int,
              g_v: Tensor | None, g_i: Tensor | None, T: int, M: int, spiking: bool = True,
              recompute: tuple | None = None, constants: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Reverse-time loop; returns ``(gx [T, M], grad of v0 [M], grad of i0 / ds [M], sums)``.

    The kernels compute the built-in rational surrogates themselves: one call for the whole
    sequence. Any other surrogate's derivative is computed here, in PyTorch, for a chunk of steps
    at a time (``CHUNK_BYTES`` of ``z``), each chunk then handed to the kernels. ``recompute``
    ``(x [T or 1, M], v0, i0, r0 ([M] or None: zero), refractory)`` replaces ``z`` (None): the
    kernels rerun the forward from the input (built-in surrogates only). ``constants``: the same
    call also sums the gradients of ``dm``, ``ds`` and ``th`` over the steps, per neuron: ``sums
    [3, M]`` (else None; needs ``recompute`` without a refractory period).
    """
    bwd = getattr(lib, f"lif_backward_{DTYPE_SUFFIX[dtype]}")
    rows = [_rows(g) for g in grads]                                   # g_s, g_vseq, g_iseq
    gv = torch.zeros(M, dtype=dtype) if g_v is None else g_v.to(dtype).contiguous().clone()
    gi = torch.zeros(M, dtype=dtype) if g_i is None else g_i.to(dtype).contiguous().clone()
    gx = torch.empty((T, M), dtype=dtype)
    size = torch.finfo(dtype).bits // 8
    full, pstep = _consts((dm, ds, th, vr), M)                        # kept alive during the calls
    consts = [ptr(t) for t in full]
    slope_value = float(slope) if spiking else 0.0
    sur = surrogate_code(grad_fn, dtype, slope_value) if spiking else 0
    if recompute is not None:  # lif_backward passes it only with a surrogate the kernels compute
        x, *states, refractory = recompute
        states = [None if s is None else s.reshape(M).to(dtype).contiguous() for s in states]  # kept alive
        rec = [ptr(x), M if len(x) == T else 0, *map(ptr, states), refractory]
    else:
        rec = [None, 0, None, None, None, 0]
    sums = torch.empty((3, M), dtype=dtype) if constants else None
    K = T if not spiking or sur or constants else max(1, CHUNK_BYTES // (M * size))
    for t1 in range(T, 0, -K):
        t0 = max(0, t1 - K)
        sg = None if not spiking or sur else grad_fn(z[t0:t1], slope).to(dtype).contiguous()
        gp = [v for g, st in rows for v in (None if g is None else g.data_ptr() + t0 * st * size, st)]
        args = [int(spiking), None if z is None else ptr(z[t0:t1]), *rec, ptr(sg), sur, slope_value, *gp, *consts,
                pstep, reset, detach, ptr(gv), ptr(gi), ptr(gx[t0:t1]), ptr(sums)]
        failed = []
        _launch(lambda a, b, n, t0=t0, t1=t1, args=args: failed.append(bwd(M, a, b, n, t0, t1, T, *args)), M)
        if any(failed):
            raise MemoryError(f"spikegrad: no memory for the LIF backward's buffer of {T} x {NB} values per thread")
    return gx, gv, gi, sums


def _constant_grads(sums: Tensor, dm: Tensor, ds: Tensor, th: Tensor | None) -> tuple[Tensor | None, ...]:
    """The gradients of the constants ``(dm, ds, th)`` (``[1]`` or ``[M]`` each; th None: none) from
    the kernels' per-neuron sums ``[3, M]``: summed over the neurons for a constant of one value."""
    return tuple(None if c is None else (g.sum().reshape(1) if c.numel() == 1 else g)
                 for g, c in zip(sums, (dm, ds, th)))


def _state_or_zeros(s: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if s is None else s.reshape(like.shape).to(like.dtype).clone()


def lif_forward(x: Tensor, v0: Tensor | None, i0: Tensor | None, r0: Tensor | None, dm: Tensor, ds: Tensor,
                th: Tensor, vr: Tensor, reset: str, refractory: int, record: bool, keep_z: bool, T: int) -> tuple:
    """The forward kernel on flat tensors: ``x [T, M]`` (or ``[1, M]``: held over ``T`` steps),
    states ``[M]`` or None (rest), constants ``[1]`` or ``[M]``.

    Returns:
        ``(spikes [T, M], v [M], i [M], r [M] or None, v_seq, i_seq, r_seq ([T, M] or None),
        z [T, M] or None)``: ``z = v - v_th`` (what backward needs) only with ``keep_z``.
    """
    lib = load()
    M = x.shape[1]
    x_step = M if len(x) == T else 0                               # x [1, M]: held over the T steps
    refr = refractory > 0
    v, i = _state_or_zeros(v0, x[0]), _state_or_zeros(i0, x[0])
    r = _state_or_zeros(r0, x[0]) if refr else None
    spikes = x.new_empty((T, M))
    z = torch.empty_like(spikes) if keep_z else None
    rec = (torch.empty_like(spikes), torch.empty_like(spikes), torch.empty_like(spikes) if refr else None) \
        if record else (None, None, None)
    fwd = getattr(lib, f"lif_forward_{DTYPE_SUFFIX[x.dtype]}")
    consts, pstep = _consts((dm, ds, th, vr), M)                   # kept alive during the call
    args = [ptr(t) for t in (x, v, i, r, *consts)]
    outs = [ptr(t) for t in (spikes, z, *rec)]
    _launch(lambda a, b, n: fwd(T, M, a, b, n, *args, pstep, RESET_CODES[reset], refractory, *outs, x_step), M)
    return (spikes, v, i, r, *rec, z)


def lif_backward(z: Tensor | None, dm: Tensor, ds: Tensor, th: Tensor, vr: Tensor, slope: Tensor, grad_fn,
                 reset: str, detach_reset: bool, g_spikes: Tensor | None, g_v: Tensor | None, g_i: Tensor | None,
                 g_vseq: Tensor | None, g_iseq: Tensor | None, recompute: tuple | None = None,
                 T: int | None = None, constants: bool = False) -> tuple[Tensor, ...]:
    """The backward kernels: gradients ``(x [T, M], v0 [M], i0 [M])`` from the saved ``z [T, M]`` and
    the gradients of the outputs (None: zero). Instead of ``z``: ``recompute = (x, v0, i0, r0,
    refractory)``, the forward's input ``[T, M]`` (or ``[1, M]`` held over ``T`` steps) and
    initial states ``[M]`` (None: zero); when the kernels do not compute the surrogate (its
    formula check fails) forward reruns once to store ``z``. ``constants``: also the gradients of
    ``(dm, ds, th)`` (shaped as given), appended: learnable constants, computed in the same pass
    (``recompute`` given, no refractory period, a surrogate the kernels compute)."""
    src = z if z is not None else recompute[0]
    T, M = (T or src.shape[0]), src.shape[1]
    computed = surrogate_code(grad_fn, src.dtype, float(slope))
    if constants and (recompute is None or recompute[-1] > 0 or not computed):
        raise ValueError("lif_backward: the gradients of the constants need the input (recompute), no "
                         "refractory period and a surrogate whose derivative the C kernels compute")
    if recompute is not None and not computed:
        # a surrogate the kernels do not compute (its formula differs from theirs): z in memory after all
        x, v0, i0, r0, refractory = recompute
        z = lif_forward(x, v0, i0, r0, dm, ds, th, vr, reset, refractory, False, True, T)[-1]
        recompute = None
    gx, gv, gi, sums = _backward(load(), src.dtype, z, grad_fn, slope.to(src.dtype), (g_spikes, g_vseq, g_iseq),
                                 dm, ds, th, vr, RESET_CODES[reset], int(detach_reset), g_v, g_i, T, M,
                                 recompute=recompute, constants=constants)
    if constants:
        return gx, gv, ds * gi, _constant_grads(sums, dm, ds, th)
    return gx, gv, ds * gi


def li_forward(x: Tensor, v0: Tensor | None, i0: Tensor | None, dm: Tensor, ds: Tensor,
               record: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The leaky integrator's forward kernel on flat tensors ``x [T, M]``: ``(v_seq, v, i, i_seq or None)``."""
    T, M = x.shape
    v, i = _state_or_zeros(v0, x[0]), _state_or_zeros(i0, x[0])
    v_seq = torch.empty_like(x)
    i_seq = torch.empty_like(x) if record else None
    fwd = getattr(load(), f"lif_forward_{DTYPE_SUFFIX[x.dtype]}")
    consts, pstep = _consts((dm, ds), M)                           # kept alive during the call
    args = [ptr(t) for t in (x, v, i, None, *consts, None, None)]
    _launch(lambda a, b, n: fwd(T, M, a, b, n, *args, pstep, RESET_CODES["none"], 0, None, None, ptr(v_seq),
                                ptr(i_seq), None, M), M)
    return v_seq, v, i, i_seq


def li_backward(dm: Tensor, ds: Tensor, T: int, M: int, g_vseq: Tensor | None, g_v: Tensor | None,
                g_i: Tensor | None, g_iseq: Tensor | None, saved: tuple | None = None) -> tuple[Tensor, ...]:
    """The leaky integrator's backward: gradients ``(x [T, M], v0 [M], i0 [M])``; given the forward's
    ``saved = (x, v0, i0)``, also those of ``(dm, ds)`` (learnable time constants), appended."""
    rec = None if saved is None else (*saved, None, 0)
    gx, gv, gi, sums = _backward(load(), dm.dtype, None, None, None, (None, g_vseq, g_iseq), dm, ds, None, None,
                                 RESET_CODES["none"], 1, g_v, g_i, T, M, spiking=False, recompute=rec,
                                 constants=saved is not None)
    if saved is None:
        return gx, gv, ds * gi
    return gx, gv, ds * gi, _constant_grads(sums, dm, ds, None)[:2]


class _LIFNativeFn(torch.autograd.Function):
    """LIF over time on flat tensors: ``x [T, M]``, states and constants ``[M]``."""

    @staticmethod
    def forward(ctx, x, v0, i0, r0, dm, ds, th, vr, slope, cfg: FusedConfig, keep_z: bool, T: int):
        # with a built-in surrogate backward recomputes z from x and the initial state
        recompute = keep_z and registered_name(cfg.grad_fn) in SURROGATE_CODES
        spikes, v, i, r, v_seq, i_seq, r_seq, z = lif_forward(x, v0, i0, r0, dm, ds, th, vr, cfg.reset,
                                                              cfg.refractory, cfg.record, keep_z and not recompute, T)
        ctx.held = len(x) != T
        ctx.T = T
        ctx.recompute = recompute
        # learnable constants (explain_backend sends them here only with a surrogate the kernels compute)
        ctx.consts = any(t.requires_grad for t in (dm, ds, th))
        saved = (x, v0, i0, r0) if recompute else (None,) * 4
        ctx.save_for_backward(dm, ds, th, vr, slope, z, *saved)
        ctx.cfg = cfg
        ctx.set_materialize_grads(False)
        outs = [spikes, v, i, r, v_seq, i_seq, r_seq]
        outs = [x.new_empty(0) if o is None else o for o in outs]  # one distinct tensor per slot
        ctx.mark_non_differentiable(outs[3], outs[6])
        return tuple(outs)

    @staticmethod
    def backward(ctx, g_spikes, g_v, g_i, _g_r, g_vseq, g_iseq, _g_rseq):
        dm, ds, th, vr, slope, z, *saved = ctx.saved_tensors
        cfg = ctx.cfg
        recompute = (*saved, cfg.refractory) if ctx.recompute else None
        gx, gv, gi, *rest = lif_backward(z, dm, ds, th, vr, slope, cfg.grad_fn, cfg.reset, cfg.detach_reset, g_spikes,
                                         g_v, g_i, g_vseq, g_iseq, recompute=recompute, T=ctx.T, constants=ctx.consts)
        g_consts = rest[0] if ctx.consts else (None, None, None)
        if ctx.held:
            gx = gx.sum(0, keepdim=True)
        g_consts = [g if need else None for g, need in zip(g_consts, ctx.needs_input_grad[4:7])]
        return (gx, gv if ctx.needs_input_grad[1] else None, gi if ctx.needs_input_grad[2] else None,
                None, *g_consts, None, None, None, None, None)


class _LINativeFn(torch.autograd.Function):
    """LI over time on flat tensors: ``x [T, M]`` -> membrane ``v [T, M]``."""

    @staticmethod
    def forward(ctx, x, v0, i0, dm, ds, record: bool):
        v_seq, v, i, i_seq = li_forward(x, v0, i0, dm, ds, record)
        ctx.consts = dm.requires_grad or ds.requires_grad   # learnable time constants
        ctx.save_for_backward(dm, ds, *((x, v0, i0) if ctx.consts else (None,) * 3))
        ctx.shape = tuple(x.shape)
        ctx.set_materialize_grads(False)
        return v_seq, v, i, x.new_empty(0) if i_seq is None else i_seq

    @staticmethod
    def backward(ctx, g_vseq, g_v, g_i, g_iseq):
        dm, ds, *saved = ctx.saved_tensors
        g_dm = g_ds = None
        if ctx.consts:
            gx, gv, gi, (g_dm, g_ds) = li_backward(dm, ds, *ctx.shape, g_vseq, g_v, g_i, g_iseq, saved=tuple(saved))
        else:
            gx, gv, gi = li_backward(dm, ds, *ctx.shape, g_vseq, g_v, g_i, g_iseq)
        return (gx, gv if ctx.needs_input_grad[1] else None, gi if ctx.needs_input_grad[2] else None,
                g_dm if ctx.needs_input_grad[3] else None, g_ds if ctx.needs_input_grad[4] else None, None)


def lif_native(x_seq: Tensor, v0: Tensor | None, i0: Tensor | None, r0: Tensor | None,
               decay_mem, decay_syn, v_th, v_reset, slope: Tensor, cfg: FusedConfig):
    """Fused LIF over ``x_seq [T, B, ...]`` in C; see :func:`spikegrad.kernels.lif_sequence`.

    Same contract as :func:`spikegrad.kernels.cpu.lif_fused_cpu`: returns ``(spikes, v, i, r,
    v_seq, i_seq, r_seq)`` shaped ``[T, B, ...]`` / ``[B, ...]`` (None where not requested).
    """
    T = x_seq.shape[0]
    held = x_seq.stride(0) == 0 and T > 1 and not (x_seq.requires_grad and x_seq.is_leaf)
    if held:  # the same input every step (an expanded tensor, not a leaf that wants its own gradient): one row
        x = x_seq[:1].reshape(1, -1).contiguous()                    # [1, M]
    else:
        x = x_seq.reshape(T, -1).contiguous()                        # [T, M]
    consts = [compact_param(p, x_seq) for p in (decay_mem, decay_syn, v_th, v_reset)]
    slope = torch.as_tensor(slope).to(x.dtype)
    keep_z = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x_seq, v0, i0, *consts))
    v0, i0, r0 = (None if s is None else s.reshape(-1) for s in (v0, i0, r0))  # [M]
    outs = _LIFNativeFn.apply(x, v0, i0, r0, *consts, slope, cfg, keep_z, T)
    return unflatten_outputs(outs, x_seq, cfg)


def li_native(x_seq: Tensor, v0: Tensor | None, i0: Tensor | None, decay_mem, decay_syn,
              record: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Leaky integrator over ``x_seq [T, B, ...]`` in C (the steps of :func:`~spikegrad.functional.li_step`).

    Returns:
        ``(v_seq [T, B, ...], final v [B, ...], final i [B, ...], i_seq [T, B, ...] or None)``.
    """
    T = x_seq.shape[0]
    step_shape = x_seq.shape[1:]
    x = x_seq.reshape(T, -1).contiguous()
    dm, ds = (compact_param(p, x_seq) for p in (decay_mem, decay_syn))
    v0, i0 = (None if s is None else s.reshape(-1) for s in (v0, i0))  # [M]
    v_seq, v, i, i_seq = _LINativeFn.apply(x, v0, i0, dm, ds, record)
    return (v_seq.reshape(x_seq.shape), v.reshape(step_shape), i.reshape(step_shape),
            i_seq.reshape(x_seq.shape) if record else None)
