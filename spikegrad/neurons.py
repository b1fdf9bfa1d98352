"""Spiking neuron modules: thin ``nn.Module`` wrappers around :mod:`spikegrad.functional`.

A module owns its constants (buffers, or parameters when learnable) and its surrogate, builds the
constants' NamedTuple on every call, and runs the time loop through :mod:`spikegrad.kernels`
(which picks the fastest exact path). The maths is written once, in :mod:`spikegrad.functional`.

Constants can be one number for the population, or per neuron: pass ``shape=(N,)`` (every neuron
starts at the same value) or a tensor (``LIF(tau_mem=torch.tensor([10., 20., 40.]))``, its shape
is the constants' shape). Learnable constants stay valid whatever the optimizer does: a time
constant is learned as ``log tau`` (so ``tau > 0`` and ``0 < decay < 1``), a threshold as
``log v_th`` (so ``v_th > 0``). The parameters are then called ``log_tau_mem``, ``log_tau_syn``,
``log_v_th``; the attributes ``tau_mem``, ``tau_syn``, ``v_th`` still give the values.

Long sequences: :func:`set_recompute` (or the context manager :func:`recomputing`) makes the neuron
layers of a model keep their state only every ``K`` steps and run each chunk of ``K`` steps again in
the backward pass (:func:`~spikegrad.functional.recompute_chunks`), so the memory a layer keeps for
backward grows with ``T / K`` (plus one chunk) instead of ``T``; the gradients are the same.

For compatibility, the functional names (``LIFParams``, ``lif_step``, ``scan``, ...) can also be
imported from here.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial
from typing import Any, Iterator, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from . import checks
from .functional import (RESET_MODES, ALIFParams, ALIFState, LIFParams, LIFState, LIParams, LIState, alif_step,
                         check_reset, decay, detach_state, last, li_step, lif_step, recompute_chunks,
                         recurrent_alif_step, recurrent_lif_step, scan, state_dtype)
from .kernels import ALIF_BACKENDS, BACKENDS, LI_BACKENDS, alif_sequence, check_backend, li_sequence, lif_sequence
from .surrogates import Surrogate, make_surrogate

__all__ = [
    "LIF", "IF", "ALIF", "LI", "BSS2LIF", "BSS2LI", "DelayedState", "set_recompute", "recomputing",
    # the functional core, re-exported
    "LIFParams", "LIFState", "ALIFParams", "ALIFState", "LIParams", "LIState", "lif_step", "recurrent_lif_step",
    "alif_step", "recurrent_alif_step", "li_step", "scan", "last", "detach_state", "RESET_MODES",
]

# name -> (the rule in words, allowed(values) -> bool)
_RULES = {
    "tau_mem": ("> 0 (steps; inf = no leak)", lambda t: bool((t > 0).all())),
    "tau_syn": (">= 0 (steps; 0 = no synaptic filter)", lambda t: bool((t >= 0).all())),
    "tau_ada": ("> 0 (steps)", lambda t: bool((t > 0).all())),
    "v_th": ("> 0 and finite (threshold units)", lambda t: bool((t > 0).all() and torch.isfinite(t).all())),
    "beta": (">= 0 and finite (threshold units)", lambda t: bool((t >= 0).all() and torch.isfinite(t).all())),
}
_LOG_LEARNED = ("tau_mem", "tau_syn", "tau_ada", "v_th")


def _as_tensor(who: str, name: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{who}: {name} must be a float tensor or a number, got a {value.dtype} tensor; "
                            f"use torch.tensor([...], dtype=torch.float32)")
        t = value.detach().to("cpu", torch.float32).clone()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{who}: {name} must be a number or a float tensor, got {value!r}")
    else:
        t = torch.tensor(float(value))
    if torch.isnan(t).any():
        raise ValueError(f"{who}: {name} must not be NaN, got {value!r}")
    rule, ok = _RULES[name]
    if not ok(t):
        bad = t.min().item() if t.numel() > 1 else t.item()
        raise ValueError(f"{who}: {name} must be {rule}, got {bad!r}" + (" (smallest entry)" if t.numel() > 1 else ""))
    return t


class _Neuron(nn.Module):
    """Shared constant handling of the neuron modules (see the module docstring)."""

    recompute: int | None = None
    """Steps per chunk of time-chunked recomputation while gradients are on (:func:`set_recompute`);
    None: off. Not part of the ``state_dict``: a setting of the run, not of the model."""

    def _sequence(self, fn: Any, x_seq: Tensor, state: Any, record: bool) -> tuple[Tensor, Any]:
        """``fn(x_seq, state, record=record)``, or in chunks of :attr:`recompute` steps under
        :func:`~spikegrad.functional.recompute_chunks` when it is set and gradients are on."""
        if self.recompute is None or not torch.is_grad_enabled():
            return fn(x_seq, state, record=record)
        chunk = checks.positive_int(type(self).__name__, "recompute", self.recompute, "steps per chunk, or None")
        return recompute_chunks(fn, x_seq, state, chunk, record)

    def _add_constant(self, name: str, value: Any, learn: bool, shape: Sequence[int] | None) -> None:
        who = type(self).__name__
        t = _as_tensor(who, name, value)
        if shape is not None:
            try:
                t = torch.broadcast_to(t, tuple(shape)).clone()
            except RuntimeError:
                raise ValueError(f"{who}: {name} has shape {tuple(t.shape)}, which does not broadcast to "
                                 f"shape={tuple(shape)}; pass a tensor of that shape or one number") from None
        if not learn:
            self.register_buffer(name, t)
            return
        if name not in _LOG_LEARNED:
            self.register_parameter(name, nn.Parameter(t))
            return
        if not torch.isfinite(t).all() or not (t > 0).all():
            why = "inf (no leak)" if torch.isinf(t).any() else "0 (no synaptic filter)"
            raise ValueError(f"{who}: {name}={why} has no finite time constant to learn; give it a finite value "
                             f"> 0, or learn only the other constants (learn_tau='mem' or 'syn')")
        self.register_parameter(f"log_{name}", nn.Parameter(t.log()))

    def __getattr__(self, name: str):
        if name in _LOG_LEARNED:
            params = self.__dict__.get("_parameters", {})
            if f"log_{name}" in params:
                return params[f"log_{name}"].exp()
        return super().__getattr__(name)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in _LOG_LEARNED:  # checkpoints that stored a learnable constant by its value
            if f"log_{name}" in self._parameters and prefix + name in state_dict:
                state_dict[prefix + f"log_{name}"] = state_dict.pop(prefix + name).log()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _check_input(self, x_seq: Tensor) -> None:
        _check_seq(type(self).__name__, x_seq)

    def _add_recurrent(self, recurrent: int | None) -> None:
        """``w_rec [N, N]`` (uniform in ``[-1, 1] / sqrt(N)``) for ``recurrent = N``; None: no recurrence."""
        self.w_rec = None
        if recurrent is not None:
            n = checks.positive_int(type(self).__name__, "recurrent", recurrent, "number of neurons, or None")
            self.w_rec = nn.Parameter(torch.empty(n, n).uniform_(-1, 1) / math.sqrt(n))

    def _check_recurrent_input(self, x: Tensor) -> None:
        if self.w_rec is None:
            return
        n = self.w_rec.shape[0]
        if x.dim() != 3 or x.shape[-1] != n:
            raise ValueError(f"{type(self).__name__}: a recurrent layer of {n} neurons takes input [T, B, {n}] "
                             f"(one step [B, {n}]), got shape {tuple(x.shape)}; flatten other axes first "
                             "(e.g. x.flatten(2)) or build the layer with recurrent=None")

    def _describe(self, *names: str) -> str:
        parts = []
        for n in names:
            t = getattr(self, n).detach()
            parts.append(f"{n}={t.item():g}" if t.numel() == 1 else f"{n}=[{t.min().item():g}..{t.max().item():g}]")
        return ", ".join(parts)


def _learn_flags(who: str, learn_tau: bool | str) -> tuple[bool, bool]:
    if learn_tau in (True, False):
        return bool(learn_tau), bool(learn_tau)
    if learn_tau in ("mem", "syn"):
        return learn_tau == "mem", learn_tau == "syn"
    raise ValueError(f"{who}: learn_tau must be True, False, 'mem' or 'syn', got {learn_tau!r}")


def _check_seq(who: str, x_seq: Any) -> None:
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"{who}: x_seq must be a tensor of shape [T, B, ...], got {type(x_seq).__name__}")
    if x_seq.dim() < 2:
        raise ValueError(f"{who}: x_seq must have shape [T, B, ...] (time first, at least 2 dims), "
                         f"got shape {tuple(x_seq.shape)}; use .step(x_t, state) for a single step")
    if not x_seq.is_floating_point():
        raise TypeError(f"{who}: x_seq must be a floating-point tensor, got {x_seq.dtype}; "
                        "convert spikes with .to(torch.float32)")
    if x_seq.shape[0] == 0 or x_seq.shape[1] == 0:
        raise ValueError(f"{who}: x_seq has shape {tuple(x_seq.shape)}: T (steps, axis 0) and B (batch, axis 1) "
                         "must be at least 1")


def _check_state(who: str, state: Any, x_t: Tensor, kind: type) -> None:
    """A state passed in must be the neuron's NamedTuple with ``[B, ...]`` tensors like ``x_t``."""
    if state is None:
        return
    if not isinstance(state, tuple) or len(state) < 2:
        raise TypeError(f"{who}: state must be a {kind.__name__} (as returned by a previous call) or None, "
                        f"got {type(state).__name__}")
    for field, t in zip(getattr(kind, "_fields", ()), state):
        if t is None and field not in ("v", "i"):
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{who}: state.{field} must be a tensor, got {type(t).__name__}")
        if tuple(t.shape) != tuple(x_t.shape):
            raise ValueError(f"{who}: state.{field} has shape {tuple(t.shape)} but one input step has shape "
                             f"{tuple(x_t.shape)}; pass state=None to start a new batch")
        if t.device != x_t.device:
            raise ValueError(f"{who}: state.{field} is on {t.device} but the input is on {x_t.device}; "
                             "move the state with the input")


class LIF(_Neuron):
    """Current-based leaky integrate-and-fire population (math in :func:`~spikegrad.functional.lif_step`).

    Args:
        tau_mem: membrane time constant (steps, > 0; ``inf`` = no leak); a number or a tensor of
            per-neuron values.
        tau_syn: synaptic time constant (steps, >= 0; 0 = current passed straight through).
        v_th: threshold (threshold units, > 0). v_reset: potential after a spike, ``reset="zero"``.
        reset: one of :data:`~spikegrad.functional.RESET_MODES`: "subtract" | "zero" | "none".
        detach_reset: stop gradients through the reset (default, as in most surrogate-gradient work).
        surrogate: registry name or :class:`~spikegrad.surrogates.Surrogate` (deep-copied).
        refractory: refractory period in steps (0 = none).
        learn_tau: learn the time constants (as ``log tau``): True (both), "mem" or "syn".
        learn_threshold: learn the threshold (as ``log v_th``, so it stays positive).
        shape: shape of the per-neuron constants (e.g. ``(N,)``); None = the shape of the tensors
            given, or one scalar for the population.
        recurrent: number of neurons N to add all-to-all recurrent weights ``W_rec [N, N]`` acting on
            the previous step's spikes; the input must then be ``[T, B, N]``. None = feed-forward.
        backend: how ``forward`` runs the time loop, one of :data:`spikegrad.kernels.BACKENDS`:
            "auto" (Triton kernels on CUDA, C kernels on CPU, else the fused PyTorch loop), "torch"
            (``scan``), "native", "fused", "fused_lowmem", "triton", "triton_lowmem";
            recurrent layers run the fused recurrent path (:mod:`spikegrad.kernels.recurrent`), also
            with learnable constants; ``scan`` runs where no fast path applies (a feed-forward layer
            with learnable constants, a refractory period with recurrence, a surrogate that is not a
            plain :class:`~spikegrad.surrogates.Surrogate`). :func:`spikegrad.kernels.explain_backend`
            says which path runs and why.
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> (spikes [T, B, ...], state)``.
    """

    def __init__(self, tau_mem: float | Tensor = 20.0, tau_syn: float | Tensor = 5.0, v_th: float | Tensor = 1.0,
                 v_reset: float = 0.0, reset: str = "subtract", detach_reset: bool = True,
                 surrogate: str | Surrogate = "fast_sigmoid", refractory: int = 0,
                 learn_tau: bool | str = False, learn_threshold: bool = False,
                 shape: tuple[int, ...] | None = None, recurrent: int | None = None, backend: str = "auto"):
        super().__init__()
        who = type(self).__name__
        check_backend(who, backend, BACKENDS)
        self.backend = backend
        self.reset = check_reset(who, reset)
        self.detach_reset = bool(detach_reset)
        self.refractory = checks.non_negative_int(who, "refractory", refractory, "steps")
        learn_mem, learn_syn = _learn_flags(who, learn_tau)
        self.surrogate = make_surrogate(surrogate)
        self._add_constant("tau_mem", tau_mem, learn_mem, shape)
        self._add_constant("tau_syn", tau_syn, learn_syn, shape)
        self._add_constant("v_th", v_th, bool(learn_threshold), shape)
        checks.real(who, "v_reset", v_reset, math.isfinite, "a finite number (threshold units)")
        self.register_buffer("v_reset", torch.tensor(float(v_reset)))
        self._add_recurrent(recurrent)

    def params(self, dtype: torch.dtype | None = None) -> LIFParams:
        """The :class:`~spikegrad.functional.LIFParams` for inputs of ``dtype`` (constants in
        :func:`~spikegrad.functional.state_dtype`: float32 for half-precision inputs)."""
        def cast(t):
            return t if dtype is None else t.to(state_dtype(dtype))
        return LIFParams(cast(decay(self.tau_mem)), cast(decay(self.tau_syn)), cast(self.v_th),
                         cast(self.v_reset), self.reset, self.detach_reset, self.refractory)

    def step(self, x_t: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """One step: ``x_t [B, ...] -> (spikes_t [B, ...], state)``."""
        _check_state(type(self).__name__, state, x_t, LIFState)
        p = self.params(x_t.dtype)
        if self.w_rec is None:
            return lif_step(x_t, state, p, self.surrogate)
        self._check_recurrent_input(x_t[None])
        return recurrent_lif_step(x_t, state, p, self.w_rec, self.surrogate)

    def forward(self, x_seq: Tensor, state: LIFState | None = None,
                record: bool = False) -> tuple[Tensor, LIFState]:
        """Run ``T`` steps. With ``record=True`` the returned state holds every step, ``[T, B, ...]``."""
        self._check_input(x_seq)
        self._check_recurrent_input(x_seq)
        _check_state(type(self).__name__, state, x_seq[0], LIFState)
        run = partial(lif_sequence, p=self.params(x_seq.dtype), spike_fn=self.surrogate, backend=self.backend,
                      w_rec=self.w_rec)
        return self._sequence(run, x_seq, state, record)

    def extra_repr(self) -> str:
        return (f"{self._describe('tau_mem', 'tau_syn', 'v_th')}, reset={self.reset!r}, refractory={self.refractory}, "
                f"recurrent={None if self.w_rec is None else self.w_rec.shape[0]}, backend={self.backend!r}")


class IF(LIF):
    """Integrate-and-fire neuron: no leak, no synaptic filter (``v[t] = v[t-1] + x[t]``).

    The neuron of rate-based ANN-to-SNN conversion; reset by subtraction keeps the residual charge.
    It is :class:`LIF` with ``tau_mem = inf`` and ``tau_syn = 0`` and runs on the same kernels.
    Shapes as :class:`LIF`.
    """

    def __init__(self, v_th: float | Tensor = 1.0, reset: str = "subtract", detach_reset: bool = True,
                 surrogate: str | Surrogate = "fast_sigmoid", v_reset: float = 0.0,
                 refractory: int = 0, learn_threshold: bool = False, shape: tuple[int, ...] | None = None,
                 backend: str = "auto"):
        super().__init__(tau_mem=math.inf, tau_syn=0.0, v_th=v_th, v_reset=v_reset, reset=reset,
                         detach_reset=detach_reset, surrogate=surrogate, refractory=refractory,
                         learn_threshold=learn_threshold, shape=shape, backend=backend)


class ALIF(_Neuron):
    """Adaptive LIF population (LSNN neuron, Bellec et al. 2018; math in
    :func:`~spikegrad.functional.alif_step`): every spike raises the threshold by
    ``beta (1 - exp(-1/tau_ada))``, and the raise decays with ``tau_ada``.

    Args:
        tau_mem, tau_syn, v_th, v_reset, reset, detach_reset, surrogate, learn_threshold, shape: as
            :class:`LIF` (with ``reset="subtract"`` a spike subtracts the effective threshold).
        tau_ada: adaptation time constant (steps, > 0).
        beta: threshold increase per unit of adaptation (threshold units, >= 0; 0 = plain LIF).
        learn_tau: learn the time constants (as ``log tau``): True (all three), "mem" or "syn".
        recurrent: number of neurons N to add all-to-all recurrent weights ``W_rec [N, N]`` on the
            previous step's spikes (the LSNN layer); the input must then be ``[T, B, N]``. None = feed-forward.
        backend: one of :data:`spikegrad.kernels.ALIF_BACKENDS`: "auto" (default: the fused layer of
            :mod:`spikegrad.kernels.recurrent` where it applies, see :func:`spikegrad.kernels.explain_backend`),
            "fused" or "torch" (the reference :func:`~spikegrad.functional.scan` of ``alif_step``).
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> (spikes [T, B, ...], ALIFState)``.
    """

    def __init__(self, tau_mem: float | Tensor = 20.0, tau_syn: float | Tensor = 5.0,
                 tau_ada: float | Tensor = 200.0, beta: float | Tensor = 1.8, v_th: float | Tensor = 1.0,
                 v_reset: float = 0.0, reset: str = "subtract", detach_reset: bool = True,
                 surrogate: str | Surrogate = "fast_sigmoid", learn_tau: bool | str = False,
                 learn_threshold: bool = False, shape: tuple[int, ...] | None = None, recurrent: int | None = None,
                 backend: str = "auto"):
        super().__init__()
        who = type(self).__name__
        check_backend(who, backend, ALIF_BACKENDS)
        self.backend = backend
        self.reset = check_reset(who, reset)
        self.detach_reset = bool(detach_reset)
        learn_mem, learn_syn = _learn_flags(who, learn_tau)
        self.surrogate = make_surrogate(surrogate)
        self._add_constant("tau_mem", tau_mem, learn_mem, shape)
        self._add_constant("tau_syn", tau_syn, learn_syn, shape)
        self._add_constant("tau_ada", tau_ada, learn_tau is True, shape)
        self._add_constant("beta", beta, False, shape)
        self._add_constant("v_th", v_th, bool(learn_threshold), shape)
        checks.real(who, "v_reset", v_reset, math.isfinite, "a finite number (threshold units)")
        self.register_buffer("v_reset", torch.tensor(float(v_reset)))
        self._add_recurrent(recurrent)

    def params(self, dtype: torch.dtype | None = None) -> ALIFParams:
        """The :class:`~spikegrad.functional.ALIFParams` for inputs of ``dtype`` (see :meth:`LIF.params`)."""
        def cast(t):
            return t if dtype is None else t.to(state_dtype(dtype))
        return ALIFParams(cast(decay(self.tau_mem)), cast(decay(self.tau_syn)), cast(decay(self.tau_ada)),
                          cast(self.beta), cast(self.v_th), cast(self.v_reset), self.reset, self.detach_reset)

    def step(self, x_t: Tensor, state: ALIFState | None = None) -> tuple[Tensor, ALIFState]:
        """One step: ``x_t [B, ...] -> (spikes_t [B, ...], state)``."""
        _check_state(type(self).__name__, state, x_t, ALIFState)
        if self.w_rec is None:
            return alif_step(x_t, state, self.params(x_t.dtype), self.surrogate)
        self._check_recurrent_input(x_t[None])
        return recurrent_alif_step(x_t, state, self.params(x_t.dtype), self.w_rec, self.surrogate)

    def forward(self, x_seq: Tensor, state: ALIFState | None = None,
                record: bool = False) -> tuple[Tensor, ALIFState]:
        """Run ``T`` steps. With ``record=True`` the returned state holds every step, ``[T, B, ...]``."""
        self._check_input(x_seq)
        self._check_recurrent_input(x_seq)
        _check_state(type(self).__name__, state, x_seq[0], ALIFState)
        run = partial(alif_sequence, p=self.params(x_seq.dtype), spike_fn=self.surrogate, backend=self.backend,
                      w_rec=self.w_rec)
        return self._sequence(run, x_seq, state, record)

    def extra_repr(self) -> str:
        return (f"{self._describe('tau_mem', 'tau_syn', 'tau_ada', 'beta', 'v_th')}, reset={self.reset!r}, "
                f"recurrent={None if self.w_rec is None else self.w_rec.shape[0]}")


class LI(_Neuron):
    """Non-spiking leaky integrator readout (math in :func:`~spikegrad.functional.li_step`); outputs
    its membrane trace.

    Args:
        tau_mem: membrane time constant (steps, > 0). tau_syn: synaptic time constant (steps, >= 0).
            Numbers or per-neuron tensors.
        learn_tau: learn the time constants (as ``log tau``): True (both), "mem" or "syn".
        shape: shape of per-neuron constants or None.
        backend: how ``forward`` runs the time loop, one of :data:`spikegrad.kernels.LI_BACKENDS`:
            ``"auto"`` (C kernel for float32/float64 CPU tensors where built, else ``"torch"``),
            ``"native"`` or ``"torch"`` (the reference :func:`~spikegrad.functional.scan`).
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> (v_seq [T, B, ...], state)``.
    """

    def __init__(self, tau_mem: float | Tensor = 20.0, tau_syn: float | Tensor = 5.0, learn_tau: bool | str = False,
                 shape: tuple[int, ...] | None = None, backend: str = "auto"):
        super().__init__()
        check_backend("LI", backend, LI_BACKENDS)
        self.backend = backend
        learn_mem, learn_syn = _learn_flags("LI", learn_tau)
        self._add_constant("tau_mem", tau_mem, learn_mem, shape)
        self._add_constant("tau_syn", tau_syn, learn_syn, shape)

    def params(self, dtype: torch.dtype | None = None) -> LIParams:
        """The :class:`~spikegrad.functional.LIParams` for inputs of ``dtype`` (see :meth:`LIF.params`)."""
        dm, ds = decay(self.tau_mem), decay(self.tau_syn)
        return LIParams(dm, ds) if dtype is None else LIParams(dm.to(state_dtype(dtype)), ds.to(state_dtype(dtype)))

    def step(self, x_t: Tensor, state: LIState | None = None) -> tuple[Tensor, LIState]:
        """One step: ``x_t [B, ...] -> (v_t [B, ...], state)``."""
        _check_state("LI", state, x_t, LIState)
        return li_step(x_t, state, self.params(x_t.dtype))

    def forward(self, x_seq: Tensor, state: LIState | None = None,
                record: bool = False) -> tuple[Tensor, LIState]:
        """Run ``T`` steps; the output is the membrane trace ``[T, B, ...]``."""
        self._check_input(x_seq)
        _check_state("LI", state, x_seq[0], LIState)
        return self._sequence(partial(li_sequence, p=self.params(x_seq.dtype), backend=self.backend), x_seq, state,
                              record)

    def extra_repr(self) -> str:
        return self._describe("tau_mem", "tau_syn")


# -------------------------------------------------------------------------------- recomputation
def set_recompute(model: nn.Module, chunk: int | None) -> int:
    """Recompute the neuron layers of ``model`` in chunks of ``chunk`` steps in the backward pass.

    Sets :attr:`recompute` on every neuron module in ``model`` (``model`` itself included): while
    gradients are on, each layer runs its sequence through
    :func:`~spikegrad.functional.recompute_chunks`, keeping its state every ``chunk`` steps and
    running each chunk again in backward, so the memory it keeps for backward grows with
    ``T / chunk`` instead of ``T``, for about one more forward pass of the layers in time. Outputs
    and gradients are unchanged (to float rounding). Under ``torch.no_grad`` (evaluation) nothing
    changes and nothing is paid. What stays whole: the layers' inputs ``[T, B, ...]`` (kept by the
    chunks) and everything outside the neurons (the linear layers keep their inputs, the spikes).

    Args:
        model: a neuron layer or a model containing them.
        chunk: steps per chunk (int > 0), or None to turn recomputation off.
    Returns:
        the number of neuron layers set.
    Raises:
        ValueError: ``chunk`` is not a positive int or None; ``model`` has no neuron layers (and
            ``chunk`` is not None: the setting would have no effect).
    """
    if chunk is not None:
        chunk = checks.positive_int("set_recompute", "chunk", chunk, "steps per chunk, or None for off")
    layers = [m for m in model.modules() if isinstance(m, _Neuron)]
    if not layers and chunk is not None:
        raise ValueError(f"set_recompute: {type(model).__name__} has no neuron layers (LIF, ALIF, LI, ...), so "
                         f"recompute={chunk} would have no effect; leave it off (None, trainer.recompute=null)")
    for m in layers:
        m.recompute = chunk
    return len(layers)


@contextlib.contextmanager
def recomputing(model: nn.Module, chunk: int | None) -> Iterator[None]:
    """:func:`set_recompute` for the block; every layer's previous setting is restored after.
    ``chunk=None`` leaves the model as it is (a model without neuron layers is then no error)."""
    if chunk is None:
        yield
        return
    saved = {m: m.recompute for m in model.modules() if isinstance(m, _Neuron)}
    set_recompute(model, chunk)
    try:
        yield
    finally:
        for m, value in saved.items():
            m.recompute = value


# ----------------------------------------------------------------------------- BrainScaleS-2 model
class DelayedState(NamedTuple):
    """State of a neuron whose input arrives one step late: the neuron's own state and the last
    input step ``[B, ...]`` (the next call's first input)."""

    neuron: Any
    last_x: Tensor


def _delayed_input(x_seq: Tensor, state: DelayedState | None, scale: Tensor) -> tuple[Tensor, Tensor]:
    """``scale * x`` delayed by one step (``[T, B, ...]``, the first step from ``state``) and the
    last input step to carry over."""
    first = torch.zeros_like(x_seq[:1]) if state is None else state.last_x.unsqueeze(0).to(x_seq.dtype)
    return scale * torch.cat([first, x_seq[:-1]]), x_seq[-1].detach()


class _DelayedInput:
    """Mixin for a neuron module whose input arrives one step late, scaled by ``1 - decay_mem``
    (the BrainScaleS-2 software model); the state is a :class:`DelayedState`."""

    def step(self, x_t: Tensor, state: DelayedState | None = None) -> tuple[Tensor, DelayedState]:
        """One step: ``x_t [B, ...] -> (output_t [B, ...], state)``."""
        out, state = self.forward(x_t.unsqueeze(0), state)
        return out[0], state

    def forward(self, x_seq: Tensor, state: DelayedState | None = None,
                record: bool = False) -> tuple[Tensor, DelayedState]:
        """Run ``T`` steps (``record=True``: ``state.neuron`` holds every step, ``[T, B, ...]``)."""
        self._check_input(x_seq)
        x, last = _delayed_input(x_seq, state, 1 - self.params(x_seq.dtype).decay_mem)
        out, st = super().forward(x, None if state is None else state.neuron, record)
        return out, DelayedState(st, last)


class BSS2LIF(_DelayedInput, LIF):
    """The LIF neuron of the BrainScaleS-2 group's software model (hxtorch's CUBA LIF integration,
    with which Cramer et al. 2022 compare the chip), in threshold units with leak potential 0::

        v[t] = dm v[t-1] + (1 - dm) i[t-1]        # the current of the previous step: one step of delay
        i[t] = ds i[t-1] + x[t]
        s[t] = H(v[t] - v_th);  v[t] = v_reset where s[t]

    It is :class:`LIF` with ``reset="zero"`` fed ``(1 - dm) x[t-1]`` (so it runs on the same fast
    kernels): the input is scaled by ``1 - exp(-1 / tau_mem)`` (about ``1 / tau_mem``) and arrives
    one step late. Arguments as :class:`LIF` (``reset`` is always ``"zero"``; no recurrent weights).
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> (spikes [T, B, ...], DelayedState)``.
    """

    def __init__(self, tau_mem: float | Tensor = 20.0, tau_syn: float | Tensor = 5.0, v_th: float | Tensor = 1.0,
                 v_reset: float = 0.0, detach_reset: bool = True, surrogate: str | Surrogate = "fast_sigmoid",
                 refractory: int = 0, learn_tau: bool | str = False, learn_threshold: bool = False,
                 shape: tuple[int, ...] | None = None, backend: str = "auto"):
        super().__init__(tau_mem=tau_mem, tau_syn=tau_syn, v_th=v_th, v_reset=v_reset, reset="zero",
                         detach_reset=detach_reset, surrogate=surrogate, refractory=refractory, learn_tau=learn_tau,
                         learn_threshold=learn_threshold, shape=shape, backend=backend)


class BSS2LI(_DelayedInput, LI):
    """The leaky-integrator readout of the BrainScaleS-2 software model: :class:`LI` fed
    ``(1 - dm) x[t-1]`` (``v[t] = dm v[t-1] + (1 - dm) i[t-1]``, ``i[t] = ds i[t-1] + x[t]``).
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> (v_seq [T, B, ...], DelayedState)``.
    """
