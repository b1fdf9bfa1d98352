"""The walkers of the Whetstone models (:mod:`spikegrad.sharpening`) for :func:`~spikegrad.interop.to_nir`,
and the NIR nodes of their binary layers and decoders.

A sharpened ``WhetstoneMLP``/``WhetstoneConvNet`` is exported as its
:class:`~spikegrad.sharpening.BinaryNet` (:func:`~spikegrad.sharpening.export_binary`), which runs
one step per input: ``Linear/Conv2d -> Threshold`` per layer, then the decoder's logits.
"""

from __future__ import annotations

import torch
from torch import nn

from ..sharpening.export import BinaryNet, ThresholdLayer, export_binary
from ..sharpening.models import ImageInput, NHotDecoder, SoftmaxDecoder, WhetstoneConvNet, WhetstoneMLP
from .export import Exporter, _run_step, export_layer, for_check, walk

__all__ = ["walk_whetstone", "walk_binary", "sharpened_limit"]


@walk.register(WhetstoneMLP)
@walk.register(WhetstoneConvNet)
def walk_whetstone(model: nn.Module, ex: Exporter, prefix: str = "") -> None:
    """The model's :class:`~spikegrad.sharpening.BinaryNet` (the model must be fully sharpened)."""
    walk(export_binary(model), ex, prefix)


@for_check.register(WhetstoneMLP)
@for_check.register(WhetstoneConvNet)
def sharpened_limit(model: nn.Module) -> BinaryNet:
    """What :func:`~spikegrad.interop.check_nir_export` checks for a Whetstone model at any
    sharpness: the binary net of its fully sharpened limit."""
    return export_binary(model, force=True)


@walk.register(BinaryNet)
def walk_binary(model: BinaryNet, ex: Exporter, prefix: str = "") -> None:
    """``layers.k`` in order, then ``decoder``; the input shape is the ``ImageInput``'s, if it starts with one."""
    first = model.layers[0] if len(model.layers) else None
    ex.start(tuple(first.shape) if isinstance(first, ImageInput) else None, model)
    for k, layer in enumerate(model.layers):
        ex.module(f"{prefix}layers.{k}", layer)
    ex.module(f"{prefix}decoder", model.decoder)


@export_layer.register(ThresholdLayer)
def _threshold_layer(m: ThresholdLayer, ex: Exporter, name: str) -> bool:
    nir = ex.nir
    if m.conv is None:
        ex.add(name, nir.Linear(weight=ex.array(m.weight)))
    else:
        ex.add(name, ex.conv(f"{name} ({type(m).__name__})", m.weight, None, m.conv, ex.shape))
    out = _run_step(m, ex.shape)
    thr = m.threshold if m.conv is None else m.threshold[:, None, None]
    ex.add(f"{name}.threshold", nir.Threshold(threshold=ex.array(thr, out)))
    return True


@export_layer.register(SoftmaxDecoder)
def _softmax_decoder(m: SoftmaxDecoder, ex: Exporter, name: str) -> bool:
    # logits = (2 code - 1) @ (2 key - 1)^T, integers: exact
    key = 2 * m.key.to(torch.float64) - 1                   # [C, W]
    ex.add(name, ex.nir.Affine(weight=ex.array(2 * key), bias=ex.array(-key.sum(1))))
    return False


@export_layer.register(NHotDecoder)
def _n_hot_decoder(m: NHotDecoder, ex: Exporter, name: str) -> bool:
    w = torch.eye(m.n_classes, dtype=torch.float64).repeat_interleave(m.n_hot, dim=1)  # [C, C * n_hot]
    ex.add(name, ex.nir.Linear(weight=ex.array(w)))
    return False


@export_layer.register(ImageInput)
def _image_input(m: ImageInput, ex: Exporter, name: str) -> bool:
    return ex.binary  # no node: the image enters as it is
