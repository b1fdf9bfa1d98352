"""Sharpening schedules: objects the training loop calls after every batch and every epoch.

A schedule drives a list of *handles*, objects with ``set_sharpness(float)`` and
``get_sharpness() -> float`` ordered from the input to the output: the :class:`Sharpenable`
activations of a model (:func:`sharpenable_layers`), or the surrogate slopes of a
surrogate-gradient network (:mod:`spikegrad.sharpening.annealing`).

Modes: ``"uniform"`` sharpens all layers together; ``"bottom_up"`` sharpens one layer at a time from
the input, the next starting only once the previous one is fully sharp. Both are expressed through
one *progress* ``u`` in ``[0, n_stages]`` (``n_stages`` = number of layers bottom-up, 1 uniform):
layer ``i`` has sharpness ``clamp(u - i, 0, 1)`` bottom-up and ``clamp(u, 0, 1)`` uniform.

Time is counted in epochs. After epoch ``e`` (0-based) has ended the *clock* reads ``e + 1``; in
per-batch mode it advances by ``1 / batches_per_epoch`` after every batch, so sharpening can happen
inside epoch 0 (pass ``batches_per_epoch = len(train_loader)``; later epochs learn it from the
previous epoch). Schedules (in the hooks of :func:`spikegrad.training.fit`):

* :class:`SimpleSharpener`: linear in the clock, from ``start_epoch``, ``duration`` epochs per stage.
* :class:`ScheduledSharpener`: explicit per-layer windows ``(start, end)`` in epochs.
* :class:`AdaptiveSharpener`: Whetstone's loss-driven state machine (see its docstring).

``state_dict()`` holds only plain Python values (``torch.load(weights_only=True)`` reads it back);
``load_state_dict`` restores the schedule and re-applies the sharpness to the layers. Every schedule
also remembers the metrics of the last epoch that ended with every layer at sharpness 0
(``before``: the accuracy before sharpening).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from torch import nn

from .activations import check_sharpness, sharpenable_layers

__all__ = ["MODES", "Sharpener", "SimpleSharpener", "ScheduledSharpener", "AdaptiveSharpener"]

MODES = ("bottom_up", "uniform")
_SNAP = 1e-9  # progress this close to the end of a stage counts as the end (float round-off)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    Construction applies the schedule's initial sharpness (all zero) to the layers.
    """

    def __init__(self, layers: nn.Module | Sequence, mode: str = "bottom_up", per_batch: bool = False,
                 batches_per_epoch: int | None = None):
        who = type(self).__name__
        self.layers = _resolve_layers(layers, who)
        if mode not in MODES:
            raise ValueError(f"{who}: mode must be one of {MODES}, got {mode!r}")
        if batches_per_epoch is not None and (not _is_int(batches_per_epoch) or batches_per_epoch < 1):
            raise ValueError(f"{who}: batches_per_epoch must be a positive int (len(train_loader)) or None, "
                             f"got {batches_per_epoch!r}")
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
        layers, mode, per_batch, batches_per_epoch: see :class:`Sharpener`.
        start_epoch: epoch (0-based) at whose start sharpening begins; 0 is allowed (epoch mode: the
            first step is applied when epoch 0 ends; per-batch: during epoch 0).
        duration: epochs for one stage, i.e. per layer bottom-up (the whole net then takes
            ``n_layers * duration``) or for all layers together in uniform mode. > 0, may be fractional.
    """

    def __init__(self, layers: nn.Module | Sequence, start_epoch: int = 0, duration: float = 5.0,
                 mode: str = "bottom_up", per_batch: bool = False, batches_per_epoch: int | None = None):
        super().__init__(layers, mode, per_batch, batches_per_epoch)
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
        layers, per_batch, batches_per_epoch: see :class:`Sharpener`.
        windows: one ``(start, end)`` pair per layer, input to output; or None to generate them.
        start, duration, gap: generator settings (epochs), used only when ``windows`` is None.
        mode: only ``"bottom_up"`` (non-overlapping windows); use :class:`SimpleSharpener` for uniform.
    """

    def __init__(self, layers: nn.Module | Sequence, windows: Sequence[Sequence[float]] | None = None,
                 start: float = 0, duration: float = 2, gap: float = 0, mode: str = "bottom_up",
                 per_batch: bool = False, batches_per_epoch: int | None = None):
        super().__init__(layers, mode, per_batch, batches_per_epoch)
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
    """Whetstone's loss-driven sharpening, as a state machine over epochs.

    Phases (decisions at every epoch end, on ``loss = metrics[monitor]``):

    * ``waiting``: the loss counts as *improved* if ``loss < best * (1 - improvement)`` (then
      ``best = loss``, ``stale = 0``; else ``stale += 1``). Sharpening starts once
      ``epoch + 1 >= min_init_epochs`` and ``stale >= patience`` (the loss stopped improving), or
      at ``epoch + 1 >= max_init_epochs``. Then ``ref = loss``.
    * ``sharpening``: if ``loss > ref * (1 + degradation)`` the loss degraded: go to ``paused``
      (``best = loss``, ``stale = 0``). Otherwise ``ref = loss`` and sharpen one epoch's amount.
    * ``paused``: track improvement as in ``waiting``; resume (``ref = loss``) when the loss has
      recovered, ``loss <= ref * (1 + degradation)`` with the ``ref`` of before the degradation, or
      when it stopped improving (``stale >= patience``), whichever comes first.
    * ``done``: every layer is fully sharp.

    One epoch's amount of progress is ``rate``, or ``critical_rate`` once the sharpness of the stage
    being sharpened (the current layer bottom-up, all layers uniform) is ``>= critical``. A step
    never crosses into the next layer: the step that completes a layer stops there. In epoch mode the
    amount is applied at the epoch end that decided it; in per-batch mode it is spread over the next
    epoch's batches (``1 / batches_per_epoch`` of it per batch; once a layer completes inside an epoch
    the next one waits for the epoch end).

    Args:
        layers, mode, per_batch, batches_per_epoch: see :class:`Sharpener`.
        min_init_epochs: epochs to train before sharpening may start (0 and 1: after epoch 0).
        max_init_epochs: start at the latest after this many epochs (None: wait for the plateau).
        patience: non-improving epochs that count as a plateau (0: no wait).
        improvement: relative loss decrease that counts as an improvement (> 0).
        degradation: relative loss increase, in one sharpening epoch, that pauses sharpening (> 0).
        rate: sharpness added per epoch below ``critical`` (in (0, 1]).
        critical: stage sharpness beyond which ``critical_rate`` applies (in [0, 1]).
        critical_rate: sharpness added per epoch past ``critical`` (in (0, 1]).
        monitor: metric that drives it: ``"train_loss"`` (Whetstone) or ``"val_loss"``.
    """

    PHASES = ("waiting", "sharpening", "paused", "done")

    def __init__(self, layers: nn.Module | Sequence, mode: str = "bottom_up", min_init_epochs: int = 10,
                 max_init_epochs: int | None = None, patience: int = 1, improvement: float = 0.15,
                 degradation: float = 0.15, rate: float = 0.25, critical: float = 0.75,
                 critical_rate: float = 0.125, monitor: str = "train_loss", per_batch: bool = False,
                 batches_per_epoch: int | None = None):
        super().__init__(layers, mode, per_batch, batches_per_epoch)
        for name, v in (("min_init_epochs", min_init_epochs), ("patience", patience)):
            if not _is_int(v) or v < 0:
                raise ValueError(f"AdaptiveSharpener: {name} must be an int >= 0 (epochs), got {v!r}")
        if max_init_epochs is not None and (not _is_int(max_init_epochs) or max_init_epochs < min_init_epochs):
            raise ValueError(f"AdaptiveSharpener: max_init_epochs must be None or an int >= min_init_epochs "
                             f"({min_init_epochs}), got {max_init_epochs!r}")
        for name, v in (("improvement", improvement), ("degradation", degradation)):
            if not _is_number(v) or v <= 0:
                raise ValueError(f"AdaptiveSharpener: {name} must be a relative change > 0 (0.1 = 10%), "
                                 f"got {v!r}")
        for name, v in (("rate", rate), ("critical_rate", critical_rate)):
            if not _is_number(v) or not 0 < v <= 1:
                raise ValueError(f"AdaptiveSharpener: {name} must be in (0, 1] (sharpness per epoch), got {v!r}")
        critical = check_sharpness(critical, "AdaptiveSharpener: critical")
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"AdaptiveSharpener: monitor must be a metric name such as 'train_loss', got {monitor!r}")
        self.min_init_epochs, self.max_init_epochs, self.patience = min_init_epochs, max_init_epochs, patience
        self.improvement, self.degradation = float(improvement), float(degradation)
        self.rate, self.critical, self.critical_rate = float(rate), critical, float(critical_rate)
        self.monitor = monitor
        self.phase = "waiting"
        self.progress = 0.0  # u in [0, n_stages]
        self.ref: float | None = None
        self.best: float | None = None
        self.stale = 0
        self.hold = False  # per-batch: a layer completed inside this epoch
        self.apply()

    def values(self) -> list[float]:
        return _stage_values(self.progress, len(self.layers), self.mode)

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def _advance(self, fraction: float) -> None:
        """Add ``fraction`` of one epoch's amount, stopping at the end of the current stage."""
        stage = math.floor(self.progress)
        current = self.progress - stage
        amount = (self.rate if current < self.critical else self.critical_rate) * fraction
        end = stage + 1.0
        self.progress = min(self.progress + amount, end)
        if end - self.progress < _SNAP:
            self.progress = end
            self.hold = self.per_batch
        if self.progress >= self.n_stages:
            self.progress, self.phase = float(self.n_stages), "done"

    def _track(self, loss: float) -> None:
        if self.best is None or loss < self.best * (1 - self.improvement):
            self.best, self.stale = loss, 0
        else:
            self.stale += 1

    def _start(self, loss: float) -> None:
        self.phase, self.ref = "sharpening", loss
        if not self.per_batch:
            self._advance(1.0)

    def _epoch_step(self, epoch: int, metrics: dict) -> None:
        self.hold = False
        if self.phase == "done":
            return
        if self.monitor not in metrics or metrics[self.monitor] is None:
            raise ValueError(f"AdaptiveSharpener: monitor={self.monitor!r} is not among the epoch metrics "
                             f"{sorted(k for k, v in metrics.items() if v is not None)}; set monitor to one of them")
        loss = float(metrics[self.monitor])
        if not math.isfinite(loss):
            loss = math.inf
        if self.phase == "waiting":
            self._track(loss)
            plateau = epoch + 1 >= self.min_init_epochs and self.stale >= self.patience
            forced = self.max_init_epochs is not None and epoch + 1 >= self.max_init_epochs
            if plateau or forced:
                self._start(loss)
        elif self.phase == "sharpening":
            if loss > self.ref * (1 + self.degradation):
                self.phase, self.best, self.stale = "paused", loss, 0
            else:
                self._start(loss)
        elif self.phase == "paused":
            self._track(loss)
            if loss <= self.ref * (1 + self.degradation) or self.stale >= self.patience:
                self._start(loss)

    def _batch_step(self, epoch: int, batch: int, loss: float) -> None:
        if self.phase == "sharpening" and not self.hold:
            self._advance(1.0 / self._need_batches(epoch))

    def scalars(self) -> dict[str, float]:
        return {**super().scalars(), "phase": float(self.PHASES.index(self.phase))}

    def _state(self) -> dict:
        return {"phase": self.phase, "progress": self.progress, "ref": self.ref, "best": self.best,
                "stale": self.stale, "hold": self.hold}

    def _load_state(self, state: dict) -> None:
        if state["phase"] not in self.PHASES:
            raise ValueError(f"AdaptiveSharpener.load_state_dict: unknown phase {state['phase']!r}")
        self.phase, self.progress = state["phase"], float(state["progress"])
        self.ref, self.best = state["ref"], state["best"]
        self.stale, self.hold = int(state["stale"]), bool(state["hold"])
