"""Spike functions: Heaviside forward, surrogate-derivative backward.

Every surrogate is defined by two pure functions of the distance to threshold ``x = v - v_th``
(threshold units) and one sharpness ``slope`` (larger = sharper, same name for all of them):

* ``grad(x, slope)``: the surrogate derivative used in the backward pass;
* ``primitive(x, slope)``: its antiderivative with ``primitive(-inf) = 0``, a smooth step used in
  tests and as the forward pass when ``spiking=False``.

The forward pass is always the exact step: ``1`` iff ``x > 0`` (strictly), ``0`` otherwise, in the
input's dtype. Normalisations (``peak`` = value at ``x = 0``, ``area`` = integral over x):

=============  ============================================  ===========  ========
name           grad(x, slope)                                peak         area
=============  ============================================  ===========  ========
fast_sigmoid   1 / (1 + slope |x|)^2  (SuperSpike)           1            2/slope
sigmoid        slope * s (1 - s),  s = sigmoid(slope x)      slope/4      1
atan           (slope/2) / (1 + (pi slope x / 2)^2)          slope/2      1
triangle       slope * max(0, 1 - slope |x|)                 slope        1
gaussian       slope / sqrt(2 pi) * exp(-(slope x)^2 / 2)    0.399 slope  1
exponential    (slope/2) * exp(-slope |x|)                   slope/2      1
boxcar         slope * [|x| < 1 / (2 slope)]  (straight-     slope        1
               through estimator inside a window)
=============  ============================================  ===========  ========

Adding a surrogate takes a subclass with the two static methods and a registry name::

    @register_surrogate("my_quadratic")
    class MyQuadratic(Surrogate):
        default_slope = 2.0

        @staticmethod
        def grad(x, slope):
            return (slope - slope**2 * x.abs()).clamp(min=0)  # any non-negative bump

        @staticmethod
        def primitive(x, slope):
            ...  # antiderivative of grad, 0 at -inf (used by the tests and spiking=False)

after which ``make_surrogate("my_quadratic", slope=3.0)``, neuron arguments
``surrogate="my_quadratic"`` and the Hydra group ``surrogate=`` (given a config file) all accept it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

GradFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "SURROGATES",
    "Surrogate",
    "FastSigmoid",
    "Sigmoid",
    "ATan",
    "Triangle",
    "Gaussian",
    "Exponential",
    "Boxcar",
    "heaviside",
    "spike_fn",
    "register_surrogate",
    "registered_name",
    "make_surrogate",
]


class _SpikeFn(torch.autograd.Function):
    """Heaviside step with the backward pass of ``grad(x, slope)``."""

    @staticmethod
    def forward(x: Tensor, slope: Tensor, grad: GradFn) -> Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, slope, grad = inputs
        ctx.save_for_backward(x, slope)
        ctx.grad = grad

    @staticmethod
    def backward(ctx, g: Tensor):
        x, slope = ctx.saved_tensors
        return g * ctx.grad(x, slope).to(g.dtype), None, None


def heaviside(x: Tensor) -> Tensor:
    """Exact step ``1[x > 0]`` in the dtype of ``x`` (no gradient)."""
    return (x > 0).to(x.dtype)


def spike_fn(x: Tensor, slope: Tensor | float, grad: GradFn) -> Tensor:
    """Functional spike: Heaviside forward, ``grad(x, slope)`` backward.

    Args:
        x: distance to threshold ``v - v_th`` (threshold units), any shape.
        slope: sharpness, a float or 0-dim tensor.
        grad: a surrogate derivative, e.g. ``FastSigmoid.grad``.
    Returns:
        spikes of the shape and dtype of ``x``, values exactly 0 or 1.
    """
    if not isinstance(slope, Tensor):
        slope = torch.tensor(float(slope), dtype=x.dtype, device=x.device)
    return _SpikeFn.apply(x, slope, grad)


SURROGATES: dict[str, type["Surrogate"]] = {}


def register_surrogate(name: str):
    """Class decorator: register a :class:`Surrogate` subclass under ``name``."""

    def deco(cls: type[Surrogate]) -> type[Surrogate]:
        if not (isinstance(cls, type) and issubclass(cls, Surrogate)):
            raise TypeError(f"register_surrogate({name!r}) expects a Surrogate subclass, got {cls!r}")
        if name in SURROGATES and SURROGATES[name] is not cls:
            raise ValueError(f"surrogate name {name!r} is already registered to {SURROGATES[name].__name__}")
        SURROGATES[name] = cls
        cls.name = name
        return cls

    return deco


class Surrogate(nn.Module):
    """Base class: a spike nonlinearity with a surrogate derivative.

    Args:
        slope: sharpness (> 0); stored as a 0-dim float32 buffer so it can be changed during
            training (annealing) without re-compiling a compiled model.
        spiking: if False, the forward pass is the smooth ``primitive`` instead of the step
            (useful to pre-train a rate model or to visualise the surrogate).
    Input/output: any shape; the output has the dtype of the input.
    """

    name: str = ""
    default_slope: float = 1.0

    def __init__(self, slope: float | None = None, spiking: bool = True):
        super().__init__()
        slope = self.default_slope if slope is None else slope
        if isinstance(slope, Tensor):
            slope = float(slope)
        if not isinstance(slope, (int, float)) or not math.isfinite(slope) or slope <= 0:
            raise ValueError(f"{type(self).__name__}: slope must be a positive finite number, got {slope!r}")
        self.register_buffer("slope", torch.tensor(float(slope)))
        self.spiking = bool(spiking)

    @staticmethod
    def grad(x: Tensor, slope: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def primitive(x: Tensor, slope: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        slope = self.slope.to(x.dtype)
        if self.spiking:
            return _SpikeFn.apply(x, slope, type(self).grad)
        return type(self).primitive(x, slope)

    def extra_repr(self) -> str:
        return f"slope={float(self.slope):g}, spiking={self.spiking}"


@register_surrogate("fast_sigmoid")
class FastSigmoid(Surrogate):
    """SuperSpike surrogate (Zenke & Ganguli 2018): ``1 / (1 + slope |x|)^2``, peak 1."""

    default_slope = 25.0

    @staticmethod
    def grad(x, slope):
        return (1 + slope * x.abs()).pow(-2)

    @staticmethod
    def primitive(x, slope):
        return (1 + slope * x / (1 + slope * x.abs())) / slope


@register_surrogate("superspike_asymptotic")
class SuperSpikeAsymptotic(Surrogate):
    """SuperSpike scaled by its slope: ``slope / (1 + slope |x|)^2``, the derivative of the fast
    sigmoid ``slope x / (1 + slope |x|)``; its peak grows with the slope (the "asymptotic" form of
    Zenke & Vogels 2021, against :class:`FastSigmoid`'s peak of 1)."""

    default_slope = 25.0

    @staticmethod
    def grad(x, slope):
        return slope * (1 + slope * x.abs()).pow(-2)

    @staticmethod
    def primitive(x, slope):
        return 1 + slope * x / (1 + slope * x.abs())


@register_surrogate("sigmoid")
class Sigmoid(Surrogate):
    """Derivative of the logistic sigmoid ``sigmoid(slope x)``, area 1."""

    default_slope = 5.0

    @staticmethod
    def grad(x, slope):
        s = torch.sigmoid(slope * x)
        return slope * s * (1 - s)

    @staticmethod
    def primitive(x, slope):
        return torch.sigmoid(slope * x)


@register_surrogate("atan")
class ATan(Surrogate):
    """Arctangent surrogate (Fang et al. 2021): ``(slope/2) / (1 + (pi slope x / 2)^2)``, area 1."""

    default_slope = 2.0

    @staticmethod
    def grad(x, slope):
        return (slope / 2) / (1 + (math.pi / 2 * slope * x).pow(2))

    @staticmethod
    def primitive(x, slope):
        return 0.5 + torch.atan(math.pi / 2 * slope * x) / math.pi


@register_surrogate("triangle")
class Triangle(Surrogate):
    """Piecewise-linear surrogate (Esser et al. 2016; Bellec et al. 2018), support ``|x| < 1/slope``."""

    default_slope = 1.0

    @staticmethod
    def grad(x, slope):
        return slope * (1 - slope * x.abs()).clamp(min=0)

    @staticmethod
    def primitive(x, slope):
        u = (slope * x).clamp(-1, 1)
        return 0.5 + u - 0.5 * u * u.abs()


@register_surrogate("gaussian")
class Gaussian(Surrogate):
    """Gaussian surrogate (Yin et al. 2021): a normal density of standard deviation ``1/slope``."""

    default_slope = 2.0

    @staticmethod
    def grad(x, slope):
        return slope / math.sqrt(2 * math.pi) * torch.exp(-0.5 * (slope * x).pow(2))

    @staticmethod
    def primitive(x, slope):
        return 0.5 * (1 + torch.erf(slope * x / math.sqrt(2)))


@register_surrogate("exponential")
class Exponential(Surrogate):
    """Exponential (Laplace) surrogate (Shrestha & Orchard 2018): ``(slope/2) exp(-slope |x|)``."""

    default_slope = 5.0

    @staticmethod
    def grad(x, slope):
        return 0.5 * slope * torch.exp(-slope * x.abs())

    @staticmethod
    def primitive(x, slope):
        e = 0.5 * torch.exp(-slope * x.abs())
        return torch.where(x > 0, 1 - e, e)


@register_surrogate("boxcar")
class Boxcar(Surrogate):
    """Straight-through estimator inside a window: ``slope`` for ``|x| < 1/(2 slope)``, else 0."""

    default_slope = 1.0

    @staticmethod
    def grad(x, slope):
        return slope * (x.abs() < 0.5 / slope).to(x.dtype)

    @staticmethod
    def primitive(x, slope):
        return (slope * x + 0.5).clamp(0, 1)


def registered_name(grad_fn: GradFn) -> str | None:
    """The registry name of the surrogate whose ``grad`` is ``grad_fn`` (None if no registered
    class defines it): how the fast kernels recognise a derivative they compute themselves."""
    return next((name for name, cls in SURROGATES.items() if cls.grad is grad_fn), None)


def make_surrogate(name: str | Surrogate, **kwargs) -> Surrogate:
    """Build a surrogate from its registry name (``SURROGATES``) and keyword arguments.

    An existing :class:`Surrogate` instance is returned as a deep copy, so two layers never share
    (and anneal) one object by accident.
    """
    if isinstance(name, Surrogate):
        if kwargs:
            raise ValueError("make_surrogate: keyword arguments are only accepted with a surrogate name")
        import copy

        return copy.deepcopy(name)
    if not isinstance(name, str) or name not in SURROGATES:
        known = ", ".join(sorted(SURROGATES))
        raise ValueError(f"unknown surrogate {name!r}; known surrogates: {known}. "
                         "Register new ones with @spikegrad.surrogates.register_surrogate(name).")
    return SURROGATES[name](**kwargs)
