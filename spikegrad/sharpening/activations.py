"""Sharpenable activations: a bounded ramp that narrows into the binary step as sharpness -> 1.

With sharpness ``s`` in [0, 1] and ramp width ``w = 1 - s`` centred on 0.5 (Whetstone's bounded
ReLU, Severa et al. 2019)::

    brelu(x; s)   = clamp((x - 0.5) / w + 0.5, 0, 1)     # s = 0: clamp(x, 0, 1)
    sigmoid(x; s) = sigmoid(4 (x - 0.5) / w)             # slope 1 at x = 0.5 for s = 0, like brelu
    both, s = 1:    H(x - 0.5) = 1 iff x > 0.5 (strictly; x = 0.5 gives 0), the project's spike rule

These are the ``primitive`` (smooth step) of the surrogates ``boxcar`` and ``sigmoid`` of
:mod:`spikegrad.surrogates`, evaluated at ``x - 0.5`` with ``slope = c / w`` (``c = 1`` and ``4``).

Gradient: the backward pass is always ``surrogate.grad(x - 0.5, c / max(w, min_width))``, the
derivative of the ramp of width ``max(1 - s, min_width)``. While ``w >= min_width`` this is the exact
derivative of the forward pass; once the ramp is narrower (in particular at ``s = 1``, where the
forward is the exact step) the ramp of width ``min_width`` serves as surrogate gradient. Its
integral over x is 1 at every sharpness, so the expected gradient size does not blow up.

* ``min_width = 1`` (default): the backward pass is always the derivative of the ``s = 0`` ramp,
  i.e. the straight-through estimator of binarized networks (gradient 1 for ``0 < x < 1``); only
  the forward pass sharpens. In short MNIST trials (bottom-up, 2 epochs per layer) it lost the
  least accuracy in sharpening: 784-256-64 on 10k images lost 0.6 point with ``min_width = 1``,
  1.5 with 0.5, 1.4 with 0.3 and 7.4 with 0.1; 784-512-256 on 20k images lost 0.1 point with 1
  and 0.4 with 0.5.
* ``0 < min_width < 1``: the gradient follows the sharpening down to that width.
* ``min_width = 0``: the exact Whetstone gradient (none at all at ``s = 1``, so a fully sharp
  network stops learning).

Sharpness is a 0-dim buffer changed in place by :meth:`Sharpenable.set_sharpness`, so a compiled
model is not re-specialised when the sharpness changes, and checkpoints of the model carry it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..surrogates import Boxcar, Sigmoid

__all__ = ["ACTIVATIONS", "Sharpenable", "SharpBReLU", "SharpSigmoid", "sharpen_act", "make_activation",
           "sharpenable_layers", "check_sharpness"]

GradFn = Callable[[Tensor, Tensor], Tensor]
_TINY_WIDTH = 1e-12  # keeps slope = c / w finite; the branch it feeds is masked when w == 0


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


class _SharpenFn(torch.autograd.Function):
    """Ramp of width ``1 - s`` (exact step at ``s = 1``); backward of width ``max(1 - s, min_width)``."""

    @staticmethod
    def forward(x: Tensor, sharpness: Tensor, min_width: float, scale: float,
                primitive: GradFn, grad: GradFn) -> Tensor:
        u = x - 0.5
        width = 1 - sharpness
        soft = primitive(u, scale / width.clamp(min=_TINY_WIDTH))
        return torch.where(width > 0, soft, (u > 0).to(x.dtype))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, sharpness, min_width, scale, _, grad = inputs
        ctx.save_for_backward(x, sharpness)
        ctx.min_width, ctx.scale, ctx.grad = min_width, scale, grad

    @staticmethod
    def backward(ctx, g: Tensor):
        x, sharpness = ctx.saved_tensors
        width = (1 - sharpness).clamp(min=ctx.min_width)
        d = ctx.grad(x - 0.5, ctx.scale / width.clamp(min=_TINY_WIDTH))
        d = torch.where(width > 0, d, torch.zeros_like(d))  # min_width = 0 at s = 1: no gradient
        return g * d.to(g.dtype), None, None, None, None, None


_KINDS: dict[str, tuple[float, GradFn, GradFn]] = {  # name -> (slope scale c, primitive, grad)
    "brelu": (1.0, Boxcar.primitive, Boxcar.grad),
    "sigmoid": (4.0, Sigmoid.primitive, Sigmoid.grad),
}


def sharpen_act(x: Tensor, sharpness: Tensor | float, kind: str = "brelu", min_width: float = 1.0) -> Tensor:
    """Functional sharpenable activation (equations in the module docstring).

    Args:
        x: pre-activation, any shape, floating point.
        sharpness: ``s`` in [0, 1], a float or 0-dim tensor (not validated here: this is the
            traceable core; modules validate in :meth:`Sharpenable.set_sharpness`).
        kind: ``"brelu"`` (bounded ReLU ramp) or ``"sigmoid"``.
        min_width: smallest ramp width used by the backward pass, in [0, 1] (1 = straight-through
            estimator of the s = 0 ramp; 0 = exact gradient, none at s = 1).
    Returns:
        activations of the shape and dtype of ``x`` in [0, 1]; exactly ``1[x > 0.5]`` at ``s = 1``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    scale, primitive, grad = _KINDS[kind]
    if not isinstance(sharpness, Tensor):
        sharpness = torch.tensor(float(sharpness), device=x.device)
    return _SharpenFn.apply(x, sharpness.to(x.dtype), float(min_width), scale, primitive, grad)


class Sharpenable(nn.Module):
    """Base of the sharpenable activations (math in :func:`sharpen_act`).

    Args:
        sharpness: initial sharpness in [0, 1], stored as a 0-dim float32 buffer ``sharpness``.
        min_width: smallest ramp width of the backward pass, in [0, 1] (see the module docstring).
    Shapes: ``forward(x [B, ...]) -> [B, ...]`` (any shape), dtype of ``x``.
    """

    kind: str = ""

    def __init__(self, sharpness: float = 0.0, min_width: float = 1.0):
        super().__init__()
        if isinstance(min_width, bool) or not isinstance(min_width, (int, float)) \
                or not 0.0 <= min_width <= 1.0:
            raise ValueError(f"{type(self).__name__}: min_width must be a number in [0, 1] (ramp width of the "
                             f"backward pass at full sharpness; 0 = no gradient at s = 1), got {min_width!r}")
        self.min_width = float(min_width)
        self.register_buffer("sharpness", torch.tensor(check_sharpness(sharpness)))

    def set_sharpness(self, sharpness: float) -> None:
        """Set the sharpness in place (no new tensor, so compiled graphs stay valid)."""
        value = check_sharpness(sharpness)
        with torch.no_grad():
            self.sharpness.fill_(value)

    def get_sharpness(self) -> float:
        """The current sharpness as a Python float."""
        return float(self.sharpness)

    @property
    def fully_sharp(self) -> bool:
        """True when the forward pass is the exact binary step."""
        return self.get_sharpness() >= 1.0

    def forward(self, x: Tensor) -> Tensor:
        return sharpen_act(x, self.sharpness, self.kind, self.min_width)

    def extra_repr(self) -> str:
        return f"sharpness={self.get_sharpness():g}, min_width={self.min_width:g}"


class SharpBReLU(Sharpenable):
    """Whetstone's sharpenable bounded ReLU: ramp from ``s/2`` to ``1 - s/2``, step at ``s = 1``."""

    kind = "brelu"


class SharpSigmoid(Sharpenable):
    """Sharpenable sigmoid ``sigmoid(4 (x - 0.5) / (1 - s))``, step at ``s = 1``."""

    kind = "sigmoid"


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
