"""The modules that run an imported NIR graph: :class:`NIRNetwork` (the chain :func:`~spikegrad.interop.from_nir`
builds) and the stateless NIR nodes spikegrad has no module for (:class:`Scale`, :class:`Threshold`,
:class:`SumPool2d`)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import NetworkState
from ..models import SpikingOutput
from ..neurons import LI, LIF
from ..surrogates import heaviside

__all__ = ["NIRNetwork", "Scale", "Threshold", "SumPool2d"]


def _float_tensor(value: Any) -> Tensor:
    t = torch.as_tensor(value)
    return (t if t.is_floating_point() else t.to(torch.float32)).detach().clone()


class Scale(nn.Module):
    """Per-element gain: ``y = x * scale`` (NIR ``Scale``). ``[T, B, ...] -> [T, B, ...]``."""

    def __init__(self, scale: Tensor):
        super().__init__()
        self.register_buffer("scale", _float_tensor(scale))

    def forward(self, x_seq: Tensor) -> Tensor:
        return x_seq * self.scale.to(x_seq.dtype)


class Threshold(nn.Module):
    """Stateless threshold neurons (NIR ``Threshold``): ``spikes = H(x - threshold)``, strictly greater.

    ``threshold`` broadcasts against one step ``[B, ...]``. ``[T, B, ...] -> [T, B, ...]`` in {0, 1},
    dtype of the input.
    """

    def __init__(self, threshold: Tensor):
        super().__init__()
        self.register_buffer("threshold", _float_tensor(threshold))

    def forward(self, x_seq: Tensor) -> Tensor:
        return heaviside(x_seq - self.threshold.to(x_seq.dtype))


class SumPool2d(nn.Module):
    """Sum over windows (NIR ``SumPool2d``): ``[N, C, H, W] -> [N, C, H', W']`` (wrap in :class:`SeqWise`)."""

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int]):
        super().__init__()
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, count_include_pad=True,
                            divisor_override=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class NIRNetwork(nn.Module):
    """A feed-forward chain of spikegrad modules built by :func:`from_nir`.

    Args:
        names: the NIR node name of each module.
        layers: the modules; stateless layers are wrapped in :class:`SeqWise`.
        spiking: per module, whether its output counts as hidden spikes.
        input_shape: shape of one input step without batch, e.g. ``(256,)`` or ``(1, 16, 16)``.
        metadata: the graph's metadata (dt, discretization, reset, ...), as read.
    Shapes: ``forward(x_seq [T, B, *input_shape], state=None) -> SpikingOutput(readout [T, B, ...],
    spikes, (), state)`` with ``spikes`` the outputs of every spiking module but the last and
    ``state`` the final state of every neuron module, in order, a
    :class:`~spikegrad.functional.NetworkState` of ``[B, ...]`` states (pass it back to continue the run).
    """

    def __init__(self, names: Sequence[str], layers: Sequence[nn.Module], spiking: Sequence[bool],
                 input_shape: Sequence[int], metadata: dict | None = None):
        super().__init__()
        self.names = list(names)
        self.layers = nn.ModuleList(layers)
        self.spiking = [bool(s) for s in spiking]
        self.input_shape = tuple(int(s) for s in input_shape)
        self.metadata = dict(metadata or {})

    def forward(self, x_seq: Tensor, state: NetworkState | None = None) -> SpikingOutput:
        if x_seq.dim() < 2 or tuple(x_seq.shape[2:]) != self.input_shape:
            raise ValueError(f"NIRNetwork: input must be [T, B, {', '.join(map(str, self.input_shape))}], got "
                             f"{tuple(x_seq.shape)}")
        stateful = [isinstance(layer, (LIF, LI)) for layer in self.layers]
        states = iter(NetworkState.of("NIRNetwork", state, sum(stateful)))
        h, spikes, finals = x_seq, [], []
        last = len(self.layers) - 1
        for k, (layer, spiking) in enumerate(zip(self.layers, self.spiking)):
            if stateful[k]:
                h, final = layer(h, next(states))
                finals.append(final)
            else:
                h = layer(h)
            if spiking and k < last:
                spikes.append(h)
        return SpikingOutput(h, tuple(spikes), (), NetworkState(finals))
