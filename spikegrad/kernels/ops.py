"""The C kernels and the sparse input layer as torch custom operators, for ``torch.compile``.

Compiled graphs cannot call into ctypes or branch on data: without these operators a compiled
model falls back to the unrolled time loop (recompiled for every new ``T``) and breaks its graph
at the sparse first layer. Registered with :mod:`torch.library` (fake implementations for
shape propagation, autograd formulas that call the backward kernels), they appear in a compiled
graph as single nodes whose shapes are symbolic in ``T``:

* ``spikegrad::lif`` / ``spikegrad::lif_backward``: :func:`spikegrad.kernels.native.lif_forward`
  and :func:`~spikegrad.kernels.native.lif_backward`;
* ``spikegrad::li`` / ``spikegrad::li_backward``: the leaky integrator;
* ``spikegrad::sparse_linear`` / ``spikegrad::sparse_linear_backward``: ``F.linear`` on the
  non-zeros of a spike input (:mod:`spikegrad.kernels.sparse`), weight gradient on the non-zeros;
  :func:`sparse_linear_eager` is the product both the operator and eager code run.

:func:`spikegrad.kernels.lif_sequence` and friends use them while ``torch.compile`` traces; eager
code keeps the ``autograd.Function``\\ s (same kernels, same numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..surrogates import SURROGATES
from . import native
from ._common import FusedConfig, compact_param, unflatten_outputs

__all__ = ["lif_op", "li_op", "sparse_linear_op", "lif_compiled", "li_compiled"]


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


# ------------------------------------------------------------------------------ LIF
@torch.library.custom_op("spikegrad::lif", mutates_args=())
def lif_op(x: Tensor, v0: Tensor, i0: Tensor, r0: Tensor, dm: Tensor, ds: Tensor, th: Tensor, vr: Tensor,
           slope: Tensor, reset: str, detach_reset: bool, refractory: int, record: bool, keep_z: bool,
           surrogate: str, recompute: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """LIF over ``x [T, M]`` from states ``[M]`` (``r0`` empty without a refractory period).

    Returns ``(spikes, v, i, r, v_seq, i_seq, r_seq, z)``; outputs not asked for are empty.
    ``recompute``: backward recomputes ``z`` from ``x`` and the initial states (``keep_z`` False).
    """
    outs = native.lif_forward(x, v0, i0, r0 if refractory > 0 else None, dm, ds, th, vr, reset, refractory, record,
                              keep_z, x.shape[0])
    return tuple(_empty(x) if o is None else o for o in outs)


@lif_op.register_fake
def _(x, v0, i0, r0, dm, ds, th, vr, slope, reset, detach_reset, refractory, record, keep_z, surrogate, recompute):
    T, M = x.shape
    seq, state = x.new_empty((T, M)), x.new_empty((M,))
    rec = (x.new_empty((T, M)), x.new_empty((T, M))) if record else (_empty(x), _empty(x))
    r_seq = x.new_empty((T, M)) if record and refractory > 0 else _empty(x)
    return (seq, state, x.new_empty((M,)), x.new_empty((M,)) if refractory > 0 else _empty(x), *rec, r_seq,
            x.new_empty((T, M)) if keep_z else _empty(x))


@torch.library.custom_op("spikegrad::lif_backward", mutates_args=())
def lif_backward_op(T: int, M: int, z: Tensor, x: Tensor, v0: Tensor, i0: Tensor, r0: Tensor, refractory: int,
                    dm: Tensor, ds: Tensor, th: Tensor, vr: Tensor, slope: Tensor, reset: str, detach_reset: bool,
                    surrogate: str, g_spikes: Tensor | None, g_v: Tensor | None, g_i: Tensor | None,
                    g_vseq: Tensor | None, g_iseq: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(x [T, M], v0 [M], i0 [M])`` of :func:`lif_op`: from the stored ``z [T, M]``, or
    with ``z`` empty recomputed from the input ``x [T, M]`` and the initial states (else empty)."""
    recompute = None if z.numel() else (x, v0, i0, r0 if refractory > 0 else None, refractory)
    return native.lif_backward(z if z.numel() else None, dm, ds, th, vr, slope, SURROGATES[surrogate].grad, reset,
                               detach_reset, g_spikes, g_v, g_i, g_vseq, g_iseq, recompute=recompute, T=T)


@lif_backward_op.register_fake
def _(T, M, z, x, v0, i0, r0, refractory, dm, ds, th, vr, slope, reset, detach_reset, surrogate, g_spikes, g_v,
      g_i, g_vseq, g_iseq):
    return x.new_empty((T, M)), x.new_empty((M,)), x.new_empty((M,))


def _lif_setup(ctx, inputs, output):
    x, v0, i0, r0, dm, ds, th, vr, slope, reset, detach_reset, refractory, record, keep_z, surrogate, recompute = inputs
    # with recompute, z (output 7) is empty and the input and initial states are kept instead
    kept = (x, v0, i0, r0) if recompute else (x[:0], v0[:0], i0[:0], r0[:0])
    ctx.save_for_backward(dm, ds, th, vr, slope, output[7], *kept)
    ctx.conf = (reset, detach_reset, surrogate, record, refractory)
    ctx.shape = x.shape


def _lif_grad(ctx, g_spikes, g_v, g_i, _g_r, g_vseq, g_iseq, _g_rseq, _g_z):
    dm, ds, th, vr, slope, z, x, v0, i0, r0 = ctx.saved_tensors
    reset, detach_reset, surrogate, record, refractory = ctx.conf
    if not record:
        g_vseq = g_iseq = None
    gx, gv, gi = lif_backward_op(*ctx.shape, z, x, v0, i0, r0, refractory, dm, ds, th, vr, slope, reset,
                                 detach_reset, surrogate, g_spikes, g_v, g_i, g_vseq, g_iseq)
    return gx, gv, gi, None, None, None, None, None, None, None, None, None, None, None, None, None


lif_op.register_autograd(_lif_grad, setup_context=_lif_setup)


# ------------------------------------------------------------------------------ LI
@torch.library.custom_op("spikegrad::li", mutates_args=())
def li_op(x: Tensor, v0: Tensor, i0: Tensor, dm: Tensor, ds: Tensor,
          record: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Leaky integrator over ``x [T, M]``: ``(v_seq, v, i, i_seq)`` (``i_seq`` empty unless recording)."""
    v_seq, v, i, i_seq = native.li_forward(x, v0, i0, dm, ds, record)
    return v_seq, v, i, _empty(x) if i_seq is None else i_seq


@li_op.register_fake
def _(x, v0, i0, dm, ds, record):
    T, M = x.shape
    return x.new_empty((T, M)), x.new_empty((M,)), x.new_empty((M,)), x.new_empty((T, M)) if record else _empty(x)


@torch.library.custom_op("spikegrad::li_backward", mutates_args=())
def li_backward_op(dm: Tensor, ds: Tensor, like: Tensor, g_vseq: Tensor | None, g_v: Tensor | None,
                   g_i: Tensor | None, g_iseq: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(x [T, M], v0 [M], i0 [M])`` of :func:`li_op` (``like``: a ``[T, M]`` tensor)."""
    T, M = like.shape
    return native.li_backward(dm, ds, T, M, g_vseq, g_v, g_i, g_iseq)


@li_backward_op.register_fake
def _(dm, ds, like, g_vseq, g_v, g_i, g_iseq):
    T, M = like.shape
    return like.new_empty((T, M)), like.new_empty((M,)), like.new_empty((M,))


def _li_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[3], inputs[4], output[0])
    ctx.record = inputs[5]


def _li_grad(ctx, g_vseq, g_v, g_i, g_iseq):
    dm, ds, v_seq = ctx.saved_tensors
    gx, gv, gi = li_backward_op(dm, ds, v_seq, g_vseq, g_v, g_i, g_iseq if ctx.record else None)
    return gx, gv, gi, None, None, None


li_op.register_autograd(_li_grad, setup_context=_li_setup)


# ------------------------------------------------------------------------------ sparse input layer
def dense_only(x: Tensor, weight: Tensor) -> bool:
    """Whether ``F.linear(x, weight)`` takes the dense path whatever the density of ``x``: an input
    off the CPU, not float32/float64, of another dtype than ``weight``, needing a gradient, or empty."""
    return (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dtype != weight.dtype
            or (x.requires_grad and torch.is_grad_enabled()) or x.numel() == 0)


def sparse_linear_eager(x: Tensor, weight: Tensor, bias: Tensor | None = None, max_density: float = 0.05) -> Tensor:
    """:func:`spikegrad.kernels.sparse.sparse_linear` outside ``torch.compile`` (same arguments and
    result): the products on the non-zeros of ``x [..., K]`` (one ``embedding_bag`` bag per row),
    or ``F.linear`` when :func:`dense_only` or when ``x`` is denser than ``max_density``."""
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"sparse_linear: max_density must be in [0, 1], got {max_density!r}")
    if dense_only(x, weight):
        return F.linear(x, weight, bias)
    K = x.shape[-1]
    x2 = x.reshape(-1, K)                                # [R, K]
    R = x2.shape[0]
    flat = x2.reshape(-1).nonzero().squeeze(1)          # [nnz], row-major
    if flat.numel() > max_density * x2.numel():
        return F.linear(x, weight, bias)
    rows = torch.div(flat, K, rounding_mode="floor")
    cols = flat - rows * K
    vals = x2.reshape(-1)[flat]
    offsets = torch.zeros(R, dtype=torch.int64, device=x.device)   # start of each row's bag
    torch.cumsum(torch.bincount(rows, minlength=R)[:-1], 0, out=offsets[1:])
    y = F.embedding_bag(cols, weight.t().contiguous(), offsets, mode="sum", per_sample_weights=vals)  # [R, N]
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("spikegrad::sparse_linear", mutates_args=())
def sparse_linear_op(x: Tensor, weight: Tensor, bias: Tensor | None, max_density: float) -> Tensor:
    """``F.linear(x, weight, bias)`` for ``x [R, K]``, on the non-zeros of ``x`` when at most a
    fraction ``max_density`` of it is non-zero (:func:`spikegrad.kernels.sparse.sparse_linear`)."""
    return sparse_linear_eager(x, weight, bias, max_density)


@sparse_linear_op.register_fake
def _(x, weight, bias, max_density):
    return x.new_empty((x.shape[0], weight.shape[0]))


@torch.library.custom_op("spikegrad::sparse_linear_backward", mutates_args=())
def sparse_linear_backward_op(x: Tensor, g: Tensor, max_density: float) -> Tensor:
    """The weight gradient ``g.T @ x`` ``[N, K]`` for ``x [R, K]``, ``g [R, N]``: on the non-zeros
    of ``x`` when it is sparse enough, else one dense product."""
    rows, cols = x.nonzero(as_tuple=True)
    if rows.numel() > max_density * x.numel():
        return g.t() @ x
    gw = g.new_zeros((g.shape[1], x.shape[1]))
    gw.index_add_(1, cols, (g[rows] * x[rows, cols][:, None]).t())
    return gw


@sparse_linear_backward_op.register_fake
def _(x, g, max_density):
    return g.new_empty((g.shape[1], x.shape[1]))


def _sparse_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.has_bias = inputs[2] is not None
    ctx.max_density = inputs[3]


def _sparse_grad(ctx, g):
    x, weight = ctx.saved_tensors
    gx = g @ weight if ctx.needs_input_grad[0] else None
    gw = sparse_linear_backward_op(x, g, ctx.max_density) if ctx.needs_input_grad[1] else None
    gb = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return gx, gw, gb, None


sparse_linear_op.register_autograd(_sparse_grad, setup_context=_sparse_setup)


# ------------------------------------------------------------------------------ callers
def lif_compiled(x_seq: Tensor, v0: Tensor | None, i0: Tensor | None, r0: Tensor | None, decay_mem, decay_syn,
                 v_th, v_reset, slope: Tensor, cfg: FusedConfig, surrogate: str) -> tuple:
    """:func:`spikegrad.kernels.native.lif_native` through :func:`lif_op` (same contract)."""
    T = x_seq.shape[0]
    x = x_seq.reshape(T, -1).contiguous()                            # [T, M]
    M = x.shape[1]
    consts = [compact_param(p, x_seq) for p in (decay_mem, decay_syn, v_th, v_reset)]
    keep_z = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x_seq, v0, i0))
    recompute = keep_z and surrogate in native.SURROGATE_CODES  # the kernels compute its derivative
    v0, i0 = (x.new_zeros(M) if s is None else s.reshape(M).to(x.dtype) for s in (v0, i0))
    r0 = x.new_zeros(M) if r0 is None else r0.reshape(M).to(x.dtype)
    outs = lif_op(x, v0, i0, r0, *consts, torch.as_tensor(slope).to(x.dtype), cfg.reset, cfg.detach_reset,
                  cfg.refractory, cfg.record, keep_z and not recompute, surrogate, recompute)
    return unflatten_outputs(outs[:7], x_seq, cfg)


def li_compiled(x_seq: Tensor, v0: Tensor | None, i0: Tensor | None, decay_mem, decay_syn,
                record: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """:func:`spikegrad.kernels.native.li_native` through :func:`li_op` (same contract)."""
    T = x_seq.shape[0]
    x = x_seq.reshape(T, -1).contiguous()
    M = x.shape[1]
    dm, ds = (compact_param(p, x_seq) for p in (decay_mem, decay_syn))
    v0, i0 = (x.new_zeros(M) if s is None else s.reshape(M).to(x.dtype) for s in (v0, i0))
    v_seq, v, i, i_seq = li_op(x, v0, i0, dm, ds, record)
    step = x_seq.shape[1:]
    return v_seq.reshape(x_seq.shape), v.reshape(step), i.reshape(step), i_seq.reshape(x_seq.shape) if record else None
