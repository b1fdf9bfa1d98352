"""Fused LIF in PyTorch ops: one autograd node for the whole time loop (any device, any dtype).

The forward pass loops over time on flat ``[M]`` buffers without recording an autograd graph,
with the same elementwise operations, in the same order and dtype, as :func:`~spikegrad.functional.lif_step`,
so the spikes and states are bit-identical to the reference ``scan``. Only the distance to
threshold ``z = v - v_th`` (pre-reset membrane, ``[T, B, F]``) is kept for backward; a step held by
the refractory period is stored as ``-inf`` (surrogate derivative 0).

The backward pass is written by hand. With ``u`` the pre-reset membrane, ``s = H(z)``, ``sg`` the
surrogate derivative at ``z`` and the reset ``v = f(u, s)``, one reverse step is::

    gu_t  = A_t * gv_t + gS_t * sg_t            A = df/du (+ df/ds * sg if the reset is not detached)
    gI_t  = gi_t + act_t * gu_t                 (act = not refractory; gI = grad of i_t, total)
    gx_t  = gI_t
    gv_{t-1} = D_t * gu_t,  gi_{t-1} = ds * gI_t     D = dm if act else 1

Everything that depends on ``z`` only (``sg``, ``A``, ``D``) is computed for a block of ``CHUNK``
steps at once (any registered surrogate's ``grad`` works); the reverse-time loop is then two
first-order linear recurrences, two to four elementwise operations per step. Work buffers stay
small: on CPU, fresh multi-megabyte temporaries cost page faults.

Each elementwise operation runs on all neurons at once, with PyTorch's own intra-op threads.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import FusedConfig, compact_param, reset_into, unflatten_outputs

CHUNK = 4  # steps per saved block: backward vectorises over a block (measured best of 1, 2, 4, 8)


def _forward_loop(x: Tensor, v: Tensor, i: Tensor, r: Tensor | None, dm: Tensor, ds: Tensor,
                  th: Tensor, vr: Tensor, cfg: FusedConfig, keep: bool, spikes: Tensor, rec):
    """Run the LIF recurrence on ``x [T, m]`` in place on ``v, i, r [m]`` (no autograd).

    Writes the spikes into ``spikes [T, m]`` and, with ``cfg.record``, the states into the three
    ``[T, m]`` views of ``rec`` (the third only with a refractory period).

    Products with a 0/1 spike are exact, so ``u - s * th`` in one ``addcmul`` rounds like the two
    operations of :func:`~spikegrad.functional.lif_step`; boolean masks are avoided (slow on CPU).
    ``u > th`` has the sign of the rounded ``u - th`` (no underflow to 0 between floats).

    Returns ``(saved: list of blocks [<=CHUNK, m], saved_u, final v, final i)``. The blocks hold the pre-reset membrane ``u`` in
    the input dtype (``saved_u``; ``z = u - th`` is recomputed in backward, bit for bit) or, in
    low-memory or refractory mode, ``z`` in ``cfg.save_dtype`` with ``-inf`` on held steps; empty
    unless ``keep``.
    """
    T = x.shape[0]
    saved = []
    refr = cfg.refractory > 0
    saved_u = keep and cfg.save_dtype == x.dtype and not refr
    z_t = None if saved_u else torch.empty_like(v)
    u_buf = torch.empty_like(v)
    one = torch.ones((), dtype=x.dtype, device=x.device)
    vr_zero = cfg.reset == "zero" and bool((vr == 0).all())
    if refr:
        act, held, tmp = torch.empty_like(v), torch.empty_like(v), torch.empty_like(v)
        neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    for t in range(T):
        if keep and t % CHUNK == 0:
            dtype = x.dtype if saved_u else cfg.save_dtype
            saved.append(torch.empty((min(CHUNK, T - t), *v.shape), dtype=dtype, device=v.device))
        # with record=True the state is computed straight into the recorded slices
        i_out = rec[1][t] if rec is not None else i
        torch.mul(i, ds, out=i_out)                # i = ds * i + x  (two roundings, as lif_step)
        i = i_out.add_(x[t])
        u = saved[-1][t % CHUNK] if saved_u else u_buf
        torch.mul(v, dm, out=u)                    # u = dm * v + i
        u.add_(i)
        s_t = spikes[t]
        if refr:
            torch.le(r, 0, out=act)                # 1 = may spike, 0 = refractory (holds v)
            torch.sub(one, act, out=held)
            torch.mul(u, act, out=u)               # u = act u + (1 - act) v: one term is 0, exact
            torch.addcmul(u, held, v, out=u)
            torch.sub(u, th, out=z_t)
            torch.gt(z_t, 0, out=s_t)
            s_t.mul_(act)
        elif saved_u:
            torch.gt(u, th, out=s_t)
        else:
            torch.sub(u, th, out=z_t)
            torch.gt(z_t, 0, out=s_t)
        v_out = rec[0][t] if rec is not None else v   # v is not read again this step: in place
        v_new = reset_into(u, s_t, th, vr, vr_zero, cfg.reset, v_out)
        if v_new is not None:
            v = v_new
        elif rec is not None:
            v = v_out.copy_(u)
        elif saved_u:
            v = u                                  # a slice of the saved block (cloned at the end)
        else:
            v, u_buf = u, v
        if refr:                                   # r = s ? n : max(r - 1, 0)
            r.sub_(1).clamp_(min=0)
            torch.sub(one, s_t, out=tmp)
            r.mul_(tmp).add_(s_t, alpha=cfg.refractory)
            torch.where(act > 0, z_t, neg_inf, out=z_t)   # held steps: surrogate derivative 0
            if rec is not None:
                rec[2][t].copy_(r)
        if keep and not saved_u:
            saved[-1][t % CHUNK].copy_(z_t)
    return saved, saved_u, v, i


class _LIFFusedFn(torch.autograd.Function):
    """Fused LIF over time on flat tensors: ``x [T, M]``, states ``[M]``, params ``[1]`` or ``[M]``."""

    @staticmethod
    def forward(ctx, x, v0, i0, r0, dm, ds, th, vr, slope, cfg: FusedConfig, keep_z: bool):
        T, M = x.shape
        refr = cfg.refractory > 0
        v = v0.clone() if v0 is not None else torch.zeros_like(x[0])
        i = i0.clone() if i0 is not None else torch.zeros_like(x[0])
        r = (r0.clone() if r0 is not None else torch.zeros_like(x[0])) if refr else None
        spikes = torch.empty_like(x)
        rec = None
        if cfg.record:
            rec = (torch.empty_like(x), torch.empty_like(x), torch.empty_like(x) if refr else None)
        with torch.no_grad():
            blocks, saved_u, vT, iT = _forward_loop(x, v, i, r, dm, ds, th, vr, cfg, keep_z, spikes, rec)
        if cfg.record or saved_u:  # the final state is a view of a recorded or saved tensor
            vT, iT = vT.clone(), iT.clone()
        ctx.save_for_backward(dm, ds, th, vr, slope, *blocks)
        ctx.cfg, ctx.dtype, ctx.saved_u, ctx.shape = cfg, x.dtype, saved_u, (T, M)
        ctx.set_materialize_grads(False)
        outs = [spikes, vT, iT, r]
        outs += list(rec) if rec is not None else [None, None, None]
        outs = [x.new_empty(0) if o is None else o for o in outs]  # one distinct tensor per slot
        ctx.mark_non_differentiable(outs[3], outs[6])
        return tuple(outs)

    @staticmethod
    def backward(ctx, g_spikes, g_v, g_i, _g_r, g_vseq, g_iseq, _g_rseq):
        dm, ds, th, vr, slope, *blocks = ctx.saved_tensors
        T, M = ctx.shape
        gx = torch.empty((T, M), dtype=ctx.dtype, device=dm.device)
        with torch.no_grad():
            gv0, gi0 = _backward(blocks, ctx.saved_u, dm, ds, th, vr, slope, ctx.cfg, ctx.dtype, g_spikes, g_v, g_i,
                                 g_vseq, g_iseq, gx, ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        return gx, gv0, gi0, None, None, None, None, None, None, None, None


def _backward(z, saved_u: bool, dm, ds, th, vr, slope, cfg: FusedConfig, dtype, g_spikes, g_v, g_i,
              g_vseq, g_iseq, gx: Tensor, want_v0: bool, want_i0: bool):
    """Reverse-time adjoint of :func:`_forward_loop` (equations in the module docstring).

    Works on blocks of ``CHUNK`` steps: the surrogate derivative and the per-step coefficients
    are computed for a block at once, then the two recurrences step through it. Writes the input
    gradient into ``gx [T, m]``; returns the gradients of the initial ``v`` and ``i`` (or None).
    """
    T = sum(blk.shape[0] for blk in z)
    acc = torch.promote_types(dtype, torch.float32)   # bf16 / fp16 recurrences over T lose too much
    dm_a, ds_a, th_a, vr_a = (p.to(acc) for p in (dm, ds, th, vr))
    slope = slope.to(dtype)
    refr = cfg.refractory > 0
    # simple (no refractory period): D = dm, so gu_t = c_t + A_t dm gu_{t+1} in one addcmul
    direct = acc == dtype
    gI = torch.zeros_like(z[0][0], dtype=acc) if g_i is None else g_i.to(acc).clone()  # dL/di_{t}
    gu = torch.empty_like(gI)                          # grad of the pre-reset membrane u_t
    g_tmp = torch.empty_like(gI)
    gv = torch.zeros_like(gI) if g_v is None else g_v.to(acc).clone()  # grad of v_t (after reset)
    t1 = T
    for blk in reversed(z):
        t0 = t1 - blk.shape[0]
        zc = torch.sub(blk, th) if saved_u else blk.to(dtype)   # z = u - th, rounded as in forward
        sg = cfg.grad_fn(zc, slope).to(acc)            # surrogate derivative, [K, B, F]
        act = None                                     # 1 where the neuron could spike
        if refr:
            act = torch.gt(zc, float("-inf"), out=torch.empty_like(sg))   # float out: bool ops are slow
            sg = torch.nan_to_num_(sg.mul_(act), nan=0.0)
        c = torch.zeros_like(sg) if g_spikes is None else sg * g_spikes[t0:t1].to(acc)
        A = None                                       # df/du (+ df/ds * sg); None means 1
        if cfg.reset == "subtract" and not cfg.detach_reset:
            A = 1 - th_a * sg
        elif cfg.reset == "zero":
            A = torch.le(zc, 0, out=torch.empty_like(sg))
            if not cfg.detach_reset:
                u = torch.nan_to_num_(zc.to(acc) + th_a, neginf=0.0)
                A.addcmul_(vr_a - u, sg)
        if g_vseq is not None:                         # recorded v_t: gv_t += g_vseq_t
            c.add_(g_vseq[t0:t1] if A is None else A * g_vseq[t0:t1])
        D = None if act is None else act * dm_a + (1 - act)   # gv_{t-1} = D_t gu_t
        E = None if A is None or refr else A * dm_a           # gu_t = c_t + E_t gu_{t+1}
        for t in range(t1 - 1, t0 - 1, -1):
            k = t - t0
            if not refr and t < T - 1:                 # gv_t = dm gu_{t+1}
                torch.addcmul(c[k], gu, dm_a if E is None else E[k], out=gu)
            elif A is None:                            # gu_t = c_t + A_t gv_t
                torch.add(c[k], gv, out=gu)
            else:
                torch.addcmul(c[k], A[k], gv, out=gu)
            if refr:
                torch.mul(gu, D[k], out=gv)
            w = gu if act is None and g_iseq is None else gu.clone()
            if act is not None:
                w.mul_(act[k])
            if g_iseq is not None:
                w.add_(g_iseq[t])
            out = gx[t] if direct else g_tmp
            if t == T - 1:                             # gI_{T-1} = w + dL/di_{T-1}
                torch.add(w, gI, out=out)
            else:                                      # gI_t = w_t + ds gI_{t+1}
                torch.addcmul(w, gI, ds_a, out=out)
            if direct:
                gI = out
            else:
                gI, g_tmp = out, gI
                gx[t].copy_(out)
        t1 = t0
    if not refr:
        gv = dm_a * gu
    gv0 = gv.to(dtype) if want_v0 else None
    gi0 = (ds_a * gI).to(dtype) if want_i0 else None
    return gv0, gi0


def lif_fused_cpu(x_seq: Tensor, v0: Tensor | None, i0: Tensor | None, r0: Tensor | None,
                  decay_mem, decay_syn, v_th, v_reset, slope: Tensor, cfg: FusedConfig):
    """Fused LIF over ``x_seq [T, B, ...]``; see :func:`spikegrad.kernels.lif_sequence`.

    Returns ``(spikes, v, i, r, v_seq, i_seq, r_seq)`` shaped ``[T, B, ...]`` / ``[B, ...]``;
    ``r`` / the recorded states are None when not requested.
    """
    T = x_seq.shape[0]
    x = x_seq.reshape(T, -1)                                          # [T, M]
    M = x.shape[1]
    flat = [None if s is None else s.reshape(M) for s in (v0, i0)]
    r_flat = None if r0 is None else r0.reshape(M).to(x.dtype)
    params = [compact_param(p, x_seq) for p in (decay_mem, decay_syn, v_th, v_reset)]
    slope = torch.as_tensor(slope, device=x.device).to(x.dtype)
    keep_z = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *flat))
    outs = _LIFFusedFn.apply(x, flat[0], flat[1], r_flat, *params, slope, cfg, keep_z)
    return unflatten_outputs(outs, x_seq, cfg)
