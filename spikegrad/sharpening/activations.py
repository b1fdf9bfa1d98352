"""Sharpenable activations: a bounded ramp that narrows into the binary step as sharpness -> 1.

With sharpness ``s`` in [0, 1], ramp width ``w = 1 - s`` and ``eps = WIDTH_EPS = 1e-3`` (Whetstone's
``Spiking_BRelu`` and ``Spiking_Sigmoid``, Severa et al. 2019)::

    brelu(x; s)   = clamp((x - 0.5) / (w + eps) + 0.5, 0, 1)   # center 0.5; s = 0: ~clamp(x, 0, 1)
    sigmoid(x; s) = sigmoid(k x),  k = 4 ln(2 + sqrt 3) / (w + eps)   # center 0
    both, s = 1:    H(x - center), 1 iff x > center (strictly: the project's spike rule)

The sigmoid's ``k`` maps the width to a steepness through the roots of its third derivative (its
knees, ``k x = +-ln(2 + sqrt 3)``), which lie at ``x = +-(w + eps) / 4``. These are
the ``primitive`` (smooth step) of the surrogates ``boxcar`` and ``sigmoid`` of
:mod:`spikegrad.surrogates`, evaluated at ``x - center`` with ``slope = c / (w + eps)``, ``c = 1``
and ``4 ln(2 + sqrt 3)``. (Whetstone's step is ``x >= center``; here ``x == center`` gives 0.)

Gradient: the backward pass is ``surrogate.grad(x - center, c / (max(w, min_width) + eps))``, the
derivative of the ramp of width ``max(1 - s, min_width)``, and 0 where that width is 0.

* ``min_width = 0`` (``gradient="exact"``, the default): Whetstone's gradient, the derivative of the
  current forward pass. It vanishes at ``s = 1``, so a fully sharp layer passes no gradient to the
  layers below it and its own weights stop learning.
* ``min_width = 1`` (``gradient="ste"``): the derivative of the ``s = 0`` ramp at every sharpness,
  the straight-through estimator of binarized networks (gradient ~1 for ``0 < x < 1``); only the
  forward pass sharpens. In short MNIST trials (bottom-up, 2 epochs per layer, fine-tuning after
  sharpening) it lost the least accuracy in sharpening: 784-256-64 on 10k images lost 0.6 point with
  ``min_width = 1``, 1.5 with 0.5, 1.4 with 0.3 and 7.4 with 0.1; 784-512-256 on 20k images lost 0.1
  point with 1 and 0.4 with 0.5.
* ``0 < min_width < 1``: the gradient follows the sharpening down to that width.

Sharpness is a 0-dim buffer changed in place by :meth:`Sharpenable.set_sharpness`, so a compiled
model is not re-specialised when the sharpness changes, and checkpoints of the model carry it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..surrogates import Boxcar, Sigmoid

__all__ = ["ACTIVATIONS", "GRADIENTS", "WIDTH_EPS", "Sharpenable", "SharpBReLU", "SharpSigmoid", "sharpen_act",
           "make_activation", "sharpenable_layers", "check_sharpness", "check_min_width"]

GradFn = Callable[[Tensor, Tensor], Tensor]
WIDTH_EPS = 1e-3  # Whetstone's lambda: the ramp of width w has slope c / (w + eps), finite just below s = 1
GRADIENTS: dict[str, float] = {"exact": 0.0, "ste": 1.0}  # gradient name -> min_width


def check_sharpness(sharpness: float, name: str = "sharpness") -> float:
    """Validate a sharpness (a number in [0, 1]) and return it as a float."""
    if isinstance(sharpness, Tensor):
        if sharpness.numel() != 1:
            raise ValueError(f"{name} must be a single number in [0, 1], got a tensor of shape "
                             f"{tuple(sharpness.shape)}")
        sharpness = float(sharpness)
    if isinstance(sharpness, bool) or not isinstance(sharpness, (int, float)) \
            or not math.isfinite(sharpness) or not 0.0 <= sharpness <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (0 = bounded ReLU, 1 = binary step), "
                         f"got {sharpness!r}")
    return float(sharpness)


def check_min_width(min_width: float | str, who: str) -> float:
    """Validate a backward ramp width: a number in [0, 1] or a name of :data:`GRADIENTS`."""
    if isinstance(min_width, str):
        if min_width not in GRADIENTS:
            raise ValueError(f"{who}: gradient must be one of {sorted(GRADIENTS)} (exact = Whetstone's derivative of "
                             f"the current ramp, ste = straight-through), got {min_width!r}")
        return GRADIENTS[min_width]
    if isinstance(min_width, bool) or not isinstance(min_width, (int, float)) or not 0.0 <= min_width <= 1.0:
        raise ValueError(f"{who}: min_width must be a number in [0, 1] (ramp width of the backward pass at full "
                         f"sharpness; 0 = Whetstone's exact gradient, 1 = straight-through), got {min_width!r}")
    return float(min_width)


class _SharpenFn(torch.autograd.Function):
    """Ramp of width ``1 - s`` (exact step at ``s = 1``); backward of width ``max(1 - s, min_width)``."""

    @staticmethod
    def forward(x: Tensor, sharpness: Tensor, min_width: float, scale: float, center: float,
                primitive: GradFn, grad: GradFn) -> Tensor:
        u = x - center
        soft = primitive(u, scale / (1 - sharpness + WIDTH_EPS))
        return torch.where(sharpness < 1, soft, (u > 0).to(x.dtype))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, sharpness, min_width, scale, center, _, grad = inputs
        ctx.save_for_backward(x, sharpness)
        ctx.min_width, ctx.scale, ctx.center, ctx.grad = min_width, scale, center, grad

    @staticmethod
    def backward(ctx, g: Tensor):
        x, sharpness = ctx.saved_tensors
        width = (1 - sharpness).clamp(min=ctx.min_width)
        d = ctx.grad(x - ctx.center, ctx.scale / (width + WIDTH_EPS))
        d = torch.where(width > 0, d, torch.zeros_like(d))  # exact gradient of the step at s = 1: none
        return g * d.to(g.dtype), None, None, None, None, None, None


_KINDS: dict[str, tuple[float, float, GradFn, GradFn]] = {  # name -> (slope scale c, center, primitive, grad)
    "brelu": (1.0, 0.5, Boxcar.primitive, Boxcar.grad),
    "sigmoid": (4.0 * math.log(2.0 + math.sqrt(3.0)), 0.0, Sigmoid.primitive, Sigmoid.grad),
}


def sharpen_act(x: Tensor, sharpness: Tensor | float, kind: str = "brelu", min_width: float = 0.0) -> Tensor:
    """Functional sharpenable activation (equations in the module docstring).

    Args:
        x: pre-activation, any shape, floating point.
        sharpness: ``s`` in [0, 1], a float or 0-dim tensor (not validated here: this is the
            traceable core; modules validate in :meth:`Sharpenable.set_sharpness`).
        kind: ``"brelu"`` (bounded ReLU ramp centerd on 0.5) or ``"sigmoid"`` (centerd on 0).
        min_width: smallest ramp width used by the backward pass, in [0, 1] (0 = Whetstone's exact
            gradient, none at s = 1; 1 = straight-through estimator of the s = 0 ramp).
    Returns:
        activations of the shape and dtype of ``x`` in [0, 1]; exactly ``1[x > center]`` at ``s = 1``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    scale, center, primitive, grad = _KINDS[kind]
    if not isinstance(sharpness, Tensor):
        sharpness = torch.tensor(float(sharpness), dtype=x.dtype, device=x.device)
    return _SharpenFn.apply(x, sharpness.to(x.dtype), float(min_width), scale, center, primitive, grad)


class Sharpenable(nn.Module):
    """Base of the sharpenable activations (math in :func:`sharpen_act`).

    Args:
        sharpness: initial sharpness in [0, 1], stored as a 0-dim float32 buffer ``sharpness``.
        min_width: smallest ramp width of the backward pass, a number in [0, 1] or a name of
            :data:`GRADIENTS` (``"exact"`` = 0, Whetstone's; ``"ste"`` = 1); see the module docstring.
    Shapes: ``forward(x [B, ...]) -> [B, ...]`` (any shape), dtype of ``x``.
    """

    kind: str = ""
    center: float = 0.0  # the step is 1[x > center] at full sharpness

    def __init__(self, sharpness: float = 0.0, min_width: float | str = 0.0):
        super().__init__()
        self.min_width = check_min_width(min_width, type(self).__name__)
        self.register_buffer("sharpness", torch.tensor(check_sharpness(sharpness)))

    def set_sharpness(self, sharpness: float) -> None:
        """Set the sharpness in place (no new tensor, so compiled graphs stay valid)."""
        value = check_sharpness(sharpness)
        with torch.no_grad():
            self.sharpness.fill_(value)

    def get_sharpness(self) -> float:
        """The current sharpness as a Python float."""
        return float(self.sharpness)

    def set_gradient(self, gradient: float | str) -> None:
        """Set the backward ramp width: ``"exact"`` (0), ``"ste"`` (1) or a number in [0, 1]."""
        self.min_width = check_min_width(gradient, type(self).__name__)

    @property
    def fully_sharp(self) -> bool:
        """True when the forward pass is the exact binary step."""
        return self.get_sharpness() >= 1.0

    def forward(self, x: Tensor) -> Tensor:
        return sharpen_act(x, self.sharpness, self.kind, self.min_width)

    def extra_repr(self) -> str:
        return f"sharpness={self.get_sharpness():g}, min_width={self.min_width:g}"


class SharpBReLU(Sharpenable):
    """Whetstone's ``Spiking_BRelu``: ``clamp((x - 0.5) / (1 - s + eps) + 0.5, 0, 1)``; ``1[x > 0.5]`` at ``s = 1``."""

    kind = "brelu"
    center = 0.5


class SharpSigmoid(Sharpenable):
    """Whetstone's ``Spiking_Sigmoid``: ``sigmoid(4 ln(2 + sqrt 3) x / (1 - s + eps))``; ``1[x > 0]`` at ``s = 1``."""

    kind = "sigmoid"
    center = 0.0


ACTIVATIONS: dict[str, type[Sharpenable]] = {"brelu": SharpBReLU, "sigmoid": SharpSigmoid}


def make_activation(name: str, **kwargs) -> Sharpenable:
    """Build a sharpenable activation by name (``"brelu"`` or ``"sigmoid"``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown sharpenable activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name](**kwargs)


def sharpenable_layers(model: nn.Module) -> list[Sharpenable]:
    """Every :class:`Sharpenable` in ``model``, in module registration order.

    For the models of :mod:`spikegrad.sharpening.models` (and any ``nn.Sequential``) this is the
    order from the input to the output, the order bottom-up sharpening follows.
    """
    return [m for m in model.modules() if isinstance(m, Sharpenable)]
