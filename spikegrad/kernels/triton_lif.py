"""Triton kernels for the LIF neuron: the whole time loop in one forward and one backward launch.

Each program owns ``BLOCK`` neurons (flat index over ``[B, ...]``) and walks all ``T`` steps with
the state in registers. Arithmetic is float32, rounded to the input dtype after every operation
exactly where :func:`~spikegrad.functional.lif_step` rounds (bfloat16 by round-to-nearest-even on the
bits, float16 by conversion), and launched with ``enable_fp_fusion=False`` so no multiply-add is
contracted: spikes and states are bit-identical to the reference ``scan``.

Saved for backward: only ``z = v - v_th`` per neuron-step (input dtype, or bfloat16 in low-memory
mode; ``-inf`` marks a refractory step). The backward kernel walks time in reverse with the
adjoint recurrence of :mod:`spikegrad.kernels.cpu`, evaluating the surrogate derivative in-kernel.

The kernels are decorated when this module is imported; with ``TRITON_INTERPRET=1`` set before
that, Triton's interpreter runs them on CPU tensors (for tests; slow). They use only core
``tl`` builtins (no ``@jit`` helpers of ``triton.language.standard`` such as ``tl.zeros``), so
re-importing this module under the interpreter works even after Triton itself was imported.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..surrogates import SURROGATES, registered_name
from ._common import (RESET_CODES, TRITON_SURROGATES, FusedConfig, backend_codes, flat_param, formula_agrees,
                      probe_points)

BLOCK = 512
NUM_WARPS = 4
SURROGATE_CODES = backend_codes(TRITON_SURROGATES)
"""Registered surrogates whose derivative :func:`_surrogate_grad` computes, with their ``SURR`` numbers
(:data:`~spikegrad.kernels._common.SURROGATE_CODES`)."""
_ROUND_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_verified: dict = {}


def surrogate_name(grad_fn) -> str | None:
    """The registry name of a surrogate derivative that the kernels compute (None: not supported)."""
    name = registered_name(grad_fn)
    return name if name in SURROGATE_CODES else None


def kernel_surrogate_grad(name: str, z: Tensor, slope: float) -> Tensor:
    """The kernels' derivative of surrogate ``name`` at the points ``z`` (1-D float32 tensor on the
    kernels' device), computed by :func:`_surrogate_grad` itself."""
    z = z.to(torch.float32).contiguous()
    out = torch.empty_like(z)
    n = z.numel()
    _probe_kernel[(triton.cdiv(n, BLOCK),)](z, out, n, slope, SURR=SURROGATE_CODES[name], BLOCK=BLOCK,
                                             num_warps=NUM_WARPS)
    return out


def supports_surrogate(spike_fn, device: torch.device | str | None = None) -> bool:
    """True if the kernels compute the derivative of ``spike_fn`` (a registered surrogate), and
    their formula agrees with the surrogate's ``grad`` at its slope (checked once per slope and
    device, in float32, on the points of :func:`~spikegrad.kernels._common.probe_points`)."""
    name = surrogate_name(type(spike_fn).grad)
    if name is None:
        return False
    slope = float(spike_fn.slope)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    key = (name, slope, str(device))
    if key not in _verified:
        z = probe_points(slope, torch.float32)
        want = SURROGATES[name].grad(z.double(), torch.tensor(slope, dtype=torch.float64))
        got = kernel_surrogate_grad(name, z.to(device), slope).cpu().double()
        _verified[key] = formula_agrees("Triton", name, got, want, 1e-5, 1e-6,
                                        f"the 'fused' PyTorch path runs (slope {slope:g})")
    return _verified[key]


@triton.jit
def _round(a, ROUND: tl.constexpr):
    """Round float32 ``a`` to the input dtype (0: float32, 1: bfloat16 RNE, 2: float16), as float32."""
    if ROUND == 1:
        b = a.to(tl.uint32, bitcast=True)
        b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
        out = b.to(tl.float32, bitcast=True)
    elif ROUND == 2:
        out = a.to(tl.float16).to(tl.float32)
    else:
        out = a
    return out


@triton.jit
def _surrogate_grad(z, slope, SURR: tl.constexpr):
    """Surrogate derivative at ``z = v - v_th`` (codes in ``SURROGATE_CODES``), float32."""
    if SURR == 1:    # fast_sigmoid
        d = 1.0 + slope * tl.abs(z)
        g = 1.0 / (d * d)
    elif SURR == 2:  # sigmoid
        s = 1.0 / (1.0 + tl.exp(-slope * z))
        g = slope * s * (1.0 - s)
    elif SURR == 3:  # atan
        a = 1.5707963267948966 * slope * z
        g = (0.5 * slope) / (1.0 + a * a)
    elif SURR == 4:  # triangle
        g = slope * tl.maximum(1.0 - slope * tl.abs(z), 0.0)
    elif SURR == 5:  # gaussian
        a = slope * z
        g = slope * 0.3989422804014327 * tl.exp(-0.5 * a * a)
    elif SURR == 6:  # exponential
        g = 0.5 * slope * tl.exp(-slope * tl.abs(z))
    elif SURR == 7:  # boxcar
        g = tl.where(tl.abs(z) < 0.5 / slope, slope, 0.0)
    else:            # 8: superspike_asymptotic
        d = 1.0 + slope * tl.abs(z)
        g = slope / (d * d)
    return g


@triton.jit
def _probe_kernel(z_ptr, out_ptr, n, slope, SURR: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    z = tl.load(z_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, _surrogate_grad(z, slope, SURR), mask=mask)


@triton.jit
def _param(ptr, offs, mask, P, PARAM_VEC: tl.constexpr):
    if PARAM_VEC:
        p = tl.load(ptr + offs % P, mask=mask, other=0.0).to(tl.float32)
    else:
        p = tl.load(ptr).to(tl.float32)
    return p


@triton.jit(do_not_specialize=["T", "P"])
def _lif_fwd_kernel(x_ptr, spk_ptr, z_ptr, v0_ptr, i0_ptr, r0_ptr, vT_ptr, iT_ptr, rT_ptr,
                    vrec_ptr, irec_ptr, rrec_ptr, dm_ptr, ds_ptr, th_ptr, vr_ptr, M, T, P,
                    BLOCK: tl.constexpr, RESET: tl.constexpr, REFRAC: tl.constexpr,
                    HAS_STATE: tl.constexpr, RECORD: tl.constexpr, PARAM_VEC: tl.constexpr,
                    ROUND: tl.constexpr, SAVE_BF16: tl.constexpr, STORE_Z: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    dm = _param(dm_ptr, offs, mask, P, PARAM_VEC)
    ds = _param(ds_ptr, offs, mask, P, PARAM_VEC)
    th = _param(th_ptr, offs, mask, P, PARAM_VEC)
    vr = _param(vr_ptr, offs, mask, P, PARAM_VEC)
    if HAS_STATE:
        v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        i = tl.load(i0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(r0_ptr + offs, mask=mask, other=0.0).to(tl.float32).to(tl.int32)
    else:
        v = tl.full([BLOCK], 0.0, tl.float32)
        i = tl.full([BLOCK], 0.0, tl.float32)
        r = tl.full([BLOCK], 0, tl.int32)
    xp = x_ptr + offs
    sp = spk_ptr + offs
    zp = z_ptr + offs
    vp = vrec_ptr + offs
    ip = irec_ptr + offs
    rp = rrec_ptr + offs
    x_cur = tl.load(xp, mask=mask, other=0.0).to(tl.float32)
    for t in range(T):
        xp += M
        lim = tl.where(t + 1 < T, M, 0)
        x_nxt = tl.load(xp, mask=offs < lim, other=0.0).to(tl.float32)  # prefetch the next step
        i = _round(_round(ds * i, ROUND) + x_cur, ROUND)
        u = _round(_round(dm * v, ROUND) + i, ROUND)
        if REFRAC > 0:
            active = r <= 0
            u = tl.where(active, u, v)
        z = _round(u - th, ROUND)
        spk = z > 0.0
        if REFRAC > 0:
            spk = spk & active
        if RESET == 0:
            v = tl.where(spk, z, u)       # u - 1 * th == z
        elif RESET == 1:
            v = tl.where(spk, vr, u)      # u * 0 + 1 * v_reset
        else:
            v = u
        if REFRAC > 0:
            r = tl.where(spk, REFRAC, tl.maximum(r - 1, 0))
            z = tl.where(active, z, float("-inf"))
        if SAVE_BF16:
            z = _round(z, 1)
        tl.store(sp, spk.to(tl.float32).to(spk_ptr.dtype.element_ty), mask=mask)
        if STORE_Z:
            tl.store(zp, z.to(z_ptr.dtype.element_ty), mask=mask)
        if RECORD:
            tl.store(vp, v.to(vrec_ptr.dtype.element_ty), mask=mask)
            tl.store(ip, i.to(irec_ptr.dtype.element_ty), mask=mask)
            if REFRAC > 0:
                tl.store(rp, r.to(tl.float32).to(rrec_ptr.dtype.element_ty), mask=mask)
        sp += M
        zp += M
        vp += M
        ip += M
        rp += M
        x_cur = x_nxt
    tl.store(vT_ptr + offs, v.to(vT_ptr.dtype.element_ty), mask=mask)
    tl.store(iT_ptr + offs, i.to(iT_ptr.dtype.element_ty), mask=mask)
    if REFRAC > 0:
        tl.store(rT_ptr + offs, r.to(tl.float32).to(rT_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "P"])
def _lif_bwd_kernel(z_ptr, gs_ptr, gvrec_ptr, girec_ptr, gvT_ptr, giT_ptr, gx_ptr, gv0_ptr, gi0_ptr,
                    dm_ptr, ds_ptr, th_ptr, vr_ptr, slope_ptr, M, T, P,
                    BLOCK: tl.constexpr, RESET: tl.constexpr, DETACH: tl.constexpr,
                    REFRAC: tl.constexpr, SURR: tl.constexpr, PARAM_VEC: tl.constexpr,
                    HAS_GS: tl.constexpr, HAS_GVREC: tl.constexpr, HAS_GIREC: tl.constexpr,
                    HAS_GVT: tl.constexpr, HAS_GIT: tl.constexpr, WANT_G0: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    dm = _param(dm_ptr, offs, mask, P, PARAM_VEC)
    ds = _param(ds_ptr, offs, mask, P, PARAM_VEC)
    th = _param(th_ptr, offs, mask, P, PARAM_VEC)
    vr = _param(vr_ptr, offs, mask, P, PARAM_VEC)
    slope = tl.load(slope_ptr).to(tl.float32)
    if HAS_GVT:
        gv = tl.load(gvT_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        gv = tl.full([BLOCK], 0.0, tl.float32)
    if HAS_GIT:
        gi = tl.load(giT_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        gi = tl.full([BLOCK], 0.0, tl.float32)
    last = (T - 1).to(tl.int64) * M
    zp = z_ptr + last + offs
    gsp = gs_ptr + last + offs
    gvp = gvrec_ptr + last + offs
    gip = girec_ptr + last + offs
    gxp = gx_ptr + last + offs
    for _ in range(T):
        z = tl.load(zp, mask=mask, other=-1.0).to(tl.float32)
        sg = _surrogate_grad(z, slope, SURR)
        if REFRAC:
            act = z != float("-inf")
            sg = tl.where(act, sg, 0.0)
        if HAS_GS:
            c = tl.load(gsp, mask=mask, other=0.0).to(tl.float32) * sg
        else:
            c = tl.full([BLOCK], 0.0, tl.float32)
        if HAS_GVREC:
            gv += tl.load(gvp, mask=mask, other=0.0).to(tl.float32)
        if HAS_GIREC:
            gi += tl.load(gip, mask=mask, other=0.0).to(tl.float32)
        if RESET == 0:
            if DETACH:
                gu = gv + c
            else:
                gu = gv * (1.0 - th * sg) + c
        elif RESET == 1:
            a = tl.where(z > 0.0, 0.0, 1.0)
            if not DETACH:
                u = z + th
                if REFRAC:
                    u = tl.where(act, u, 0.0)
                a += (vr - u) * sg
            gu = gv * a + c
        else:
            gu = gv + c
        if REFRAC:
            gI = gi + tl.where(act, gu, 0.0)
            gv = tl.where(act, dm * gu, gu)
        else:
            gI = gi + gu
            gv = dm * gu
        tl.store(gxp, gI.to(gx_ptr.dtype.element_ty), mask=mask)
        gi = ds * gI
        zp -= M
        gsp -= M
        gvp -= M
        gip -= M
        gxp -= M
    if WANT_G0:
        tl.store(gv0_ptr + offs, gv.to(gv0_ptr.dtype.element_ty), mask=mask)
        tl.store(gi0_ptr + offs, gi.to(gi0_ptr.dtype.element_ty), mask=mask)


def _grid(M: int):
    return (triton.cdiv(M, BLOCK),)


class _LIFTritonFn(torch.autograd.Function):
    """Fused LIF on flat tensors: ``x [T, M]``, states ``[M]``, params ``[P]`` (P = 1, F or M)."""

    @staticmethod
    def forward(ctx, x, v0, i0, r0, dm, ds, th, vr, slope, cfg: FusedConfig, keep_z: bool):
        T, M = x.shape
        P = dm.numel()
        spikes = torch.empty_like(x)
        z = torch.empty(x.shape if keep_z else (0,), dtype=cfg.save_dtype, device=x.device)
        vT, iT = torch.empty_like(x[0]), torch.empty_like(x[0])
        refr = cfg.refractory > 0
        rT = torch.empty_like(x[0]) if refr else x.new_empty(0)
        if cfg.record:
            vrec, irec = torch.empty_like(x), torch.empty_like(x)
            rrec = torch.empty_like(x) if refr else x.new_empty(0)
        else:
            vrec, irec, rrec = x.new_empty(0), x.new_empty(0), x.new_empty(0)
        has_state = v0 is not None
        if has_state:
            i0 = i0 if i0 is not None else torch.zeros_like(v0)
            r0 = r0 if r0 is not None else torch.zeros_like(v0)
        dummy = x
        _lif_fwd_kernel[_grid(M)](
            x, spikes, z, v0 if has_state else dummy, i0 if has_state else dummy,
            r0 if has_state else dummy, vT, iT, rT if refr else dummy,
            vrec if cfg.record else dummy, irec if cfg.record else dummy,
            rrec if cfg.record and refr else dummy, dm, ds, th, vr, M, T, P,
            BLOCK=BLOCK, RESET=RESET_CODES[cfg.reset], REFRAC=cfg.refractory, HAS_STATE=has_state,
            RECORD=cfg.record, PARAM_VEC=P > 1, ROUND=_ROUND_CODES[x.dtype],
            SAVE_BF16=cfg.save_dtype == torch.bfloat16 and x.dtype != torch.bfloat16, STORE_Z=keep_z,
            num_warps=NUM_WARPS, enable_fp_fusion=False)
        ctx.save_for_backward(z, dm, ds, th, vr, slope)
        ctx.cfg = cfg
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(rT, rrec)
        return spikes, vT, iT, rT, vrec, irec, rrec

    @staticmethod
    def backward(ctx, g_spikes, g_v, g_i, _g_r, g_vseq, g_iseq, _g_rseq):
        z, dm, ds, th, vr, slope = ctx.saved_tensors
        cfg: FusedConfig = ctx.cfg
        T, M = z.shape
        P = dm.numel()
        dtype = dm.dtype
        gx = torch.empty(z.shape, dtype=dtype, device=z.device)
        want_g0 = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        gv0 = torch.empty(M, dtype=dtype, device=z.device) if want_g0 else gx
        gi0 = torch.empty(M, dtype=dtype, device=z.device) if want_g0 else gx

        def arg(g):
            return gx if g is None else g.contiguous()

        _lif_bwd_kernel[_grid(M)](
            z, arg(g_spikes), arg(g_vseq), arg(g_iseq), arg(g_v), arg(g_i), gx, gv0, gi0,
            dm, ds, th, vr, slope, M, T, P,
            BLOCK=BLOCK, RESET=RESET_CODES[cfg.reset], DETACH=cfg.detach_reset,
            REFRAC=cfg.refractory > 0, SURR=SURROGATE_CODES[surrogate_name(cfg.grad_fn)], PARAM_VEC=P > 1,
            HAS_GS=g_spikes is not None, HAS_GVREC=g_vseq is not None, HAS_GIREC=g_iseq is not None,
            HAS_GVT=g_v is not None, HAS_GIT=g_i is not None, WANT_G0=want_g0,
            num_warps=NUM_WARPS, enable_fp_fusion=True)
        return (gx, gv0 if ctx.needs_input_grad[1] else None, gi0 if ctx.needs_input_grad[2] else None,
                None, None, None, None, None, None, None, None)


def lif_fused_triton(x_seq: Tensor, v0: Tensor | None, i0: Tensor | None, r0: Tensor | None,
                     decay_mem, decay_syn, v_th, v_reset, slope: Tensor, cfg: FusedConfig):
    """Fused LIF over ``x_seq [T, B, ...]`` with the Triton kernels (float32/bfloat16/float16).

    Same contract as :func:`spikegrad.kernels.cpu.lif_fused_cpu`: returns ``(spikes, v, i, r,
    v_seq, i_seq, r_seq)`` shaped ``[T, B, ...]`` / ``[B, ...]``, None where not requested.
    """
    T = x_seq.shape[0]
    step_shape = x_seq.shape[1:]
    x = x_seq.reshape(T, -1).contiguous()
    M = x.shape[1]
    params = [flat_param(p, x_seq) for p in (decay_mem, decay_syn, v_th, v_reset)]  # [1|B, 1|F] each
    rows, cols = max(p.shape[0] for p in params), max(p.shape[1] for p in params)
    dm, ds, th, vr = (p.expand(rows, cols).reshape(-1).contiguous() for p in params)  # [P], one layout
    if v0 is None and i0 is not None:
        v0 = torch.zeros_like(i0)
    if v0 is None and r0 is not None:
        v0 = torch.zeros_like(r0)
    flat = [None if s is None else s.reshape(M).to(x.dtype).contiguous() for s in (v0, i0, r0)]
    slope = torch.as_tensor(slope, device=x.device).to(x.dtype).reshape(1)
    keep_z = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *flat))
    spikes, v, i, r, v_seq, i_seq, r_seq = _LIFTritonFn.apply(x, *flat, dm, ds, th, vr, slope, cfg, keep_z)
    shape = x_seq.shape
    refr, rec = cfg.refractory > 0, cfg.record
    return (spikes.reshape(shape), v.reshape(step_shape), i.reshape(step_shape),
            r.reshape(step_shape) if refr else None,
            v_seq.reshape(shape) if rec else None, i_seq.reshape(shape) if rec else None,
            r_seq.reshape(shape) if rec and refr else None)
