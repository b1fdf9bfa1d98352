"""Fused recurrent LIF and (recurrent or feed-forward) ALIF layers: one autograd node for the sequence.

The reference :func:`~spikegrad.functional.scan` of :func:`~spikegrad.functional.recurrent_lif_step`,
:func:`~spikegrad.functional.alif_step` or :func:`~spikegrad.functional.recurrent_alif_step` records a
dozen small autograd nodes per step and keeps their intermediates for BPTT. Here the forward pass
runs the time loop once without autograd, in the same order and dtype as the step functions. Per
step ``t`` (``c`` the input current, ``z`` the previous step's spikes, ``W = w_rec [N, N]``)::

    c_t  = x_t + z_{t-1} @ W.T          (no recurrent term at t = 0 without a state.z)
    i_t  = ds i_{t-1} + c_t
    u_t  = dm v_{t-1} + i_t             (pre-reset membrane, kept for backward)
    th_t = v_th + beta a_{t-1}          (ALIF; v_th for LIF)
    s_t  = H(u_t - th_t)
    v_t  = reset(u_t, s_t, th_t)
    a_t  = da a_{t-1} + (1 - da) s_t    (ALIF)

Two engines run it (:func:`engine` says which, :func:`~spikegrad.kernels.explain_backend` too):

* **C** (``recurrent.c``, in the library of :mod:`~spikegrad.kernels.native`), for float32/float64
  CPU tensors with a surrogate whose derivative the C kernels compute (:data:`NATIVE`). Forward is
  one call per block of steps, each thread running its batch rows through every step with no
  barrier: the recurrent product is the sum of the rows of ``W.T`` of the neurons that spiked (kept
  as a list of indices; at the usual firing rates a small fraction of a GEMM's work), then the
  neuron update. Backward runs per step one BLAS product ``gI_{t+1} @ W`` (the only dense product
  left) and one C call for everything else (surrogate, adjoint, and the weight gradient as the rows
  of ``gI_t`` added per spike when at most :data:`GATHER_MAX_RATE` of the neuron-steps spiked, else
  one GEMM over all steps at the end).
* **PyTorch operations** elsewhere (any device and float dtype, any registered surrogate), or with
  ``product="dense"``: in-place operations on preallocated ``[B, F]`` buffers. Its recurrent product
  is the reference's ``torch.mm`` (spikes and states are the reference's, bit for bit) or, on CPU
  for large enough layers at low firing rates, the sum of the active rows (``torch.nonzero`` of the
  spikes, then ``embedding_bag``; see :data:`GATHER_MAX_RATE`, :data:`GATHER_MIN_MACS`).

A sum of rows runs in another order than the GEMM's, so states may differ from the reference in
the last bit, and a spike where a membrane lands within that rounding of the threshold; in a
recurrent layer such a difference then propagates (measured at (784, 64, 256), ALIF, 5 % spikes,
float32: 180 of 12.8 M spikes differ, from step 609 on). With ``product="dense"`` (or
:data:`GATHER_MIN_MACS` set to ``inf`` and :data:`NATIVE` False) the forward pass is the
reference's, bit for bit.

Kept for backward: the pre-reset membrane ``u`` (state dtype, 4 bytes per neuron-step in float32),
the spikes (the output itself), for ALIF the adaptation ``a`` per step (4 more), the synaptic
current ``i`` per step only when ``decay_syn`` requires a gradient, and, in the PyTorch engine, the
indices of the spikes where the forward pass summed rows (about 16 bytes per spike). The sequences are kept in blocks of
about :data:`BLOCK_ELEMENTS` neuron-steps: allocations of tens of megabytes are mapped afresh by
malloc at every call and cost a page fault per 4 KiB at first touch. The backward pass is the
reverse-time adjoint written by hand. With ``sg_t`` the surrogate derivative at ``u_t - th_t``, ``gv_t`` / ``ga_t`` the
gradients of the post-step ``v_t`` / ``a_t`` and ``gS_t`` that of the spikes (output, recurrence
and, without ``detach_reset``, reset and adaptation)::

    gS_t  = dL/ds_t + (gI_{t+1} @ W) + [dv/ds gv_t + (1 - da) ga_t]      ([...] only without detach)
    gu_t  = dv/du gv_t + sg_t gS_t,         gv_{t-1} = dm gu_t
    gI_t  = gu_t + ds gI_{t+1}  (= dL/dx_t)
    gth_t = -sg_t gS_t + dv/dth gv_t,       ga_{t-1} = da ga_t + beta gth_t

In the PyTorch engine everything that depends only on the saved forward values (``sg``, the reset's
derivatives, the gradients arriving from the outputs) is computed for a block of steps at once; the
loop then does one ``[B, N] x [N, N]`` GEMM and three to seven elementwise operations per step (the
C engine: the GEMM and one call, which finds the step's rows from a descriptor of the buffers). The gradient
of ``w_rec``, ``sum_t gI_t^T z_{t-1}``, adds, for every spike ``(b, j)`` of step ``t - 1``, the row
``gI_t[b]`` to row ``j`` of ``gW^T`` (``index_add_``, while ``gI_t`` is in cache) where the forward
pass kept the spikes' indices and they are few enough (:data:`ROWS_MAX_BYTES`), else it is one GEMM
over all steps at the end. The gradients of the
neuron constants (when they require grad) are sums over batch and time of products of the stored
per-step gradients with the recomputed states.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..functional import ALIFParams, ALIFState, LIFParams, LIFState
from ..surrogates import SURROGATES, registered_name
from . import native
from ._common import RESET_CODES, FusedConfig, flat_param, reset_into

__all__ = ["recurrent_fused", "recurrent_op", "recurrent_backward_op", "engine", "compile_reason", "BLOCK_ELEMENTS",
           "GATHER_MAX_RATE", "GATHER_MIN_MACS", "NATIVE", "PRODUCTS", "ROWS_MAX_BYTES"]

PRODUCTS = ("auto", "dense", "gather")
"""How the forward pass computes ``z_{t-1} @ W.T``: "dense" (``torch.mm`` in the PyTorch engine,
bit-identical to the reference), "gather" (sum of the active rows, any density), "auto" (the C
engine where it applies, else gather on CPU where it pays)."""
GATHER_MAX_RATE = 0.15
"""``"auto"`` sums the active rows when at most this fraction of the previous step's spikes is 1
(measured on a 2-core AVX-512 CPU: the gather wins below about 15-20 %)."""
GATHER_MIN_MACS = 1 << 20
"""``"auto"`` uses ``torch.mm`` for layers with fewer ``B * N * N`` multiply-adds per step (the
gather's fixed cost, about 25 microseconds, is larger than such a GEMM)."""
ROWS_MAX_BYTES = 1 << 21
"""Backward sums rows of ``gI`` for the weight gradient (instead of one GEMM over all steps) when the
forward pass summed rows at every step and no step gathers more than this many bytes of rows (the
rows then stay in cache; measured on a 2-core AVX-512 CPU, 1 thread: 190 ms against 206 ms at
(784, 64, 256) with 840 KB per step, 351 ms against 300 ms at (100, 256, 512) with 13 MB)."""
NATIVE = True
"""Run the C engine (``recurrent.c``) where it applies (:func:`engine`); False: the PyTorch loop always."""
BLOCK_ELEMENTS = 1 << 18
"""Neuron-steps per block of the sequences kept for backward and of backward's coefficients."""


def _reset_v(u: Tensor, s: Tensor, th, vr, reset: str) -> Tensor:
    """Post-reset membrane from the pre-reset ``u`` and spikes ``s`` (0/1; exact, as in the step functions)."""
    if reset == "subtract":
        return torch.addcmul(u, s, th, value=-1)
    if reset == "zero":
        return torch.addcmul(u, u, s, value=-1).addcmul_(s, vr)
    return u


def _block_steps(B: int, N: int, T: int) -> int:
    """Steps per block of the saved sequences and of backward's vectorised coefficients (about
    :data:`BLOCK_ELEMENTS` neuron-steps: cache-sized, and below malloc's mmap threshold, so blocks are
    reused instead of faulted in afresh at every call)."""
    return max(1, min(T, BLOCK_ELEMENTS // max(1, B * N)))


def _prev_block(blocks: list, first: Tensor | None, b: int) -> Tensor:
    """The values at steps ``t - 1`` for the steps ``t`` of block ``b`` (``[K, B, F]``): the blocks hold a
    sequence ``[T, B, F]`` in pieces, ``first [B, F]`` (or zeros) is the value before step 0."""
    cur = blocks[b]
    if b > 0:
        head = blocks[b - 1][-1]
    else:
        head = torch.zeros_like(cur[0]) if first is None else first.to(cur.dtype)
    return torch.cat([head[None], cur[:-1]])


def _step_views(blocks: list | None, T: int) -> list:
    """Per-step ``[B, F]`` views of a blocked sequence (``[None] * T`` for None)."""
    return [None] * T if blocks is None else [v for blk in blocks for v in blk.unbind(0)]


def _reduce_to(g: Tensor, p: Tensor) -> Tensor:
    """A ``[B, F]`` gradient summed to the layout ``[1|B, 1|F]`` of the constant ``p``."""
    if p.shape[0] == 1:
        g = g.sum(0, keepdim=True)
    if p.shape[1] == 1:
        g = g.sum(1, keepdim=True)
    return g


def _forward_loop(x, w, v, i, a, z0, dm, ds, da, beta, th, vr, cfg: FusedConfig, product: str,
                  spikes, us, is_, vs, as_, active: list | None):
    """Run the layer over ``x [T, B, F]`` (no autograd) from the states ``v, i, a [B, F]`` (``a`` None for
    LIF), writing the spikes into ``spikes [T, B, F]`` and, where given (lists of ``T`` views ``[B, F]``),
    ``u``, ``i``, ``v``, ``a`` per step. Returns the final ``(v, i, a)`` (possibly views of those).

    ``active`` (a list, or None): receives per step ``t >= 1`` the ``(rows, cols)`` indices of the
    spikes of step ``t - 1`` where the recurrent product summed rows (None where it ran a GEMM),
    for backward's weight gradient (see :data:`ROWS_MAX_BYTES`)."""
    T, B, N = x.shape
    adaptive = a is not None
    ubuf = torch.empty_like(v) if us is None else None
    thb = torch.empty_like(v) if adaptive else None
    omd = 1 - da if adaptive else None                   # rounded as (1 - p.decay_ada) in alif_step
    vr_zero = cfg.reset == "zero" and bool((vr == 0).all())
    wt = None if w is None else w.t()                     # [N_pre, N_post]
    gather = w is not None and x.shape[0] > 1 and (
        product == "gather" or (product == "auto" and x.device.type == "cpu" and B * N * N >= GATHER_MIN_MACS))
    if gather:
        wt_rows = wt.contiguous()                         # row j: what neuron j's spike adds
        bounds = torch.arange(B + 1, device=x.device)
        max_active = B * N if product == "gather" else int(GATHER_MAX_RATE * B * N)
        # the spikes' bits as integers: 0.0 is all zeros, 1.0 is not; nonzero is faster on integers
        int_view = {torch.float32: torch.int32, torch.float64: torch.int64}.get(x.dtype)
    c = torch.empty_like(v) if w is not None else None
    # MKL's GEMM can round differently for operands at other offsets from a 64-byte boundary: the
    # previous spikes go through an aligned buffer unless every step's slice is aligned
    direct = w is None or (spikes.data_ptr() % 64 == 0 and (B * N * spikes.element_size()) % 64 == 0)
    zbuf = None if direct else torch.empty_like(v)
    if zbuf is not None and z0 is not None:
        zbuf.copy_(z0)
    xs, ss = x.unbind(0), spikes.unbind(0)               # per-step views, made once (indexing costs a call)
    for t in range(T):
        prev = (ss[t - 1] if zbuf is None else zbuf) if t > 0 else (z0 if zbuf is None or z0 is None else zbuf)
        if c is None or prev is None:
            c_t = xs[t]
        else:
            c_t = None
            if gather and t > 0:                          # z0 may hold any values: dense below
                rows, cols = (prev.view(int_view) if int_view is not None else prev).nonzero(as_tuple=True)
                if rows.numel() <= max_active:
                    offsets = torch.searchsorted(rows, bounds)
                    c_t = torch.embedding_bag(wt_rows, cols, offsets, False, 0, False, None, True)[0]   # mode sum
                    c_t.add_(xs[t])
                    if active is not None:
                        active.append((rows, cols))
            if active is not None and t > 0 and c_t is None:
                active.append(None)
            if c_t is None:
                torch.mm(prev, wt, out=c)                 # as z @ w.t() in recurrent_*_step
                c_t = c.add_(xs[t])
        i_out = i if is_ is None else is_[t]
        torch.mul(i, ds, out=i_out)                       # i = ds * i + c (two roundings, as the step)
        i = i_out.add_(c_t)
        u = ubuf if us is None else us[t]
        torch.mul(v, dm, out=u)                           # u = dm * v + i
        u.add_(i)
        if adaptive:
            torch.mul(a, beta, out=thb)                   # th = v_th + beta * a
            th_t = thb.add_(th)
        else:
            th_t = th
        s_t = ss[t] if zbuf is None else zbuf
        torch.gt(u, th_t, out=s_t)                        # the sign of the rounded u - th
        v_out = v if vs is None else vs[t]
        v_new = reset_into(u, s_t, th_t, vr, vr_zero, cfg.reset, v_out)
        if v_new is not None:
            v = v_new
        elif vs is not None:
            v = v_out.copy_(u)
        elif us is None:
            v, ubuf = u, v                                # swap the two scratch buffers
        else:
            v = u                                         # a step of the saved u, cloned at the end
        if adaptive:
            a_out = a if as_ is None else as_[t]
            torch.mul(a, da, out=a_out)                   # a = da * a + (1 - da) * s
            a = a_out.addcmul_(s_t, omd)
        if zbuf is not None:
            ss[t].copy_(zbuf)
    return v, i, a


def _c_vector(c: Tensor | None, N: int) -> Tensor | None:
    """A constant ``[1, 1|N]`` as the C engine reads it: ``[N]``, contiguous."""
    return None if c is None else c.reshape(-1).expand(N).contiguous()


def _steps(g: Tensor | None, like: Tensor) -> Tensor | None:
    """A gradient ``[T, B, N]`` whose steps ``g[t]`` are contiguous: ``g`` itself where they are, one
    contiguous step expanded over time where ``g`` is constant over time (as ``spikes.sum()`` gives),
    else a contiguous copy."""
    if g is None:
        return None
    if g.stride(0) == 0:
        return g[0].contiguous().expand(g.shape)
    if g[0].is_contiguous():
        return g
    return g.contiguous()


def _forward_c(x, w, v, i, a, z0, consts, cfg: FusedConfig, spikes, u_blocks, i_blocks, v_seq, a_blocks,
               blk: int) -> int:
    """:func:`_forward_loop`'s work on the C engine, one call per block of ``blk`` steps (states ``v, i, a
    [B, N]`` contiguous, updated in place). Returns the number of spikes."""
    T, B, N = x.shape
    lib = native.load()
    fn = getattr(lib, f"rec_forward_{native.DTYPE_SUFFIX[x.dtype]}")
    held = x.stride(0) == 0 and x[0].is_contiguous()
    if not held:
        x = x.contiguous()
    x_step = 0 if held else B * N
    esize = x.element_size()
    wt = None if w is None else w.t().contiguous()           # [N_pre, N_post]
    r0 = None if z0 is None or w is None else torch.mm(z0, w.t())   # z0 may hold any values: the GEMM
    dm, ds, da, beta, th, vr = (_c_vector(c, N) for c in consts)
    ptr = native.ptr
    threads = native.threads_for(B, 1)
    total = 0
    for b, t0 in enumerate(range(0, T, blk)):
        t1 = min(T, t0 + blk)
        zprev = spikes[t0 - 1] if t0 > 0 and w is not None else None
        n = fn(t1 - t0, B, N, threads, x.data_ptr() + t0 * x_step * esize, x_step, ptr(wt),
               ptr(r0) if t0 == 0 else None, ptr(zprev), v.data_ptr(), i.data_ptr(), ptr(a), ptr(dm), ptr(ds),
               ptr(da), ptr(beta), ptr(th), ptr(vr), RESET_CODES[cfg.reset], spikes[t0].data_ptr(),
               None if u_blocks is None else u_blocks[b].data_ptr(),
               None if i_blocks is None else i_blocks[b].data_ptr(),
               None if v_seq is None else v_seq[t0].data_ptr(),
               None if a_blocks is None else a_blocks[b].data_ptr())
        if n < 0:
            raise MemoryError("recurrent_fused: the C engine could not allocate its scratch rows")
        total += n
    return total


_DESCRIPTOR = ("B", "N", "T", "threads", "sur", "reset", "detach", "rec", "blk", "u", "s", "a", "a0", "gs", "gs_step",
               "gv", "gv_step", "gi", "gi_step", "ga", "ga_step", "R", "gu", "gu_rows", "gx", "gab", "ga_rows",
               "dm", "ds", "da", "beta", "th", "vr", "gwt")
"""The slots of ``rec_backward_at``'s descriptor, in order (``recurrent.c``'s ``RB_*``)."""


def _backward_c(cfg: FusedConfig, shape, need, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, spikes,
                u_blocks, i_blocks, a_blocks, g_s, g_v, g_i, g_a, rows: bool):
    """:func:`_backward` on the C engine: per step one GEMM ``gI_{t+1} @ W`` here and one call of
    ``rec_backward_at`` for the rest (the weight gradient's rows too when ``rows``), which finds the
    step's rows from a descriptor of the buffers made once."""
    T, B, N = shape
    dtype, device = spikes.dtype, spikes.device
    adaptive = da is not None
    rec = cfg.record
    want_consts = any(need[6:12])
    fn = getattr(native.load(), f"rec_backward_at_{native.DTYPE_SUFFIX[dtype]}")
    cs = [_c_vector(c, N) for c in (dm, ds, da, beta, th, vr)]
    if rec:
        g_s, g_v, g_i, g_a = (_steps(g, spikes) for g in (g_s, g_v, g_i, g_a))
    else:
        g_s = _steps(g_s, spikes)
        g_v, g_i = (None if g is None else g.contiguous() for g in (g_v, g_i))
    gx = torch.empty((T, B, N), dtype=dtype, device=device)
    gu_rows = T if want_consts else 2                     # gu_t in row t % gu_rows
    ga_rows = T + 1 if want_consts else 2                 # dL/da_t in row (t + 1) % ga_rows, t = -1 .. T-1
    gu_buf = torch.empty((gu_rows, B, N), dtype=dtype, device=device)
    ga_buf = None
    if adaptive:
        ga_buf = torch.empty((ga_rows, B, N), dtype=dtype, device=device)
        ga_last = (g_a[T - 1] if rec else g_a) if g_a is not None else None
        ga_buf[T % ga_rows].copy_(ga_last) if ga_last is not None else ga_buf[T % ga_rows].zero_()
    tmp = torch.empty((B, N), dtype=dtype, device=device) if w is not None else None
    g_wt = torch.zeros((N, N), dtype=dtype, device=device) if need[1] and rows else None
    a_first = None
    if adaptive:
        a_first = a0.to(dtype).contiguous() if a0 is not None else spikes.new_zeros(B, N)
    blk = _block_steps(B, N, T)

    def addresses(blocks):                                # the blocks' pointers as an int64 array
        return None if blocks is None else torch.tensor([t.data_ptr() for t in blocks], dtype=torch.int64)

    def step(g):                                          # elements from one step of g to the next
        return 0 if g is None or g.dim() < 3 else g.stride(0)

    u_ptrs, a_ptrs = addresses(u_blocks), addresses(a_blocks)
    ptr = native.ptr
    slots = dict(B=B, N=N, T=T, threads=native.threads_for(B, native.MIN_PART // N),
                 sur=native.surrogate_code(cfg.grad_fn, dtype, float(slope)), reset=RESET_CODES[cfg.reset],
                 detach=int(bool(cfg.detach_reset)), rec=int(rec), blk=blk, u=ptr(u_ptrs), s=ptr(spikes),
                 a=ptr(a_ptrs), a0=ptr(a_first), gs=ptr(g_s), gs_step=step(g_s), gv=ptr(g_v), gv_step=step(g_v),
                 gi=ptr(g_i), gi_step=step(g_i), ga=ptr(g_a) if rec else None, ga_step=step(g_a), R=ptr(tmp),
                 gu=ptr(gu_buf), gu_rows=gu_rows, gx=ptr(gx), gab=ptr(ga_buf), ga_rows=ga_rows, dm=ptr(cs[0]),
                 ds=ptr(cs[1]), da=ptr(cs[2]), beta=ptr(cs[3]), th=ptr(cs[4]), vr=ptr(cs[5]), gwt=ptr(g_wt))
    desc = torch.tensor([slots[k] or 0 for k in _DESCRIPTOR], dtype=torch.int64)
    d, slope_f = desc.data_ptr(), float(slope)
    gx_steps = gx.unbind(0)
    for t in range(T - 1, -1, -1):
        if t < T - 1 and w is not None:
            torch.mm(gx_steps[t + 1], w, out=tmp)
        if fn(d, t, slope_f):
            raise MemoryError("recurrent_fused: the C engine could not allocate its scratch rows")
    g_w = None if g_wt is None else g_wt.t().contiguous()
    return _gradients_after(cfg, need, T, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, spikes, u_blocks, i_blocks,
                            a_blocks, gx, gu_buf, ga_buf, g_v, g_w, gu_buf[0], ga_buf[0] if adaptive else None)


class _RecurrentFn(torch.autograd.Function):
    """The fused layer on ``x [T, B, F]``, states ``[B, F]`` (``z0 [B, N]``), constants ``[1|B, 1|F]``."""

    @staticmethod
    def forward(ctx, x, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, cfg: FusedConfig, product: str,
                keep: bool, save_i: bool, use_c: bool):
        T, B, N = x.shape
        adaptive = da is not None
        rec = cfg.record
        blk = _block_steps(B, N, T)

        def new_blocks():                                 # a sequence kept for backward, in blocks
            return [x.new_empty(min(blk, T - t0), B, N) for t0 in range(0, T, blk)]

        def state(s0):                                    # a state buffer [B, N], contiguous
            return x.new_zeros(B, N) if s0 is None else s0.clone(memory_format=torch.contiguous_format)

        v, i = state(v0), state(i0)
        a = state(a0) if adaptive else None
        spikes = x.new_empty(T, B, N)
        seqs = {k: x.new_empty(T, B, N) for k in ("v", "i", "a") if rec and (k != "a" or adaptive)}  # outputs
        u_blocks = new_blocks() if keep else None
        i_blocks = list(seqs["i"].split(blk)) if rec else (new_blocks() if keep and save_i else None)
        a_blocks = None
        if adaptive and (rec or keep):
            a_blocks = list(seqs["a"].split(blk)) if rec else new_blocks()
        active = [] if keep and w is not None and not use_c else None
        ctx.rows = False
        if use_c:
            with torch.no_grad():
                n = _forward_c(x, w, v, i, a, z0, (dm, ds, da, beta, th, vr), cfg, spikes, u_blocks, i_blocks,
                               seqs.get("v"), a_blocks, blk)
            vT, iT, aT = v, i, a
            ctx.rows = n <= GATHER_MAX_RATE * T * B * N    # the weight gradient as rows of gI per spike
        else:
            with torch.no_grad():
                vT, iT, aT = _forward_loop(x, w, v, i, a, z0, dm, ds, da, beta, th, vr, cfg, product, spikes,
                                           None if u_blocks is None else _step_views(u_blocks, T),
                                           None if i_blocks is None else _step_views(i_blocks, T),
                                           seqs["v"].unbind(0) if rec else None,
                                           None if a_blocks is None else _step_views(a_blocks, T), active)
        ctx.use_c = use_c
        if rec:
            outs = [spikes, seqs["v"], seqs["i"], seqs.get("a")]
        else:   # a final state that is a step of a saved block is cloned
            outs = [spikes, vT.clone() if keep and cfg.reset == "none" else vT,
                    iT.clone() if i_blocks is not None else iT,
                    None if aT is None else aT.clone() if a_blocks is not None else aT]
        outs = [x.new_empty(0) if o is None else o for o in outs]
        if keep:   # recorded sequences are outputs: saved whole (a view of an output cannot be saved)
            i_saved = ([seqs["i"]] if rec else i_blocks) if (save_i or rec) else []
            a_saved = ([seqs["a"]] if rec else a_blocks) if a_blocks is not None else []
            ctx.save_for_backward(w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, spikes, *u_blocks,
                                  *i_saved, *a_saved)
            ctx.counts = (len(u_blocks), len(i_saved), len(a_saved))
        ctx.cfg, ctx.shape, ctx.blk = cfg, (T, B, N), blk
        row_bytes = N * x.element_size()
        ctx.active = active if active and all(ix is not None and ix[0].numel() * row_bytes <= ROWS_MAX_BYTES
                                              for ix in active) else None
        ctx.set_materialize_grads(False)
        return tuple(outs)

    @staticmethod
    def backward(ctx, g_s, g_v, g_i, g_a):
        w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, spikes, *blocks = ctx.saved_tensors
        nu, ni, na = ctx.counts
        u_blocks, i_blocks, a_blocks = blocks[:nu], blocks[nu:nu + ni] or None, blocks[nu + ni:] or None
        if ctx.cfg.record:                                # whole recorded sequences: split into blocks
            i_blocks = None if i_blocks is None else list(i_blocks[0].split(ctx.blk))
            a_blocks = None if a_blocks is None else list(a_blocks[0].split(ctx.blk))
        with torch.no_grad():
            if ctx.use_c:
                grads = _backward_c(ctx.cfg, ctx.shape, ctx.needs_input_grad, w, v0, i0, a0, z0, dm, ds, da, beta,
                                    th, vr, slope, spikes, u_blocks, i_blocks, a_blocks, g_s, g_v, g_i, g_a, ctx.rows)
            else:
                grads = _backward(ctx.cfg, ctx.shape, ctx.needs_input_grad, w, v0, i0, a0, z0, dm, ds, da, beta,
                                  th, vr, slope, spikes, u_blocks, i_blocks, a_blocks, g_s, g_v, g_i, g_a, ctx.active)
        return (*grads, None, None, None, None, None, None)


def _backward(cfg: FusedConfig, shape, need, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, spikes,
              u_blocks, i_blocks, a_blocks, g_s, g_v, g_i, g_a, active):
    """Reverse-time adjoint of :func:`_forward_loop` (equations in the module docstring).

    The weight gradient ``sum_t gI_t^T z_{t-1}`` is one GEMM over all steps, or, where the forward
    pass kept the indices of the spikes (``active``), a sum of the rows ``gI_t[b]`` into row ``j``
    of ``gW^T`` for every spike ``(b, j)`` of step ``t - 1``, done while ``gI_t`` is in cache
    (:data:`ROWS_MAX_BYTES`).

    Returns the gradients of ``(x, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr)`` (None where not needed).
    """
    T, B, N = shape
    dtype, device = spikes.dtype, spikes.device
    adaptive = da is not None
    rec = cfg.record
    want_consts = any(need[6:12])
    omd = 1 - da if adaptive else None
    nbeta = -beta if adaptive else None

    def step_grad(g, t):                                  # gradient arriving at the state of step t
        if g is None:
            return None
        if rec:
            return g[t]
        return g if t == T - 1 else None

    gx = torch.empty((T, B, N), dtype=dtype, device=device)   # gI_t = dL/dx_t
    gu_buf = torch.empty((T if want_consts else 2, B, N), dtype=dtype, device=device)
    ga_buf = torch.empty((T + 1 if want_consts else 2, B, N), dtype=dtype, device=device) if adaptive else None

    gxs, gus = gx.unbind(0), gu_buf.unbind(0)               # per-step views, made once
    gas = ga_buf.unbind(0) if adaptive else None

    def gu_at(t):
        return gus[t] if want_consts else gus[t & 1]

    def ga_at(t):                                         # dL/da_t, t = -1 .. T-1
        return gas[t + 1] if want_consts else gas[(t + 1) & 1]

    if adaptive:
        ga_last = step_grad(g_a, T - 1)
        ga_at(T - 1).copy_(ga_last) if ga_last is not None else ga_at(T - 1).zero_()
    tmp = torch.empty((B, N), dtype=dtype, device=device) if w is not None else None
    g_wt = torch.zeros_like(w) if need[1] and active is not None else None     # gW^T [N_pre, N_post]
    blk = _block_steps(B, N, T)
    for b in reversed(range(len(u_blocks))):
        t0 = b * blk
        t1 = t0 + u_blocks[b].shape[0]
        co = _coefficients(cfg, b, t0, t1, T, dm, beta, th, vr, slope, spikes, u_blocks, a_blocks, a0, g_s, g_v,
                           g_a, omd)
        sg, C, K1, K2, K3, C3 = (None if c is None or c.dim() < 3 else c.unbind(0) for c in co)
        K1c = co[2] if K1 is None else None                   # a constant (not per step)
        K3c = co[4] if adaptive and K3 is None else None
        for t in range(t1 - 1, t0 - 1, -1):
            k = t - t0
            gu = gu_at(t)
            last = t == T - 1
            if last:
                gu.copy_(C[k])
            else:
                gu_next = gu_at(t + 1)
                k1 = K1c if K1 is None else K1[k]
                if w is not None:                         # gS picks up the recurrence: gI_{t+1} @ W
                    torch.mm(gxs[t + 1], w, out=tmp)
                    torch.addcmul(C[k], tmp, sg[k], out=gu)
                    gu.addcmul_(gu_next, k1)
                else:
                    torch.addcmul(C[k], gu_next, k1, out=gu)
            if adaptive:
                ga = ga_at(t)
                if K2 is not None:                        # reset not detached: a_t depends on s_t
                    gu.addcmul_(ga, K2[k])
                ga_new = ga_at(t - 1)
                torch.mul(ga, da, out=ga_new)             # ga_{t-1} = da ga_t + beta gth_t
                ga_new.addcmul_(gu, nbeta)
                if not last:
                    ga_new.addcmul_(gu_next, K3c if K3 is None else K3[k])
                if C3 is not None:
                    ga_new.add_(C3[k])
            gi_t = step_grad(g_i, t)
            if last:
                if gi_t is None:
                    gxs[t].copy_(gu)
                else:
                    torch.add(gu, gi_t, out=gxs[t])
            else:
                torch.addcmul(gu, gxs[t + 1], ds, out=gxs[t])
                if gi_t is not None:
                    gxs[t].add_(gi_t)
            if g_wt is not None and t > 0:
                rows, cols = active[t - 1]
                g_wt.index_add_(0, cols, gxs[t].index_select(0, rows))
    g_w = None if g_wt is None else g_wt.t().contiguous()
    return _gradients_after(cfg, need, T, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, spikes, u_blocks, i_blocks,
                            a_blocks, gx, gu_buf, ga_buf, g_v, g_w, gu_at(0), ga_at(-1) if adaptive else None)


def _gradients_after(cfg: FusedConfig, need, T, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, spikes, u_blocks,
                     i_blocks, a_blocks, gx, gu_buf, ga_buf, g_v, g_w, gu0, ga_first):
    """The gradients of ``(x, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr)`` once the reverse loop has filled
    ``gx`` (``dL/dx [T, B, N]``), ``gu_buf`` / ``ga_buf`` (per step when the constants need gradients);
    ``gu0`` is ``gu_0``, ``ga_first`` ``dL/da_{-1}``; ``g_w``: the weight gradient summed by rows during the
    loop (None: one GEMM over all steps here)."""
    N = spikes.shape[2]
    dtype = spikes.dtype
    g_x = gx if need[0] else None
    if g_w is None and need[1]:
        g_w = torch.mm(gx[1:].reshape(-1, N).t(), spikes[:-1].reshape(-1, N)) if T > 1 else torch.zeros_like(w)
    if need[1] and z0 is not None:
        g_w.addmm_(gx[0].t(), z0.to(dtype))
    g_v0 = (gu0 * dm) if need[2] else None
    g_i0 = (gx[0] * ds) if need[3] else None
    g_a0 = ga_first.clone() if da is not None and need[4] else None
    g_z0 = torch.mm(gx[0], w) if need[5] else None
    consts = [None] * 6
    if any(need[6:12]):
        consts = _constant_grads(cfg, need, T, dm, ds, da, beta, th, vr, spikes, u_blocks, i_blocks, a_blocks,
                                 v0, i0, a0, gx, gu_buf, ga_buf, g_v)
    return (g_x, None if not need[1] else g_w, g_v0, g_i0, g_a0, g_z0, *consts)


def _coefficients(cfg: FusedConfig, b: int, t0: int, t1: int, T: int, dm, beta, th, vr, slope, spikes, u_blocks,
                  a_blocks, a0, g_s, g_v, g_a, omd) -> tuple:
    """Per-step coefficients of the backward recursion for the steps ``[t0, t1)`` of block ``b``
    (``[K, B, F]`` each)::

        gu_t      = C_t + sg_t (gI_{t+1} @ W) + K1_t gu_{t+1} + K2_t ga_t
        ga_{t-1}  = da ga_t - beta gu_t + K3_t gu_{t+1} + C3_t

    ``K1`` and ``K3`` are not used at the last step (no ``t + 1``); they may be a constant
    (a ``[1|B, 1|F]`` tensor) where they do not depend on the step. None: the term is 0.
    Returns ``(sg, C, K1, K2, K3, C3)``.
    """
    u = u_blocks[b]
    s = spikes[t0:t1]
    adaptive = a_blocks is not None
    a_prev = _prev_block(a_blocks, a0, b) if adaptive else None
    th_c = torch.mul(a_prev, beta).add_(th) if adaptive else th       # as in the forward pass, bit for bit
    sg = cfg.grad_fn(u - th_c, slope).to(u.dtype)                      # surrogate derivative [K, B, F]
    nd = not cfg.detach_reset
    one_minus_s = None if cfg.reset == "none" else 1 - s
    # B1 = dv/du + (not detached) dv/ds * sg: the coefficient of gv_t in gu_t
    if cfg.reset == "subtract":
        B1 = 1 - sg * th_c if nd else None
    elif cfg.reset == "zero":
        B1 = one_minus_s + sg * (vr - u) if nd else one_minus_s
    else:
        B1 = None
    last = t1 == T                                         # the block holds the last step
    K1 = dm if B1 is None else B1 * dm
    # C_t = sg dL/ds_t + B1 Gv_t (gradients arriving at the outputs)
    C = sg * g_s[t0:t1] if g_s is not None else torch.zeros_like(u)
    Gv = None
    if g_v is not None:
        if cfg.record:
            Gv = g_v[t0:t1]
        elif last:
            Gv = torch.zeros_like(u)
            Gv[-1] = g_v
    if Gv is not None:
        C.add_(Gv if B1 is None else B1 * Gv)
    K2 = K3 = C3 = None
    if adaptive:
        AR = one_minus_s                                   # dv/du + dv/dth: 1 - s (subtract, zero), 1 (none)
        K2 = sg * omd if nd else None
        K3 = beta * dm if AR is None else AR * (beta * dm)
        if Gv is not None:
            C3 = beta * Gv if AR is None else AR * beta * Gv
        if g_a is not None and cfg.record:                 # recorded a_{t-1} for t >= 1
            ga_prev = g_a[t0 - 1:t1 - 1] if t0 > 0 else torch.cat([torch.zeros_like(g_a[:1]), g_a[:t1 - 1]])
            C3 = ga_prev if C3 is None else C3.add_(ga_prev)
    return sg, C, K1, K2, K3, C3


def _constant_grads(cfg: FusedConfig, need, T, dm, ds, da, beta, th, vr, spikes, u_blocks, i_blocks, a_blocks,
                    v0, i0, a0, gx, gu_buf, ga_buf, g_v):
    """Gradients of ``(dm, ds, da, beta, th, vr)`` (None where not needed): sums over time and batch of
    the stored per-step gradients (``gu``, ``gI``, ``ga``) times the recomputed states."""
    B, N = spikes.shape[1:]
    adaptive = a_blocks is not None
    acc = {k: spikes.new_zeros(B, N) for k, n in zip(("dm", "ds", "da", "beta", "th", "vr"), need[6:12]) if n}
    v_last = spikes.new_zeros(B, N) if v0 is None else v0.to(spikes.dtype)
    t1 = 0
    for b, u in enumerate(u_blocks):
        t0, t1 = t1, t1 + u.shape[0]
        s = spikes[t0:t1]
        a_prev = _prev_block(a_blocks, a0, b) if adaptive else None
        th_c = torch.mul(a_prev, beta).add_(th) if adaptive else th
        gu = gu_buf[t0:t1]
        gv = torch.zeros_like(u)                           # gv_t = dm gu_{t+1} + Gv_t
        n_next = min(t1, T - 1) - t0
        if n_next > 0:
            torch.mul(gu_buf[t0 + 1:t0 + 1 + n_next], dm, out=gv[:n_next])
        if g_v is not None:
            if cfg.record:
                gv.add_(g_v[t0:t1])
            elif t1 == T:
                gv[-1].add_(g_v)
        v_post = _reset_v(u, s, th_c, vr, cfg.reset)
        v_prev = torch.cat([v_last[None], v_post[:-1]])
        v_last = v_post[-1]
        if "dm" in acc:
            acc["dm"].add_((gu * v_prev).sum(0))
        if "ds" in acc:
            acc["ds"].add_((gx[t0:t1] * _prev_block(i_blocks, i0, b)).sum(0))
        if cfg.reset == "none":                            # gth_t = (dv/du + dv/dth) gv_t - gu_t
            gth = gv - gu
        else:
            gth = (1 - s) * gv - gu
        if "th" in acc:
            acc["th"].add_(gth.sum(0))
        if "beta" in acc:
            acc["beta"].add_((gth * a_prev).sum(0))
        if "da" in acc:
            acc["da"].add_((ga_buf[t0 + 1:t1 + 1] * (a_prev - s)).sum(0))
        if "vr" in acc and cfg.reset == "zero":
            acc["vr"].add_((gv * s).sum(0))
    params = dict(dm=dm, ds=ds, da=da, beta=beta, th=th, vr=vr)
    return [_reduce_to(acc[k], params[k]) if k in acc else None for k in ("dm", "ds", "da", "beta", "th", "vr")]


# ------------------------------------------------------------------------------ torch.compile
# The C engine as two custom operators: a compiled graph cannot call ctypes, so without them
# torch.compile would unroll the reference scan (and recompile it for every new T).

def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


@torch.library.custom_op("spikegrad::recurrent", mutates_args=())
def recurrent_op(x: Tensor, w: Tensor | None, v0: Tensor, i0: Tensor, a0: Tensor | None, z0: Tensor | None,
                 dm: Tensor, ds: Tensor, da: Tensor | None, beta: Tensor | None, th: Tensor, vr: Tensor,
                 slope: Tensor, reset: str, detach_reset: bool, surrogate: str, record: bool, keep: bool,
                 save_i: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The C engine's forward pass over ``x [T, B, N]`` from the states ``v0, i0, a0 [B, N]`` (``a0``
    None: LIF; ``z0``: the spikes before step 0, or None), constants ``[1, N]`` (``slope``,
    ``detach_reset`` and ``surrogate`` are for the backward pass).

    Returns ``(spikes, v, i, a, u_seq, a_seq, i_seq)``: ``v, i, a`` final ``[B, N]`` or, with ``record``,
    ``[T, B, N]`` (``a`` empty for LIF); with ``keep`` the pre-reset membranes ``u_seq [T, B, N]`` and,
    for ALIF without ``record``, the adaptation ``a_seq [T, B, N]`` for backward, and with ``save_i``
    (the gradient of ``ds`` needs it) and without ``record`` the synaptic current ``i_seq`` (else empty).
    """
    T, B, N = x.shape
    adaptive = da is not None
    blk = _block_steps(B, N, T)
    v, i = v0.clone(memory_format=torch.contiguous_format), i0.clone(memory_format=torch.contiguous_format)
    a = a0.clone(memory_format=torch.contiguous_format) if adaptive else None
    spikes = x.new_empty(T, B, N)
    seqs = {k: x.new_empty(T, B, N) for k in ("v", "i", "a") if record and (k != "a" or adaptive)}
    u_seq = x.new_empty(T, B, N) if keep else _empty(x)
    a_seq = x.new_empty(T, B, N) if keep and adaptive and not record else _empty(x)
    i_seq = x.new_empty(T, B, N) if keep and save_i and not record else _empty(x)
    a_out = seqs.get("a", a_seq if a_seq.numel() else None)
    i_out = seqs.get("i", i_seq if i_seq.numel() else None)

    def blocks(t):
        return None if t is None else list(t.split(blk))

    cfg = FusedConfig(reset, detach_reset, 0, record, x.dtype, None)
    _forward_c(x, w, v, i, a, z0, (dm, ds, da, beta, th, vr), cfg, spikes, blocks(u_seq if keep else None),
               blocks(i_out), seqs.get("v"), blocks(a_out), blk)
    if record:
        return spikes, seqs["v"], seqs["i"], seqs.get("a", _empty(x)), u_seq, a_seq, i_seq
    return spikes, v, i, _empty(x) if a is None else a, u_seq, a_seq, i_seq


@recurrent_op.register_fake
def _(x, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, reset, detach_reset, surrogate, record, keep, save_i):
    T, B, N = x.shape
    adaptive = da is not None
    state = (lambda: x.new_empty(T, B, N)) if record else (lambda: x.new_empty(B, N))
    return (x.new_empty(T, B, N), state(), state(), state() if adaptive else _empty(x),
            x.new_empty(T, B, N) if keep else _empty(x),
            x.new_empty(T, B, N) if keep and adaptive and not record else _empty(x),
            x.new_empty(T, B, N) if keep and save_i and not record else _empty(x))


@torch.library.custom_op("spikegrad::recurrent_backward", mutates_args=())
def recurrent_backward_op(w: Tensor | None, v0: Tensor, i0: Tensor, a0: Tensor | None, z0: Tensor | None,
                          dm: Tensor, ds: Tensor, da: Tensor | None, beta: Tensor | None, th: Tensor, vr: Tensor,
                          slope: Tensor, spikes: Tensor, u_seq: Tensor, a_seq: Tensor, i_seq: Tensor,
                          g_s: Tensor | None, g_v: Tensor | None, g_i: Tensor | None, g_a: Tensor | None, reset: str,
                          detach_reset: bool, surrogate: str, record: bool, need: int) -> list[Tensor]:
    """Gradients ``(x, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr)`` of :func:`recurrent_op` (bit ``k`` of
    ``need``: the ``k``-th is needed; the others are empty), from its saved ``spikes``, ``u_seq``, (ALIF)
    the adaptation ``a_seq`` and (for ``ds``) the synaptic current ``i_seq`` ``[T, B, N]``, and the
    gradients arriving at its outputs."""
    T, B, N = spikes.shape
    blk = _block_steps(B, N, T)
    wanted = [bool(need >> k & 1) for k in range(12)]
    cfg = FusedConfig(reset, detach_reset, 0, record, spikes.dtype, SURROGATES[surrogate].grad)
    rows = int(spikes.count_nonzero()) <= GATHER_MAX_RATE * spikes.numel()
    a_blocks = list(a_seq.split(blk)) if da is not None else None
    i_blocks = list(i_seq.split(blk)) if i_seq.numel() else None
    grads = _backward_c(cfg, (T, B, N), wanted, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, spikes,
                        list(u_seq.split(blk)), i_blocks, a_blocks, g_s, g_v, g_i, g_a, rows)
    return [_empty(spikes) if g is None or not n else g for g, n in zip(grads, wanted)]


@recurrent_backward_op.register_fake
def _(w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, spikes, u_seq, a_seq, i_seq, g_s, g_v, g_i, g_a, reset,
      detach_reset, surrogate, record, need):
    T, B, N = spikes.shape
    shapes = [(T, B, N), None if w is None else (N, N), (B, N), (B, N), None if a0 is None else (B, N),
              None if z0 is None else (B, N)] + [None if c is None else c.shape for c in (dm, ds, da, beta, th, vr)]
    return [spikes.new_empty(sh) if sh is not None and need >> k & 1 else _empty(spikes)
            for k, sh in enumerate(shapes)]


def _op_setup(ctx, inputs, output):
    x, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, reset, detach_reset, surrogate, record, keep, save_i = inputs
    a_saved = output[3] if record and da is not None else output[5]
    i_saved = output[2] if record else output[6]
    ctx.save_for_backward(w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, output[0], output[4], a_saved, i_saved)
    ctx.conf = (reset, detach_reset, surrogate, record)


def _op_grad(ctx, g_s, g_v, g_i, g_a, _g_u, _g_a_seq, _g_i_seq):
    w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, spikes, u_seq, a_seq, i_seq = ctx.saved_tensors
    reset, detach_reset, surrogate, record = ctx.conf
    if da is None:
        g_a = None
    need = sum(1 << k for k in range(12) if ctx.needs_input_grad[k])
    grads = recurrent_backward_op(w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, spikes, u_seq, a_seq, i_seq,
                                  g_s, g_v, g_i, g_a, reset, detach_reset, surrogate, record, need)
    return (*(g if ctx.needs_input_grad[k] else None for k, g in enumerate(grads)), *[None] * 7)


recurrent_op.register_autograd(_op_grad, setup_context=_op_setup)


def compile_reason(x_seq: Tensor, p: LIFParams | ALIFParams, spike_fn: Any) -> str | None:
    """Why the custom operators cannot run this layer while ``torch.compile`` traces (None: they can):
    they take what the C engine takes (:func:`engine`; the surrogate recognised by its registered
    name, without running it), constants learnable or not."""
    return _c_reason(x_seq, _flat_consts(x_seq, p), spike_fn, "auto", compiling=True)


def _recurrent_compiled(x: Tensor, v0, i0, a0, z0, consts: list, w: Tensor | None, cfg: FusedConfig, slope: Tensor,
                        spike_fn: Any, keep: bool, save_i: bool):
    """:func:`recurrent_op` on the flat input ``x [T, B, N]``: ``(spikes, v, i, a)`` as :class:`_RecurrentFn`
    (``keep``, ``save_i`` as there)."""
    T, B, N = x.shape
    dm, ds, da, beta, th, vr = (None if c is None else _c_vector(c, N)[None] for c in consts)   # [1, N]
    v0, i0 = (x.new_zeros(B, N) if t is None else t for t in (v0, i0))
    if da is not None and a0 is None:
        a0 = x.new_zeros(B, N)
    spikes, v, i, a, _, _, _ = recurrent_op(x, w, v0, i0, a0, z0, dm, ds, da, beta, th, vr, slope, cfg.reset,
                                            cfg.detach_reset, registered_name(type(spike_fn).grad), cfg.record,
                                            keep, save_i)
    return spikes, v, i, a


def _flat_consts(x_seq: Tensor, p: LIFParams | ALIFParams) -> list[Tensor]:
    """The layer's constants (``decay_mem, decay_syn[, decay_ada, beta], v_th, v_reset``) laid out by
    :func:`~spikegrad.kernels._common.flat_param`."""
    fields = ("decay_mem", "decay_syn", "decay_ada", "beta", "v_th", "v_reset")
    return [flat_param(getattr(p, f), x_seq) for f in fields if hasattr(p, f)]


def _c_reason(x: Tensor, consts: list, spike_fn: Any, product: str, compiling: bool = False) -> str | None:
    """Why the C engine cannot run a layer on ``x [T, B, F]`` with the flat constants ``consts``
    (:func:`~spikegrad.kernels._common.flat_param`), or None if it can. While ``torch.compile`` traces
    (``compiling``) the surrogate is recognised by its registered name alone: its formula is checked
    against the C one when the operator runs."""
    if not NATIVE:
        return "recurrent.NATIVE is False"
    if product == "dense":
        return "product='dense' (the reference's GEMM, bit for bit)"
    if not native.supports(x):
        return f"the C engine takes float32 / float64 CPU tensors, got {x.dtype} on {x.device.type}"
    if not native.available():
        return "the C kernels are not built" + ("" if compiling else f" ({native.build_error()})")
    if compiling:
        if registered_name(type(spike_fn).grad) not in native.SURROGATE_CODES:
            return "a surrogate the C kernels do not compute"
    elif not native.surrogate_code(type(spike_fn).grad, x.dtype, float(spike_fn.slope)):
        return f"no C formula for the surrogate {type(spike_fn).__name__} at this slope and dtype"
    if any(c is not None and c.shape[0] != 1 for c in consts):
        return "neuron constants that differ across the batch"
    return None


def engine(x_seq: Tensor, p: LIFParams | ALIFParams, spike_fn: Any, product: str = "auto") -> tuple[str, str]:
    """What :func:`recurrent_fused` runs for these arguments, and why: ``("native", reason)`` (the C
    engine, ``recurrent.c``) or ``("torch", reason)`` (the loop of PyTorch operations)."""
    why = _c_reason(x_seq, _flat_consts(x_seq, p), spike_fn, product)
    if why is None:
        return "native", "the C engine (recurrent.c): the recurrent sum and the neuron update in C"
    return "torch", f"the loop of PyTorch operations: {why}"


def recurrent_fused(x_seq: Tensor, state: LIFState | ALIFState | None, p: LIFParams | ALIFParams,
                    w_rec: Tensor | None, spike_fn: Any, record: bool = False,
                    product: str = "auto") -> tuple[Tensor, LIFState | ALIFState]:
    """Run a recurrent LIF layer, or an ALIF layer (recurrent or not), over ``T`` steps in one autograd node.

    Same contract as ``scan(recurrent_lif_step, x_seq, state, p, w_rec, spike_fn, record=record)`` (or
    ``recurrent_alif_step``; ``alif_step`` when ``w_rec`` is None).

    Args:
        x_seq: input current ``[T, B, N]`` (threshold units per step; ``[T, B, ...]`` for a feed-forward
            ALIF), float32 or float64 (half precision is widened by the caller).
        state: :class:`~spikegrad.functional.LIFState` / :class:`~spikegrad.functional.ALIFState` with
            ``[B, ...]`` tensors (``z``: previous spikes ``[B, N]`` or None), or None (rest).
        p: :class:`~spikegrad.functional.LIFParams` (``refractory`` must be 0) or
            :class:`~spikegrad.functional.ALIFParams`; constants may require grad.
        w_rec: recurrent weights ``[N, N]`` (row = target neuron) or None (ALIF only).
        spike_fn: a spiking :class:`~spikegrad.surrogates.Surrogate`: its ``slope`` and the static
            ``type(spike_fn).grad`` are used, so a user-registered surrogate works.
        record: return the per-step states ``[T, B, ...]`` instead of the final ones.
        product: one of :data:`PRODUCTS`.
    Returns:
        ``(spikes [T, B, ...] in {0, 1} with the dtype of x_seq, final or recorded state)``; for a
        recurrent layer the state's ``z`` is the last step's spikes (all steps' when recording).
    """
    if product not in PRODUCTS:
        raise ValueError(f"recurrent_fused: product must be one of {PRODUCTS}, got {product!r}")
    adaptive = isinstance(p, ALIFParams)
    if not adaptive and p.refractory > 0:
        raise ValueError("recurrent_fused: no refractory period on the fused path; use the reference scan")
    if w_rec is None and not adaptive:
        raise ValueError("recurrent_fused: a LIF layer runs here only with recurrent weights")
    T, B = x_seq.shape[:2]
    x = x_seq.reshape(T, B, -1)                                         # [T, B, F]
    N = x.shape[2]
    dtype = x.dtype

    def flat_state(t):
        return None if t is None else t.reshape(B, N).to(dtype)

    v0 = i0 = a0 = z0 = None
    if state is not None:
        v0, i0 = flat_state(state.v), flat_state(state.i)
        a0 = flat_state(state.a) if adaptive else None
        z0 = flat_state(state.z) if w_rec is not None else None
    consts = [flat_param(c, x_seq) for c in (p.decay_mem, p.decay_syn)]
    da = beta = None
    if adaptive:
        da, beta = flat_param(p.decay_ada, x_seq), flat_param(p.beta, x_seq)
    th, vr = flat_param(p.v_th, x_seq), flat_param(p.v_reset, x_seq)
    w = None if w_rec is None else w_rec.to(dtype)
    cfg = FusedConfig(p.reset, bool(p.detach_reset), 0, bool(record), dtype, type(spike_fn).grad)
    slope = spike_fn.slope.to(device=x.device, dtype=dtype)
    tensors = [x, w, v0, i0, a0, z0, *consts, da, beta, th, vr]
    grad_on = torch.is_grad_enabled()
    keep = grad_on and any(t is not None and t.requires_grad for t in tensors)
    save_i = grad_on and consts[1].requires_grad
    compiling = torch.compiler.is_compiling()
    flat = [*consts, da, beta, th, vr]
    use_c = _c_reason(x, flat, spike_fn, product, compiling) is None
    if compiling and use_c:                                            # the C engine as custom operators
        spikes, v, i, a = _recurrent_compiled(x, v0, i0, a0, z0, flat, w, cfg, slope, spike_fn, keep, save_i)
    else:
        spikes, v, i, a = _RecurrentFn.apply(x, w, v0, i0, a0, z0, consts[0], consts[1], da, beta, th, vr, slope,
                                             cfg, product, keep, save_i, use_c)
    spikes = spikes.reshape(x_seq.shape)
    step_shape = x_seq.shape if record else x_seq.shape[1:]
    v, i = v.reshape(step_shape), i.reshape(step_shape)
    z = None
    if w_rec is not None:
        z = spikes if record else spikes[-1]
    if adaptive:
        return spikes, ALIFState(v, i, a.reshape(step_shape), z)
    return spikes, LIFState(v, i, None, z)
