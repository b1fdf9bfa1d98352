"""A ``Linear`` over every time step whose input gradient is one batched product per step.

For a narrow layer (few outputs, e.g. a 10-class readout) the input gradient ``g @ W`` of
``F.linear`` on ``[T * B, K]`` is a matrix product with a tiny inner dimension, which CPU BLAS
libraries run far below their speed (measured 4x slower than the same product batched over
``T``). :func:`seq_linear` computes the same numbers, with the input gradient as ``T`` products
of ``[B, N] @ [N, K]`` (``torch.bmm``); the forward pass and the weight gradient are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["seq_linear", "NARROW"]

NARROW = 64  # out_features up to which seq_linear batches the input gradient (CPU)


class _SeqLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, weight = ctx.saved_tensors
        T, B, N = g.shape
        gx = gw = gb = None
        g = g.to(weight.dtype)  # under autocast the output (and its gradient) may be bfloat16
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(g, weight.expand(T, N, weight.shape[1])).to(x.dtype)       # [T, B, K]
        if ctx.needs_input_grad[1]:
            gw = g.reshape(-1, N).t().mm(x.reshape(-1, x.shape[-1]).to(weight.dtype))  # [N, K]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum((0, 1))
        return gx, gw, gb


def seq_linear(x_seq: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x_seq, weight, bias)`` for ``x_seq [T, B, K]`` -> ``[T, B, N]``.

    Narrow layers (``N <= NARROW``) on CPU take the batched input gradient; everything else is
    plain ``F.linear``. Values and gradients equal those of ``F.linear`` up to float rounding.
    """
    if (x_seq.dim() == 3 and x_seq.device.type == "cpu" and weight.shape[0] <= NARROW
            and torch.is_grad_enabled() and x_seq.requires_grad):
        return _SeqLinearFn.apply(x_seq, weight, bias)
    return F.linear(x_seq, weight, bias)
