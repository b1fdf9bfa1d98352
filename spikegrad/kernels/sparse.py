"""Linear layers on sparse spike input (e.g. latency codes: every pixel fires at most once).

A latency-coded 16x16 image over ``T = 100`` steps is < 1 % non-zero, yet a dense ``Linear`` on
``[T * B, 256]`` spends the same multiply-adds as on a dense input, in forward and again for the
weight gradient. :func:`sparse_linear` gathers the non-zeros once and runs both products on them
only. It takes the dense path whenever that is as good: the input needs a gradient (a hidden
layer), is on an accelerator, or is denser than ``max_density``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .ops import dense_only, sparse_linear_eager, sparse_linear_op

__all__ = ["sparse_linear", "SparseInputLinear"]


def sparse_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, max_density: float = 0.05) -> Tensor:
    """``F.linear(x, weight, bias)``, computed on the non-zeros of ``x`` when that pays.

    The non-zeros of each row of ``x`` become one bag of :func:`torch.nn.functional.embedding_bag`
    (``mode="sum"``, the input values as per-sample weights) over the table ``weight.T``, so the
    forward pass and the weight gradient both cost ``O(nnz * N)`` instead of ``O(rows * K * N)``.

    Args:
        x: input ``[..., K]`` (e.g. spikes ``[T, B, K]`` or ``[T * B, K]``), float.
        weight: ``[N, K]``. bias: ``[N]`` or None.
        max_density: the largest fraction of non-zeros of ``x`` for which the sparse path is used.
    Returns:
        ``[..., N]``, equal to ``F.linear`` up to float rounding (sums in another order).

    The sparse path runs on CPU tensors that need no gradient (float32/float64); ``weight`` and
    ``bias`` get their gradients as usual. Anything else goes to ``F.linear``. The product is
    :func:`spikegrad.kernels.ops.sparse_linear_eager`; under ``torch.compile`` it runs as the
    custom operator :func:`spikegrad.kernels.ops.sparse_linear_op`.
    """
    if torch.compiler.is_compiling() and 0.0 <= max_density <= 1.0 and not dense_only(x, weight):
        K = x.shape[-1]  # the same computation as one custom operator (no data-dependent shapes)
        y = sparse_linear_op(x.reshape(-1, K), weight, bias, float(max_density))
        return y.reshape(*x.shape[:-1], weight.shape[0])
    return sparse_linear_eager(x, weight, bias, max_density)


class SparseInputLinear(nn.Linear):
    """``nn.Linear`` that uses :func:`sparse_linear`: a drop-in first layer for spike-coded input.

    Shapes as ``nn.Linear``: ``[..., in_features] -> [..., out_features]``.

    Args:
        max_density: largest fraction of non-zero inputs that takes the sparse path.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, max_density: float = 0.05,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if not 0.0 <= max_density <= 1.0:
            raise ValueError(f"SparseInputLinear: max_density must be in [0, 1], got {max_density!r}")
        self.max_density = max_density

    @classmethod
    def from_linear(cls, layer: nn.Linear, max_density: float = 0.05) -> "SparseInputLinear":
        """A SparseInputLinear sharing the parameters of ``layer`` (no copy)."""
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, max_density=max_density,
                  device=layer.weight.device, dtype=layer.weight.dtype)
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def forward(self, x: Tensor) -> Tensor:
        return sparse_linear(x, self.weight, self.bias, self.max_density)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_density={self.max_density}"
