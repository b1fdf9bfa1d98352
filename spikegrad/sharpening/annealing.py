"""Surrogate-slope annealing: drive the surrogates of a spiking model with a sharpening schedule.

Each :class:`~spikegrad.surrogates.Surrogate` of the model gets a :class:`SurrogateSlope` handle that
maps a sharpness ``s`` in [0, 1] to ``slope = slope_min * (slope_max / slope_min) ** s`` (geometric:
equal steps of ``s`` multiply the slope by equal factors), so the schedules of
:mod:`spikegrad.sharpening.schedules` anneal surrogate-gradient training from smooth to sharp, also
layer by layer (``mode="bottom_up"``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..surrogates import Surrogate
from .activations import check_sharpness
from .. import checks
from .schedules import Sharpener

__all__ = ["SurrogateSlope", "SurrogateAnnealer", "surrogate_slopes"]


class SurrogateSlope:
    """Sharpness handle of a surrogate: ``slope = slope_min * (slope_max / slope_min) ** s``.

    Geometric, so equal steps of ``s`` multiply the slope by equal factors. ``set_sharpness`` writes
    the surrogate's 0-dim ``slope`` buffer in place (a compiled model is not re-specialised).
    """

    def __init__(self, surrogate: Surrogate, slope_min: float, slope_max: float):
        if not isinstance(surrogate, Surrogate):
            raise TypeError("SurrogateSlope: expected a spikegrad.surrogates.Surrogate, "
                            f"got {type(surrogate).__name__}")
        if not (checks.is_number(slope_min) and checks.is_number(slope_max) and 0 < slope_min <= slope_max):
            raise ValueError(f"SurrogateSlope: need 0 < slope_min <= slope_max, got slope_min={slope_min!r}, "
                             f"slope_max={slope_max!r}")
        self.surrogate, self.slope_min, self.slope_max = surrogate, float(slope_min), float(slope_max)
        self._s = 0.0

    def slope_at(self, sharpness: float) -> float:
        """The slope for a sharpness in [0, 1]."""
        return self.slope_min * (self.slope_max / self.slope_min) ** check_sharpness(sharpness)

    def set_sharpness(self, sharpness: float) -> None:
        self._s = check_sharpness(sharpness)
        with torch.no_grad():
            self.surrogate.slope.fill_(self.slope_at(self._s))

    def get_sharpness(self) -> float:
        return self._s


def surrogate_slopes(model: nn.Module, slope_min: float, slope_max: float) -> list[SurrogateSlope]:
    """A :class:`SurrogateSlope` for every surrogate in ``model``, in module order (input to output)."""
    handles = [SurrogateSlope(m, slope_min, slope_max) for m in model.modules() if isinstance(m, Surrogate)]
    if not handles:
        raise ValueError(f"{type(model).__name__} contains no spikegrad.surrogates.Surrogate modules to anneal")
    return handles


class SurrogateAnnealer:
    """Anneal a surrogate-gradient network from smooth to sharp surrogates with any schedule.

    Every surrogate in ``model`` gets a :class:`SurrogateSlope` handle; ``schedule(handles,
    gradient=None, stop_when_sharp=False)`` builds the schedule (a schedule class or a
    ``functools.partial`` of one, as Hydra's ``_partial_: true`` gives), whose sharpness ``s`` sets
    ``slope = slope_min * (slope_max / slope_min) ** s``. The surrogates keep their own gradients, and
    training goes on after the last slope is reached (:attr:`stop_training` is always False). The
    annealer forwards the training-loop hooks, so it is passed to ``fit`` as the ``sharpener``.

    Args:
        model: a network containing :class:`~spikegrad.surrogates.Surrogate` modules.
        schedule: callable ``handles -> Sharpener``, e.g. ``partial(SimpleSharpener, duration=10)``.
        slope_min, slope_max: slopes at sharpness 0 and 1 (0 < slope_min <= slope_max).
    """

    def __init__(self, model: nn.Module, schedule: Callable[[list], Sharpener], slope_min: float = 1.0,
                 slope_max: float = 25.0):
        self.handles = surrogate_slopes(model, slope_min, slope_max)
        self.schedule = schedule(self.handles, gradient=None, stop_when_sharp=False)
        if not isinstance(self.schedule, Sharpener):
            raise TypeError(f"SurrogateAnnealer: schedule(handles) must return a Sharpener, got "
                            f"{type(self.schedule).__name__}")

    @property
    def done(self) -> bool:
        return self.schedule.done

    @property
    def stop_training(self) -> bool:
        """Always False: annealing does not end training."""
        return False

    @property
    def slopes(self) -> list[float]:
        """Current slope of every surrogate, input to output."""
        return [float(h.surrogate.slope) for h in self.handles]

    def on_batch_end(self, epoch: int, batch: int, loss: float) -> None:
        self.schedule.on_batch_end(epoch, batch, loss)

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        self.schedule.on_epoch_end(epoch, metrics)

    def scalars(self) -> dict[str, float]:
        return {**self.schedule.scalars(), **{f"slope{k}": s for k, s in enumerate(self.slopes)}}

    def state_dict(self) -> dict:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.schedule.load_state_dict(state)
