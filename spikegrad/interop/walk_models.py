"""The walkers of :mod:`spikegrad.models` for :func:`~spikegrad.interop.to_nir`: ``nn.Sequential``
and :class:`~spikegrad.models.SeqWise` chains, :class:`~spikegrad.models.SpikingMLP`,
:class:`~spikegrad.models.SpikingConvNet`."""

from __future__ import annotations

from torch import nn

from ..models import SeqWise, SpikingConvNet, SpikingMLP
from .export import Exporter, walk

__all__ = ["walk_seqwise", "walk_sequential", "walk_mlp", "walk_convnet"]


@walk.register(SeqWise)
def walk_seqwise(model: SeqWise, ex: Exporter, prefix: str = "") -> None:
    """The wrapped stateless layer; its input shape is the caller's."""
    ex.start(None, model)
    ex.module(prefix.rstrip("."), model.module)


@walk.register(nn.Sequential)
def walk_sequential(model: nn.Sequential, ex: Exporter, prefix: str = "") -> None:
    """The children in order, nested ``nn.Sequential`` / ``SeqWise`` unwrapped; the input shape is the caller's."""
    ex.start(None, model)
    for name, layer in model.named_children():
        if isinstance(layer, (nn.Sequential, SeqWise)):
            walk(layer, ex, f"{prefix}{name}.")
        else:
            ex.module(f"{prefix}{name}", layer)


@walk.register(SpikingMLP)
def walk_mlp(model: SpikingMLP, ex: Exporter, prefix: str = "") -> None:
    """``flatten`` (``nn.Flatten(1)`` stands for the flattening of the input), then per layer
    ``layers.k`` and ``neurons.k``."""
    ex.start((model.sizes[0],), model)
    ex.module(f"{prefix}flatten", nn.Flatten(1))
    for k, (layer, neuron) in enumerate(zip(model.layers, model.neurons)):
        ex.module(f"{prefix}layers.{k}", layer.module)
        ex.module(f"{prefix}neurons.{k}", neuron)


@walk.register(SpikingConvNet)
def walk_convnet(model: SpikingConvNet, ex: Exporter, prefix: str = "") -> None:
    """Per block ``blocks.k``, ``neurons.k``, ``pool.k``, then the head under ``head.``."""
    ex.start(tuple(model.in_shape), model)
    for k, (conv, neuron) in enumerate(zip(model.blocks, model.neurons)):
        ex.module(f"{prefix}blocks.{k}", conv.module)
        ex.module(f"{prefix}neurons.{k}", neuron)
        ex.module(f"{prefix}pool.{k}", model.pool.module)
    walk(model.head, ex, f"{prefix}head.")
