"""Whetstone networks: layers of ``Linear/Conv2d -> BatchNorm -> sharpenable activation``.

Every model keeps its layers in one ``nn.Sequential`` (``model.layers``, input to output) ending in
the output code ``[B, n_classes * n_hot]`` (also a sharpenable activation, so it is binary once
sharp), followed by a fixed (not learned) decoder that turns the code into logits ``[B, n_classes]``
for softmax cross-entropy (:class:`spikegrad.losses.CrossEntropy`):

* ``decoder="softmax"`` (default), Whetstone's ``Softmax_Decode``: ``logits = (2 code - 1)(2 K - 1)^T``
  with a ``{0, 1}`` key ``K [n_classes, width]`` of ``n_hot`` ones per class, drawn at random from
  ``key_seed`` (:func:`random_key`; ``overlapping=True`` lets two classes share units, as
  Whetstone's default key; ``False`` gives disjoint classes). Each unit adds +1 to the logit of the
  classes whose key has it when it is on and -1 when it is off, and the reverse for the others.
* ``decoder="nhot"``, :class:`NHotDecoder`: class ``c``'s logit is the sum of its ``n_hot``
  contiguous units. With a disjoint key, the softmax decoder's logits are ``4 x`` these plus a
  constant, so this is the same decision with a 4x softer softmax.

The predicted class is the argmax of the logits (ties go to the lowest class index). Max-pooling
comes after the activation, so pooled binary maps stay binary (max of bits = OR).
:func:`spikegrad.sharpening.export_binary` turns a fully sharpened model into threshold neurons.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .activations import make_activation

__all__ = ["DECODERS", "NHotDecoder", "SoftmaxDecoder", "random_key", "make_decoder", "ImageInput", "WhetstoneMLP",
           "WhetstoneConvNet"]


def _check_count(who: str, name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")
    return v


def random_key(n_classes: int, width: int, overlapping: bool = True,
               generator: torch.Generator | None = None) -> Tensor:
    """Whetstone's random output key: ``width // n_classes`` distinct units per class.

    Each class draws its units uniformly without replacement, from all ``width`` units
    (``overlapping=True``, classes may share units) or from the units no earlier class took
    (``overlapping=False``: disjoint classes, linearly independent rows).

    Args:
        n_classes: number of classes (rows).
        width: units of the output code (columns), >= n_classes.
        overlapping: allow classes to share units.
        generator: random generator (a seeded one reproduces the key).
    Returns:
        key [n_classes, width], float32, values in {0, 1}, ``width // n_classes`` ones per row.
    """
    _check_count("random_key", "n_classes", n_classes)
    _check_count("random_key", "width", width)
    per_class = width // n_classes
    if per_class < 1:
        raise ValueError(f"random_key: width={width} < n_classes={n_classes} gives no unit per class; "
                         "make the output code at least n_classes wide")
    key = torch.zeros(n_classes, width)
    free = torch.ones(width, dtype=torch.bool)
    for c in range(n_classes):
        candidates = torch.arange(width) if overlapping else free.nonzero().squeeze(1)
        picked = candidates[torch.randperm(len(candidates), generator=generator)[:per_class]]
        key[c, picked] = 1.0
        free[picked] = False
    return key


class SoftmaxDecoder(nn.Module):
    """Whetstone's softmax decoder: ``logits = (2 code - 1) @ (2 key - 1)^T`` (fixed, not learned).

    Args:
        key: ``[n_classes, width]`` in {0, 1} (e.g. :func:`random_key`), stored as buffer ``key``
            so checkpoints carry it.
    Shapes: ``forward(code [B, width]) -> logits [B, n_classes]``, dtype of ``code``.
    """

    def __init__(self, key: Tensor):
        super().__init__()
        key = torch.as_tensor(key, dtype=torch.float32)
        if key.dim() != 2 or key.numel() == 0 or not bool(((key == 0) | (key == 1)).all()):
            raise ValueError(f"SoftmaxDecoder: key must be a non-empty [n_classes, width] tensor of 0s and 1s, got "
                             f"shape {tuple(key.shape)}")
        self.register_buffer("key", key.clone())

    @property
    def n_classes(self) -> int:
        return self.key.shape[0]

    @property
    def width(self) -> int:
        """Output units the decoder expects."""
        return self.key.shape[1]

    def forward(self, code: Tensor) -> Tensor:
        if code.shape[-1] != self.width:
            raise ValueError(f"SoftmaxDecoder: the output code has width {code.shape[-1]} but the key has "
                             f"{self.width} columns; make the output layer as wide as the key")
        return (2 * code - 1) @ (2 * self.key.to(code.dtype) - 1).T  # [B, W] @ [W, C] -> [B, C]

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, width={self.width}"


class NHotDecoder(nn.Module):
    """Fixed (not learned) N-hot decoder: class score = sum of the class's ``n_hot`` output units.

    Units ``[c * n_hot, (c + 1) * n_hot)`` belong to class ``c``. ``forward(code [B, C * n_hot])
    -> scores [B, C]`` (dtype of ``code``); ``encode(y [B]) -> [B, C * n_hot]`` gives the N-hot
    target code.
    """

    def __init__(self, n_classes: int, n_hot: int):
        super().__init__()
        self.n_classes = _check_count("NHotDecoder", "n_classes", n_classes)
        self.n_hot = _check_count("NHotDecoder", "n_hot", n_hot)

    @property
    def width(self) -> int:
        """Output units the decoder expects: ``n_classes * n_hot``."""
        return self.n_classes * self.n_hot

    def forward(self, code: Tensor) -> Tensor:
        w = code.shape[-1]
        if w != self.width:
            hint = (f"{w} is not divisible by n_classes={self.n_classes}" if w % self.n_classes
                    else f"that is n_hot={w // self.n_classes}, not {self.n_hot}")
            raise ValueError(f"NHotDecoder: the output code has width {w} but n_classes * n_hot = "
                             f"{self.n_classes} * {self.n_hot} = {self.width} ({hint}); make the output layer "
                             f"n_classes * n_hot units wide")
        return code.unflatten(-1, (self.n_classes, self.n_hot)).sum(-1)  # [B, C, n_hot] -> [B, C]

    def encode(self, y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """N-hot target code of labels ``y [B]`` (int64): ``[B, C * n_hot]`` in {0, 1}."""
        onehot = torch.nn.functional.one_hot(y, self.n_classes).to(dtype)  # [B, C]
        return onehot.repeat_interleave(self.n_hot, dim=-1)

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, n_hot={self.n_hot}"


DECODERS = ("softmax", "nhot")


def make_decoder(name: str, n_classes: int, n_hot: int, overlapping: bool = True,
                 key_seed: int = 0) -> SoftmaxDecoder | NHotDecoder:
    """The decoder of an output code of ``n_classes * n_hot`` units by name (see the module docstring).

    ``"softmax"``: :class:`SoftmaxDecoder` with ``random_key(n_classes, n_classes * n_hot, overlapping)``
    drawn from a generator seeded with ``key_seed``; ``"nhot"``: :class:`NHotDecoder` (the key
    arguments are unused).
    """
    if name == "nhot":
        return NHotDecoder(n_classes, n_hot)
    if name != "softmax":
        raise ValueError(f"unknown decoder {name!r}; known: {', '.join(DECODERS)}")
    width = _check_count("make_decoder", "n_classes", n_classes) * _check_count("make_decoder", "n_hot", n_hot)
    if isinstance(key_seed, bool) or not isinstance(key_seed, int):
        raise ValueError(f"make_decoder: key_seed must be an int, got {key_seed!r}")
    return SoftmaxDecoder(random_key(n_classes, width, bool(overlapping), torch.Generator().manual_seed(key_seed)))


class ImageInput(nn.Module):
    """Reshape a batch of images to ``[B, *shape]`` (``[B, H, W]`` and ``[B, 1, H, W]`` both work)."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor) -> Tensor:
        if x[0].numel() != math.prod(self.shape):
            raise ValueError(f"expected inputs with {math.prod(self.shape)} values per sample (shape "
                             f"{list(self.shape)}), got shape {list(x.shape)}; check data.size and the model's "
                             "input size")
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}"


def _block(layer: nn.Module, width: int, conv: bool, batch_norm: bool, activation: str,
           min_width: float) -> list[nn.Module]:
    bn = [(nn.BatchNorm2d if conv else nn.BatchNorm1d)(width)] if batch_norm else []
    return [layer, *bn, make_activation(activation, min_width=min_width)]


def _check_sizes(who: str, name: str, sizes: Sequence[int], min_len: int) -> list[int]:
    sizes = list(sizes)
    if len(sizes) < min_len or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"{who}: {name} must be a list of at least {min_len} positive ints, got {sizes!r}")
    return sizes


class _Whetstone(nn.Module):
    def code(self, x: Tensor) -> Tensor:
        """The output code ``[B, n_classes * n_hot]`` (binary once fully sharp)."""
        return self.layers(x)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, ...]`` images in [0, 1] -> class scores ``[B, n_classes]`` (logits)."""
        return self.decoder(self.layers(x))


class WhetstoneMLP(_Whetstone):
    """Dense Whetstone network, e.g. ``784 -> 256 -> 64 -> 10 * n_hot``.

    Args:
        sizes: input size then hidden widths, e.g. ``[784, 256, 64]``.
        n_classes, n_hot: the output layer has ``n_classes * n_hot`` units, ``n_hot`` per class.
        activation: ``"brelu"`` or ``"sigmoid"`` (:mod:`~spikegrad.sharpening.activations`).
        min_width: ramp width of the backward pass at full sharpness (0: Whetstone's exact gradient,
            1: straight-through; a sharpening schedule's ``gradient`` overrides it).
        decoder: ``"softmax"`` (Whetstone's, random key) or ``"nhot"`` (see the module docstring).
        overlapping: the random key may give two classes the same unit (Whetstone's default).
        key_seed: seed of the random key.
        batch_norm: BatchNorm after every Linear (folded into the thresholds on export).
        dropout: dropout probability after each hidden activation (0: none).
    Shapes: ``forward(x [B, ...] with sizes[0] values per sample) -> [B, n_classes]``.
    """

    def __init__(self, sizes: Sequence[int] = (784, 256, 64), n_classes: int = 10, n_hot: int = 10,
                 activation: str = "brelu", min_width: float = 0.0, batch_norm: bool = True,
                 dropout: float = 0.0, decoder: str = "softmax", overlapping: bool = True, key_seed: int = 0):
        super().__init__()
        sizes = _check_sizes("WhetstoneMLP", "sizes", sizes, 1)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"WhetstoneMLP: dropout must be in [0, 1), got {dropout!r}")
        decoder = make_decoder(decoder, n_classes, n_hot, overlapping, key_seed)
        mods: list[nn.Module] = [ImageInput((sizes[0],))]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            mods += _block(nn.Linear(n_in, n_out, bias=not batch_norm), n_out, False, batch_norm, activation,
                           min_width)
            if dropout:
                mods.append(nn.Dropout(dropout))
        mods += _block(nn.Linear(sizes[-1], decoder.width, bias=not batch_norm), decoder.width, False, batch_norm,
                       activation, min_width)
        self.layers = nn.Sequential(*mods)
        self.decoder = decoder


class WhetstoneConvNet(_Whetstone):
    """Convolutional Whetstone network: ``[conv -> BN -> act -> maxpool] * k -> dense layers``.

    Args:
        in_shape: ``[channels, height, width]`` of one input.
        channels: output channels of each conv layer (kernel ``kernel_size``, "same" padding), each
            followed by BatchNorm, the activation and a ``pool x pool`` max-pool.
        hidden: widths of the dense hidden layers after flattening.
        n_classes, n_hot, activation, min_width, batch_norm, dropout, decoder, overlapping, key_seed:
            as :class:`WhetstoneMLP` (dropout only after dense hidden layers).
    Shapes: ``forward(x [B, C, H, W] or [B, H, W]) -> [B, n_classes]``.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), channels: Sequence[int] = (32, 64),
                 kernel_size: int = 5, pool: int = 2, hidden: Sequence[int] = (256,), n_classes: int = 10,
                 n_hot: int = 10, activation: str = "brelu", min_width: float = 0.0, batch_norm: bool = True,
                 dropout: float = 0.0, decoder: str = "softmax", overlapping: bool = True, key_seed: int = 0):
        super().__init__()
        in_shape = _check_sizes("WhetstoneConvNet", "in_shape", in_shape, 3)
        channels = _check_sizes("WhetstoneConvNet", "channels", channels, 1)
        hidden = _check_sizes("WhetstoneConvNet", "hidden", hidden, 0)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"WhetstoneConvNet: kernel_size must be a positive odd int, got {kernel_size!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"WhetstoneConvNet: dropout must be in [0, 1), got {dropout!r}")
        c, h, w = in_shape
        if h % pool ** len(channels) or w % pool ** len(channels):
            raise ValueError(f"WhetstoneConvNet: input {h}x{w} is not divisible by pool**layers = "
                             f"{pool ** len(channels)}; change pool or the number of conv layers")
        decoder = make_decoder(decoder, n_classes, n_hot, overlapping, key_seed)
        mods: list[nn.Module] = [ImageInput(in_shape)]
        for c_out in channels:
            conv = nn.Conv2d(c, c_out, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
            mods += _block(conv, c_out, True, batch_norm, activation, min_width) + [nn.MaxPool2d(pool)]
            c, h, w = c_out, h // pool, w // pool
        mods.append(nn.Flatten())
        n = c * h * w
        for width in hidden:
            mods += _block(nn.Linear(n, width, bias=not batch_norm), width, False, batch_norm, activation, min_width)
            if dropout:
                mods.append(nn.Dropout(dropout))
            n = width
        mods += _block(nn.Linear(n, decoder.width, bias=not batch_norm), decoder.width, False, batch_norm,
                       activation, min_width)
        self.layers = nn.Sequential(*mods)
        self.decoder = decoder
