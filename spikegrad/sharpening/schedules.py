"""Sharpening schedules: objects the training loop calls after every batch and every epoch.

A schedule drives a list of *handles*, objects with ``set_sharpness(float)`` and
``get_sharpness() -> float`` ordered from the input to the output: the :class:`Sharpenable`
activations of a model (:func:`sharpenable_layers`), or the surrogate slopes of a
surrogate-gradient network (:mod:`spikegrad.sharpening.annealing`).

Modes: ``"uniform"`` sharpens all layers together; ``"bottom_up"`` sharpens one layer at a time from
the input, the next starting only once the previous one is fully sharp. The clock-driven schedules
express both through one *progress* ``u`` in ``[0, n_stages]`` (``n_stages`` = number of layers
bottom-up, 1 uniform): layer ``i`` has sharpness ``clamp(u - i, 0, 1)`` bottom-up and
``clamp(u, 0, 1)`` uniform. :class:`AdaptiveSharpener` keeps per-layer sharpness values.

Time is counted in epochs. After epoch ``e`` (0-based) has ended the *clock* reads ``e + 1``; in
per-batch mode it advances by ``1 / batches_per_epoch`` after every batch, so sharpening can happen
inside epoch 0 (pass ``batches_per_epoch = len(train_loader)``; later epochs learn it from the
previous epoch). Schedules (in the hooks of :func:`spikegrad.training.fit`):

* :class:`SimpleSharpener`: linear in the clock, from ``start_epoch``, ``duration`` epochs per stage.
* :class:`ScheduledSharpener`: explicit per-layer windows ``(start, end)`` in epochs.
* :class:`AdaptiveSharpener`: Whetstone's loss-driven state machine (see its docstring).

As in Whetstone, every schedule by default sets its layers to the exact gradient of the current
sharpened activation (``gradient="exact"``; ``"ste"`` for the straight-through variant, None to leave
the layers as built) and asks the training loop to stop once every layer is fully sharp
(:attr:`Sharpener.stop_training`, checked by :func:`spikegrad.training.fit` after every epoch).

``state_dict()`` holds only plain Python values (``torch.load(weights_only=True)`` reads it back);
``load_state_dict`` restores the schedule and re-applies the sharpness to the layers. Every schedule
also remembers the metrics of the last epoch that ended with every layer at sharpness 0
(``before``: the accuracy before sharpening).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from torch import nn

from .. import checks
from .activations import check_min_width, check_sharpness, sharpenable_layers

__all__ = ["MODES", "Sharpener", "SimpleSharpener", "ScheduledSharpener", "AdaptiveSharpener"]

MODES = ("bottom_up", "uniform")
_SNAP = 1e-9  # progress this close to the end of a stage counts as the end (float round-off)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_is_number = checks.is_number


def _resolve_layers(layers: nn.Module | Sequence, who: str) -> list:
    if isinstance(layers, nn.Module):
        found = sharpenable_layers(layers)
        if not found:
            raise ValueError(f"{who}: the model has no sharpenable layers; build it with "
                             "spikegrad.sharpening.SharpBReLU / SharpSigmoid activations, or use "
                             "SurrogateAnnealer to anneal the surrogates of a spiking model")
        return found
    layers = list(layers)
    if not layers:
        raise ValueError(f"{who}: layers is empty; pass a model or a non-empty list of sharpenable layers")
    for k, h in enumerate(layers):
        if not (callable(getattr(h, "set_sharpness", None)) and callable(getattr(h, "get_sharpness", None))):
            raise TypeError(f"{who}: layer {k} ({type(h).__name__}) has no set_sharpness/get_sharpness; pass "
                            "Sharpenable modules, SurrogateSlope handles or a model containing them")
    return layers


def _stage_values(u: float, n_layers: int, mode: str) -> list[float]:
    if mode == "uniform":
        return [min(max(u, 0.0), 1.0)] * n_layers
    return [min(max(u - i, 0.0), 1.0) for i in range(n_layers)]


class Sharpener:
    """Base class: holds the layers, the mode and the hooks; subclasses define :meth:`values`.

    Args:
        layers: a model (its :func:`sharpenable_layers`) or a list of handles, input to output.
        mode: ``"bottom_up"`` or ``"uniform"``.
        per_batch: advance after every batch (smooth) instead of once per epoch.
        batches_per_epoch: batches in one epoch, needed only to sharpen per batch inside the first
            epoch; afterwards the count of the previous epoch is used.
        gradient: backward pass of the layers: ``"exact"`` (Whetstone: derivative of the current
            sharpened activation, none once fully sharp), ``"ste"`` (derivative of the unsharpened
            ramp, a straight-through estimator), a ``min_width`` in [0, 1], or None (keep the layers'
            own ``min_width``).
        stop_when_sharp: :attr:`stop_training` turns True once every layer is fully sharp (Whetstone
            ends training there); False keeps training to the last epoch (fine-tuning).
    Construction applies the schedule's initial sharpness (all zero) to the layers.
    """

    def __init__(self, layers: nn.Module | Sequence, mode: str = "bottom_up", per_batch: bool = False,
                 batches_per_epoch: int | None = None, gradient: str | float | None = "exact",
                 stop_when_sharp: bool = True):
        who = type(self).__name__
        self.layers = _resolve_layers(layers, who)
        checks.one_of(who, "mode", mode, MODES)
        if batches_per_epoch is not None and (not _is_int(batches_per_epoch) or batches_per_epoch < 1):
            raise ValueError(f"{who}: batches_per_epoch must be a positive int (len(train_loader)) or None, "
                             f"got {batches_per_epoch!r}")
        if not isinstance(stop_when_sharp, bool):
            raise ValueError(f"{who}: stop_when_sharp must be true or false, got {stop_when_sharp!r}")
        if gradient is not None:
            check_min_width(gradient, who)
            for k, h in enumerate(self.layers):
                if not callable(getattr(h, "set_gradient", None)):
                    raise TypeError(f"{who}: layer {k} ({type(h).__name__}) has no set_gradient; pass gradient=None "
                                    "for handles that are not Sharpenable activations (e.g. surrogate slopes)")
                h.set_gradient(gradient)
        self.gradient, self.stop_when_sharp = gradient, stop_when_sharp
        self.mode, self.per_batch = mode, bool(per_batch)
        self.batches_per_epoch = batches_per_epoch
        self.before: dict[str, float] | None = None
        self._batches = 0  # batches seen in the current epoch

    # -- the schedule ---------------------------------------------------------------------------
    @property
    def n_stages(self) -> int:
        """Stages of the progress ``u``: the number of layers bottom-up, 1 uniform."""
        return len(self.layers) if self.mode == "bottom_up" else 1

    def values(self) -> list[float]:
        """Per-layer sharpness the schedule prescribes now, input to output."""
        raise NotImplementedError

    @property
    def sharpness(self) -> list[float]:
        """Current per-layer sharpness, read from the layers."""
        return [h.get_sharpness() for h in self.layers]

    @property
    def done(self) -> bool:
        """True once every layer is fully sharp."""
        return all(s >= 1.0 for s in self.values())

    @property
    def stop_training(self) -> bool:
        """True once every layer is fully sharp and ``stop_when_sharp`` is set: the loop should stop."""
        return self.stop_when_sharp and self.done

    def apply(self) -> None:
        """Write :meth:`values` to the layers."""
        for h, s in zip(self.layers, self.values()):
            h.set_sharpness(s)

    # -- hooks ------------------------------------------------------------------------------------
    def on_batch_end(self, epoch: int, batch: int, loss: float) -> None:
        """Called after every optimizer step with the 0-based epoch and batch indices."""
        self._batches = max(self._batches, batch + 1)
        if self.per_batch:
            self._batch_step(epoch, batch, loss)
            self.apply()

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Called after validation with ``train_loss``, ``val_loss``, ``val_accuracy``."""
        if all(s == 0.0 for s in self.values()):
            self.before = {"epoch": float(epoch),
                           **{k: float(v) for k, v in metrics.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)}}
        if self._batches:
            self.batches_per_epoch = self._batches
        self._batches = 0
        self._epoch_step(epoch, metrics)
        self.apply()

    def _batch_step(self, epoch: int, batch: int, loss: float) -> None:
        raise NotImplementedError

    def _epoch_step(self, epoch: int, metrics: dict) -> None:
        raise NotImplementedError

    def _need_batches(self, epoch: int) -> int:
        if self.batches_per_epoch is None:
            raise ValueError(f"{type(self).__name__}: per_batch=True must know the number of batches to sharpen "
                             f"inside epoch {epoch}; pass batches_per_epoch=len(train_loader), start at a later "
                             "epoch, or use per_batch=False")
        return self.batches_per_epoch

    def scalars(self) -> dict[str, float]:
        """Per-layer sharpness ``{"layer0": s0, ...}`` (logged by ``fit`` as ``sharpen/layer<k>``)."""
        return {f"layer{k}": s for k, s in enumerate(self.sharpness)}

    # -- checkpoints ------------------------------------------------------------------------------
    def _state(self) -> dict:
        raise NotImplementedError

    def _load_state(self, state: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Plain-Python state (ints, floats, strings, dicts, None)."""
        return {"type": type(self).__name__, "n_layers": len(self.layers), "mode": self.mode,
                "batches_per_epoch": self.batches_per_epoch, "batches": self._batches,
                "before": None if self.before is None else dict(self.before), **self._state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` and re-apply the sharpness to the layers."""
        who = type(self).__name__
        if not isinstance(state, dict) or state.get("type") != who:
            got = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{who}.load_state_dict: the state belongs to {got!r}; resume with the same "
                             "sharpen config as the checkpoint's run")
        for key, mine in (("n_layers", len(self.layers)), ("mode", self.mode)):
            if state.get(key) != mine:
                raise ValueError(f"{who}.load_state_dict: the state has {key}={state.get(key)!r} but this "
                                 f"schedule has {key}={mine!r}; resume with the same model and sharpen config")
        self.batches_per_epoch = state["batches_per_epoch"]
        self._batches = state["batches"]
        self.before = None if state["before"] is None else dict(state["before"])
        self._load_state(state)
        self.apply()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, sharpness={[round(s, 4) for s in self.sharpness]})"


class _ClockSharpener(Sharpener):
    """A schedule whose sharpness is a function of the clock (epochs elapsed) only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = 0.0

    def values_at(self, clock: float) -> list[float]:
        raise NotImplementedError

    def values(self) -> list[float]:
        return self.values_at(self.clock)

    def _batch_step(self, epoch: int, batch: int, loss: float) -> None:
        if self.batches_per_epoch is None and self.values_at(epoch) == self.values_at(epoch + 1):
            self.clock = float(epoch)  # nothing changes in this epoch: no batch count needed
            return
        n = self._need_batches(epoch)
        self.clock = epoch + min(1.0, (batch + 1) / n)

    def _epoch_step(self, epoch: int, metrics: dict) -> None:
        self.clock = float(epoch + 1)

    def _state(self) -> dict:
        return {"clock": self.clock}

    def _load_state(self, state: dict) -> None:
        self.clock = float(state["clock"])


class SimpleSharpener(_ClockSharpener):
    """Linear ramp: progress ``u = clamp((clock - start_epoch) / duration, 0, n_stages)``.

    Args:
        layers, mode, per_batch, batches_per_epoch, gradient, stop_when_sharp: see :class:`Sharpener`.
        start_epoch: epoch (0-based) at whose start sharpening begins; 0 is allowed (epoch mode: the
            first step is applied when epoch 0 ends; per-batch: during epoch 0).
        duration: epochs for one stage, i.e. per layer bottom-up (the whole net then takes
            ``n_layers * duration``) or for all layers together in uniform mode. > 0, may be fractional.
    """

    def __init__(self, layers: nn.Module | Sequence, start_epoch: int = 0, duration: float = 5.0,
                 mode: str = "bottom_up", per_batch: bool = False, batches_per_epoch: int | None = None,
                 gradient: str | float | None = "exact", stop_when_sharp: bool = True):
        super().__init__(layers, mode, per_batch, batches_per_epoch, gradient, stop_when_sharp)
        if not _is_int(start_epoch) or start_epoch < 0:
            raise ValueError(f"SimpleSharpener: start_epoch must be an int >= 0 (0-based epoch), got {start_epoch!r}")
        if not _is_number(duration) or duration <= 0:
            raise ValueError(f"SimpleSharpener: duration must be a number of epochs > 0, got {duration!r}")
        self.start_epoch, self.duration = start_epoch, float(duration)
        self.apply()

    def values_at(self, clock: float) -> list[float]:
        u = min(max((clock - self.start_epoch) / self.duration, 0.0), float(self.n_stages))
        if self.n_stages - u < _SNAP:
            u = float(self.n_stages)
        return _stage_values(u, len(self.layers), self.mode)


class ScheduledSharpener(_ClockSharpener):
    """Explicit per-layer windows: layer ``i`` goes linearly from 0 to 1 over ``windows[i]``.

    Layer ``i`` has sharpness ``clamp((clock - start_i) / (end_i - start_i), 0, 1)``. Windows are in
    epochs (0-based; ``(0, 2)`` covers epochs 0 and 1), need ``0 <= start < end`` and must not
    overlap (touching is allowed), so at most one layer sharpens at a time; they need not be in
    layer order. Without ``windows``, bottom-up windows are generated:
    ``start_i = start + i (duration + gap)``, ``end_i = start_i + duration``.

    Args:
        layers, per_batch, batches_per_epoch, gradient, stop_when_sharp: see :class:`Sharpener`.
        windows: one ``(start, end)`` pair per layer, input to output; or None to generate them.
        start, duration, gap: generator settings (epochs), used only when ``windows`` is None.
        mode: only ``"bottom_up"`` (non-overlapping windows); use :class:`SimpleSharpener` for uniform.
    """

    def __init__(self, layers: nn.Module | Sequence, windows: Sequence[Sequence[float]] | None = None,
                 start: float = 0, duration: float = 2, gap: float = 0, mode: str = "bottom_up",
                 per_batch: bool = False, batches_per_epoch: int | None = None,
                 gradient: str | float | None = "exact", stop_when_sharp: bool = True):
        super().__init__(layers, mode, per_batch, batches_per_epoch, gradient, stop_when_sharp)
        if mode != "bottom_up":
            raise ValueError("ScheduledSharpener: mode must be 'bottom_up' (its windows may not overlap); "
                             "for uniform sharpening use SimpleSharpener(mode='uniform')")
        if windows is None:
            for name, v, low in (("start", start, 0.0), ("gap", gap, 0.0)):
                if not _is_number(v) or v < low:
                    raise ValueError(f"ScheduledSharpener: {name} must be a number of epochs >= {low}, got {v!r}")
            if not _is_number(duration) or duration <= 0:
                raise ValueError(f"ScheduledSharpener: duration must be a number of epochs > 0, got {duration!r}")
            step = duration + gap
            windows = [(start + i * step, start + i * step + duration) for i in range(len(self.layers))]
        self.windows = self._check_windows(windows)
        self.apply()

    def _check_windows(self, windows) -> list[tuple[float, float]]:
        n = len(self.layers)
        try:
            pairs = [tuple(w) for w in windows]
        except TypeError:
            raise ValueError("ScheduledSharpener: windows must be a list of (start, end) pairs, "
                             f"got {windows!r}") from None
        if len(pairs) != n:
            raise ValueError(f"ScheduledSharpener: got {len(pairs)} windows for {n} sharpenable layers; "
                             "give one (start, end) pair per layer, input to output")
        out = []
        for k, w in enumerate(pairs):
            if len(w) != 2 or not all(_is_number(v) for v in w):
                raise ValueError(f"ScheduledSharpener: window {k} must be a (start, end) pair of numbers, got {w!r}")
            s, e = float(w[0]), float(w[1])
            if s < 0:
                raise ValueError(f"ScheduledSharpener: window {k} starts at epoch {s} < 0")
            if e <= s:
                raise ValueError(f"ScheduledSharpener: window {k} = ({s:g}, {e:g}) is empty; end must be > start")
            out.append((s, e))
        order = sorted(range(n), key=lambda k: out[k])
        for a, b in zip(order, order[1:]):
            if out[b][0] < out[a][1]:
                raise ValueError(f"ScheduledSharpener: windows of layer {a} {out[a]} and layer {b} {out[b]} "
                                 "overlap; a layer may start only when the previous window has ended")
        return out

    def values_at(self, clock: float) -> list[float]:
        vals = []
        for s, e in self.windows:
            v = min(max((clock - s) / (e - s), 0.0), 1.0)
            vals.append(1.0 if 1.0 - v < _SNAP else v)
        return vals


class AdaptiveSharpener(Sharpener):
    """Whetstone's adaptive sharpening: the training loss decides when to sharpen, per batch.

    At every epoch end the loss ``metrics[monitor]`` is compared with a *reference* loss ``ref``
    (initially ``1e6``): ``change = (loss - ref) / ref`` counts as *degraded* if
    ``change >= sig_increase`` and as *improved* if ``change <= -sig_decrease``. Then:

    * before epoch ``min_init_epochs - 1`` (0-based): ``ref = loss``, nothing else;
    * from then on: improved -> ``ref = loss``, ``stale = 0``; otherwise ``stale += 1``. If sharpening
      and degraded: stop sharpening (``ref = loss``, ``stale = 0``). If not sharpening and
      ``stale > patience`` (a plateau): start sharpening (``ref = loss``, ``stale = 0``).

    While sharpening, every batch adds ``rate / batches_per_epoch`` to one layer's sharpness, or
    ``cz_rate / batches_per_epoch`` once that layer's sharpness is ``>= critical`` (the critical
    zone). Bottom-up, the layer is the first one not fully sharp, the first layer's amounts are
    scaled by ``first_layer_relative_rate``, a sharpness within ``1e-3`` of 1 is set to 1, and once a
    layer completes no layer sharpens until the epoch ends. Uniform, all layers share one sharpness
    (critical zone judged on it, snapped to 1 within ``1e-6``; ``first_layer_relative_rate`` unused).
    :attr:`done` (every layer at 1) ends training when ``stop_when_sharp``.

    ``batches_per_epoch`` is counted in each epoch (Whetstone counts it in epoch 0); sharpening can
    only start at an epoch end, so the count is always known when it is needed.

    Args:
        layers, mode, batches_per_epoch, gradient, stop_when_sharp: see :class:`Sharpener`
            (sharpening is always per batch).
        min_init_epochs: epochs to train before the loss is watched for a plateau (>= 1).
        rate: sharpness added per epoch of sharpening below ``critical`` (in (0, 1]).
        cz_rate: sharpness added per epoch of sharpening from ``critical`` on (in (0, 1]).
        critical: sharpness where the critical zone starts (in [0, 1]).
        first_layer_relative_rate: factor on the first layer's amounts, bottom-up (> 0).
        patience: a plateau is more than ``patience`` epochs without improvement (>= 0).
        sig_increase: relative loss increase over ``ref`` that counts as degraded (> 0).
        sig_decrease: relative loss decrease under ``ref`` that counts as improved (> 0).
        monitor: metric that drives it: ``"train_loss"`` (Whetstone) or ``"val_loss"``.
    """

    INITIAL_REFERENCE = 1e6  # Whetstone's starting reference loss (any loss below ~1e6 "improves" on it)

    def __init__(self, layers: nn.Module | Sequence, mode: str = "bottom_up", min_init_epochs: int = 10,
                 rate: float = 0.25, cz_rate: float = 0.126, critical: float = 0.75,
                 first_layer_relative_rate: float = 1.0, patience: int = 1, sig_increase: float = 0.15,
                 sig_decrease: float = 0.15, monitor: str = "train_loss", batches_per_epoch: int | None = None,
                 gradient: str | float | None = "exact", stop_when_sharp: bool = True):
        super().__init__(layers, mode, True, batches_per_epoch, gradient, stop_when_sharp)
        if not _is_int(min_init_epochs) or min_init_epochs < 1:
            raise ValueError(f"AdaptiveSharpener: min_init_epochs must be an int >= 1 (epochs), "
                             f"got {min_init_epochs!r}")
        if not _is_int(patience) or patience < 0:
            raise ValueError(f"AdaptiveSharpener: patience must be an int >= 0 (epochs), got {patience!r}")
        for name, v in (("rate", rate), ("cz_rate", cz_rate)):
            if not _is_number(v) or not 0 < v <= 1:
                raise ValueError(f"AdaptiveSharpener: {name} must be in (0, 1] (sharpness per epoch), got {v!r}")
        for name, v in (("first_layer_relative_rate", first_layer_relative_rate), ("sig_increase", sig_increase),
                        ("sig_decrease", sig_decrease)):
            if not _is_number(v) or v <= 0:
                raise ValueError(f"AdaptiveSharpener: {name} must be a number > 0 (relative; 0.15 = 15%), got {v!r}")
        critical = check_sharpness(critical, "AdaptiveSharpener: critical")
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"AdaptiveSharpener: monitor must be a metric name such as 'train_loss', got {monitor!r}")
        self.min_init_epochs, self.patience = min_init_epochs, patience
        self.rate, self.cz_rate, self.critical = float(rate), float(cz_rate), critical
        self.first_layer_relative_rate = float(first_layer_relative_rate)
        self.sig_increase, self.sig_decrease = float(sig_increase), float(sig_decrease)
        self.monitor = monitor
        self.levels = [0.0] * len(self.layers)  # per-layer sharpness, input to output
        self.sharpening = False
        self.reference_loss = self.INITIAL_REFERENCE
        self.epochs_no_improvement = 0
        self.wait = False  # bottom-up: a layer completed in this epoch
        self.apply()

    def values(self) -> list[float]:
        return list(self.levels)

    def _batch_step(self, epoch: int, batch: int, loss: float) -> None:
        if not self.sharpening:
            return
        unfinished = [k for k, s in enumerate(self.levels) if s < 1.0]
        if not unfinished:
            self.sharpening = False
            return
        per_batch = 1.0 / self._need_batches(epoch)
        if self.mode == "bottom_up":
            if self.wait:
                return
            k = unfinished[0]
            amount = self.cz_rate if self.levels[k] >= self.critical else self.rate
            if k == 0:
                amount *= self.first_layer_relative_rate
            level = min(1.0, self.levels[k] + amount * per_batch)
            if 1.0 - level < 1e-3:
                level = 1.0
            self.levels[k] = level
            self.wait = level == 1.0
        else:
            amount = self.cz_rate if self.levels[0] >= self.critical else self.rate
            level = min(1.0, self.levels[0] + amount * per_batch)
            if 1.0 - level < 1e-6:
                level = 1.0
            self.levels = [level] * len(self.layers)

    def _epoch_step(self, epoch: int, metrics: dict) -> None:
        self.wait = False
        if self.monitor not in metrics or metrics[self.monitor] is None:
            raise ValueError(f"AdaptiveSharpener: monitor={self.monitor!r} is not among the epoch metrics "
                             f"{sorted(k for k, v in metrics.items() if v is not None)}; set monitor to one of them")
        loss = float(metrics[self.monitor])
        ref = self.reference_loss
        change = (loss - ref) / ref if ref != 0 else (0.0 if loss == 0 else math.inf)  # ref 0: any loss degrades
        degraded = change >= self.sig_increase
        improved = not degraded and change <= -self.sig_decrease
        if epoch < self.min_init_epochs - 1:
            self.reference_loss = loss
            return
        if improved:
            self.reference_loss, self.epochs_no_improvement = loss, 0
        else:
            self.epochs_no_improvement += 1
        if self.sharpening:
            if degraded:
                self.reference_loss, self.epochs_no_improvement, self.sharpening = loss, 0, False
        elif self.epochs_no_improvement > self.patience:
            self.reference_loss, self.epochs_no_improvement, self.sharpening = loss, 0, True

    def scalars(self) -> dict[str, float]:
        return {**super().scalars(), "sharpening": float(self.sharpening)}

    def _state(self) -> dict:
        return {"levels": list(self.levels), "sharpening": self.sharpening, "reference_loss": self.reference_loss,
                "epochs_no_improvement": self.epochs_no_improvement, "wait": self.wait}

    def _load_state(self, state: dict) -> None:
        self.levels = [float(s) for s in state["levels"]]
        self.sharpening, self.wait = bool(state["sharpening"]), bool(state["wait"])
        self.reference_loss = float(state["reference_loss"])
        self.epochs_no_improvement = int(state["epochs_no_improvement"])
