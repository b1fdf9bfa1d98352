"""Leaky integrate-and-fire neurons: a functional core and thin ``nn.Module`` wrappers.

Conventions (project-wide):

* tensors are time-first, ``[T, B, ...]``; one step is ``[B, ...]``; any trailing shape works, so
  the neurons can follow a ``Linear`` ([T, B, N]) or a ``Conv2d`` ([T, B, C, H, W]);
* time is counted in steps: a time constant ``tau`` gives the per-step decay ``exp(-1 / tau)``;
  ``tau_syn = 0`` removes the synaptic filter, ``tau_mem = inf`` removes the leak;
* voltages are in threshold units (``v_th = 1`` by default); a neuron spikes iff ``v - v_th > 0``.

The current-based LIF neuron (as trained on BrainScaleS-2 with surrogate gradients) is, per step::

    i[t] = decay_syn * i[t-1] + x[t]                  # synaptic current
    v[t] = decay_mem * v[t-1] + i[t]                  # membrane (before reset)
    s[t] = H(v[t] - v_th)                             # spike, surrogate gradient in backward
    v[t] <- v[t] - s v_th        (reset="subtract")
            v[t] (1 - s) + s v_reset    (reset="zero")
            v[t]                  (reset="none")

with ``s`` detached in the reset when ``detach_reset`` (the default). With ``refractory = n > 0``
a neuron that spiked holds its membrane and cannot spike for the next ``n`` steps.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map_only

from .surrogates import Surrogate, make_surrogate

__all__ = [
    "LIFParams",
    "LIFState",
    "LIParams",
    "LIState",
    "lif_step",
    "li_step",
    "scan",
    "last",
    "detach_state",
    "LIF",
    "LI",
    "IF",
    "RESET_MODES",
]

RESET_MODES = ("subtract", "zero", "none")


class LIFParams(NamedTuple):
    """Constants of :func:`lif_step`; tensors broadcast against ``[B, ...]``.

    decay_mem, decay_syn: per-step decays in [0, 1] (``exp(-1 / tau)``).
    v_th: threshold (threshold units, > 0). v_reset: reset potential for ``reset="zero"``.
    reset: "subtract" | "zero" | "none". detach_reset: stop the gradient through the reset.
    refractory: refractory period in steps (0 = none).
    """

    decay_mem: Tensor | float
    decay_syn: Tensor | float
    v_th: Tensor | float = 1.0
    v_reset: Tensor | float = 0.0
    reset: str = "subtract"
    detach_reset: bool = True
    refractory: int = 0


class LIFState(NamedTuple):
    """State of a LIF population, each ``[B, ...]``.

    v: membrane potential (threshold units, after reset). i: synaptic current.
    r: remaining refractory steps (only with ``refractory > 0``, else None).
    z: spikes of the previous step (only for recurrent layers, else None).
    """

    v: Tensor
    i: Tensor
    r: Tensor | None = None
    z: Tensor | None = None


class LIParams(NamedTuple):
    """Constants of :func:`li_step`: per-step decays of membrane and synaptic current."""

    decay_mem: Tensor | float
    decay_syn: Tensor | float


class LIState(NamedTuple):
    """State of a leaky integrator, each ``[B, ...]``: membrane ``v`` and synaptic current ``i``."""

    v: Tensor
    i: Tensor


def lif_step(x: Tensor, state: LIFState | None, p: LIFParams,
             spike_fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, LIFState]:
    """One step of the current-based LIF neuron (equations in the module docstring).

    Args:
        x: input current ``[B, ...]`` (threshold units per step).
        state: previous :class:`LIFState`, or None for a neuron at rest (zeros like ``x``).
        p: :class:`LIFParams`.
        spike_fn: maps ``v - v_th`` to spikes (Heaviside forward, surrogate backward).
    Returns:
        ``(spikes [B, ...] in {0, 1} with the dtype of x, new state)``.
    """
    if state is None:
        zero = torch.zeros_like(x)
        state = LIFState(zero, zero, zero if p.refractory > 0 else None)
    i = p.decay_syn * state.i + x
    v = p.decay_mem * state.v + i
    if p.refractory > 0:
        active = state.r <= 0
        v = torch.where(active, v, state.v)
        spikes = spike_fn(v - p.v_th) * active.to(x.dtype)
    else:
        spikes = spike_fn(v - p.v_th)
    s = spikes.detach() if p.detach_reset else spikes
    if p.reset == "subtract":
        v = v - s * p.v_th
    elif p.reset == "zero":
        v = v * (1 - s) + s * p.v_reset
    r = None
    if p.refractory > 0:
        r = torch.where(spikes.detach() > 0, torch.full_like(state.r, p.refractory), (state.r - 1).clamp(min=0))
    return spikes, LIFState(v, i, r)


def li_step(x: Tensor, state: LIState | None, p: LIParams) -> tuple[Tensor, LIState]:
    """One step of the non-spiking leaky integrator: ``i = ds i + x``, ``v = dm v + i``.

    Args:
        x: input current ``[B, ...]``. state: previous :class:`LIState` or None (rest).
    Returns:
        ``(v [B, ...], new state)``: the membrane is the output.
    """
    if state is None:
        zero = torch.zeros_like(x)
        state = LIState(zero, zero)
    i = p.decay_syn * state.i + x
    v = p.decay_mem * state.v + i
    return v, LIState(v, i)


def _stack_states(states: list) -> Any:
    first = states[0]
    return type(first)(*(None if f is None else torch.stack([s[k] for s in states])
                         for k, f in enumerate(first)))


def scan(step: Callable, x_seq: Tensor, state: Any, *args, record: bool = False) -> tuple[Tensor, Any]:
    """Run ``step(x_t, state, *args) -> (out_t, state)`` over the first axis of ``x_seq``.

    Args:
        x_seq: ``[T, B, ...]``.
        record: if True, return the per-step states stacked to ``[T, B, ...]`` instead of the
            final state (the final state is then ``last(states)``).
    Returns:
        ``(out_seq [T, B, ...], final state or stacked states)``.
    """
    outs, states = [], []
    for x_t in x_seq.unbind(0):
        out, state = step(x_t, state, *args)
        outs.append(out)
        if record:
            states.append(state)
    return torch.stack(outs), (_stack_states(states) if record else state)


def last(states: Any) -> Any:
    """The final state ``[B, ...]`` of states recorded with ``record=True`` (``[T, B, ...]``)."""
    return tree_map_only(Tensor, lambda t: t[-1], states)


def detach_state(state: Any) -> Any:
    """Detach every tensor of a (nested) state, e.g. between chunks of truncated BPTT."""
    return tree_map_only(Tensor, Tensor.detach, state)


def _decay(tau: Tensor) -> Tensor:
    return torch.exp(-1.0 / tau)  # tau = 0 -> 0, tau = inf -> 1


def _check_seq(name: str, x_seq: Tensor) -> None:
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"{name}: x_seq must be a tensor of shape [T, B, ...], got {type(x_seq).__name__}")
    if x_seq.dim() < 2:
        raise ValueError(f"{name}: x_seq must have shape [T, B, ...] (time first, at least 2 dims), "
                         f"got shape {tuple(x_seq.shape)}; use .step(x_t, state) for a single step")
    if not x_seq.is_floating_point():
        raise TypeError(f"{name}: x_seq must be a floating-point tensor, got {x_seq.dtype}; "
                        "convert spikes with .to(torch.float32)")


def _check_state(name: str, state: Any, x_t: Tensor) -> None:
    if state is not None and tuple(state[0].shape) != tuple(x_t.shape):
        raise ValueError(f"{name}: state.v has shape {tuple(state[0].shape)} but one input step has shape "
                         f"{tuple(x_t.shape)}; pass state=None to start a new batch")


def _constant(module: nn.Module, name: str, value: float, learn: bool, shape) -> None:
    t = torch.full(tuple(shape) if shape is not None else (), float(value))
    if learn:
        module.register_parameter(name, nn.Parameter(t))
    else:
        module.register_buffer(name, t)


def _check_tau(cls: str, name: str, tau: float, allow_zero: bool) -> None:
    ok = isinstance(tau, (int, float)) and not math.isnan(tau) and (tau >= 0 if allow_zero else tau > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{cls}: {name} must be a number {bound} (in steps; inf = no decay), got {tau!r}")


class LIF(nn.Module):
    """Current-based leaky integrate-and-fire population (math in :func:`lif_step`).

    Args:
        tau_mem: membrane time constant (steps, > 0; ``inf`` = no leak).
        tau_syn: synaptic time constant (steps, >= 0; 0 = current passed straight through).
        v_th: threshold (threshold units, > 0). v_reset: potential after a spike, ``reset="zero"``.
        reset: "subtract" | "zero" | "none".
        detach_reset: stop gradients through the reset (default, as in most surrogate-gradient work).
        surrogate: registry name or :class:`~spikegrad.surrogates.Surrogate` (deep-copied).
        refractory: refractory period in steps (0 = none).
        learn_tau, learn_threshold: make the time constants / threshold ``nn.Parameter``\\ s.
        shape: shape of the per-neuron constants (e.g. ``(N,)``) for heterogeneous or learnable
            per-neuron values; None = one scalar for the population.
        recurrent: number of neurons N to add all-to-all recurrent weights ``W_rec [N, N]`` acting on
            the previous step's spikes over the last axis; None = feed-forward.
        backend: how ``forward`` runs the time loop, one of :data:`spikegrad.kernels.BACKENDS`:
            "auto" (Triton kernels on CUDA, C kernels on CPU, else the fused PyTorch loop), "torch"
            (``scan``), "native", "fused", "fused_lowmem", "triton", "triton_lowmem"; falls back to
            ``scan`` where a fast path does not apply (recurrent, learnable constants); see
            :mod:`spikegrad.kernels`.
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> (spikes [T, B, ...], state)``.
    """

    def __init__(self, tau_mem: float = 20.0, tau_syn: float = 5.0, v_th: float = 1.0,
                 v_reset: float = 0.0, reset: str = "subtract", detach_reset: bool = True,
                 surrogate: str | Surrogate = "fast_sigmoid", refractory: int = 0,
                 learn_tau: bool = False, learn_threshold: bool = False,
                 shape: tuple[int, ...] | None = None, recurrent: int | None = None, backend: str = "auto"):
        super().__init__()
        cls = type(self).__name__
        from .kernels import check_backend

        check_backend(cls, backend)
        self.backend = backend
        _check_tau(cls, "tau_mem", tau_mem, allow_zero=False)
        _check_tau(cls, "tau_syn", tau_syn, allow_zero=True)
        if not isinstance(v_th, (int, float)) or not v_th > 0:
            raise ValueError(f"{cls}: v_th must be a positive number (threshold units), got {v_th!r}")
        if reset not in RESET_MODES:
            raise ValueError(f"{cls}: reset must be one of {RESET_MODES}, got {reset!r}")
        if not isinstance(refractory, int) or refractory < 0:
            raise ValueError(f"{cls}: refractory must be a non-negative int (steps), got {refractory!r}")
        if recurrent is not None and (not isinstance(recurrent, int) or recurrent <= 0):
            raise ValueError(f"{cls}: recurrent must be None or the number of neurons (int > 0), got {recurrent!r}")
        self.reset, self.detach_reset, self.refractory = reset, bool(detach_reset), refractory
        self.surrogate = make_surrogate(surrogate)
        _constant(self, "tau_mem", tau_mem, learn_tau, shape)
        _constant(self, "tau_syn", tau_syn, learn_tau and tau_syn > 0, shape)
        _constant(self, "v_th", v_th, learn_threshold, shape)
        self.register_buffer("v_reset", torch.tensor(float(v_reset)))
        self.w_rec = None
        if recurrent is not None:
            self.w_rec = nn.Parameter(torch.empty(recurrent, recurrent).uniform_(-1, 1) / math.sqrt(recurrent))

    def params(self, dtype: torch.dtype | None = None) -> LIFParams:
        """The :class:`LIFParams` for the current constants, cast to ``dtype``."""
        def cast(t):
            return t if dtype is None else t.to(dtype)
        return LIFParams(cast(_decay(self.tau_mem)), cast(_decay(self.tau_syn)), cast(self.v_th),
                         cast(self.v_reset), self.reset, self.detach_reset, self.refractory)

    def _step(self, x_t: Tensor, state: LIFState | None, p: LIFParams) -> tuple[Tensor, LIFState]:
        if self.w_rec is None:
            return lif_step(x_t, state, p, self.surrogate)
        if state is not None and state.z is not None:
            x_t = x_t + state.z @ self.w_rec.to(x_t.dtype).t()
        spikes, new = lif_step(x_t, state, p, self.surrogate)
        return spikes, new._replace(z=spikes)

    def step(self, x_t: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """One step: ``x_t [B, ...] -> (spikes_t [B, ...], state)``."""
        _check_state(type(self).__name__, state, x_t)
        return self._step(x_t, state, self.params(x_t.dtype))

    def forward(self, x_seq: Tensor, state: LIFState | None = None,
                record: bool = False) -> tuple[Tensor, LIFState]:
        """Run ``T`` steps. With ``record=True`` the returned state holds every step, ``[T, B, ...]``."""
        _check_seq(type(self).__name__, x_seq)
        _check_state(type(self).__name__, state, x_seq[0])
        if self.w_rec is None and self.backend != "torch":
            from .kernels import lif_sequence

            return lif_sequence(x_seq, state, self.params(x_seq.dtype), self.surrogate, self.backend, record)
        return scan(self._step, x_seq, state, self.params(x_seq.dtype), record=record)

    def extra_repr(self) -> str:
        return (f"tau_mem={self.tau_mem.detach().mean().item():g}, tau_syn={self.tau_syn.detach().mean().item():g}, "
                f"v_th={self.v_th.detach().mean().item():g}, reset={self.reset!r}, refractory={self.refractory}, "
                f"recurrent={None if self.w_rec is None else self.w_rec.shape[0]}, backend={self.backend!r}")


class IF(LIF):
    """Integrate-and-fire neuron: no leak, no synaptic filter (``v[t] = v[t-1] + x[t]``).

    The neuron of rate-based ANN-to-SNN conversion; reset by subtraction keeps the residual charge.
    Shapes as :class:`LIF`.
    """

    def __init__(self, v_th: float = 1.0, reset: str = "subtract", detach_reset: bool = True,
                 surrogate: str | Surrogate = "fast_sigmoid", v_reset: float = 0.0,
                 refractory: int = 0, learn_threshold: bool = False, shape: tuple[int, ...] | None = None,
                 backend: str = "auto"):
        super().__init__(tau_mem=math.inf, tau_syn=0.0, v_th=v_th, v_reset=v_reset, reset=reset,
                         detach_reset=detach_reset, surrogate=surrogate, refractory=refractory,
                         learn_threshold=learn_threshold, shape=shape, backend=backend)


class LI(nn.Module):
    """Non-spiking leaky integrator readout (math in :func:`li_step`); outputs its membrane trace.

    Args:
        tau_mem: membrane time constant (steps, > 0). tau_syn: synaptic time constant (steps, >= 0).
        learn_tau: learnable time constants. shape: shape of per-neuron constants or None.
        backend: how ``forward`` runs the time loop, one of :data:`spikegrad.kernels.LI_BACKENDS`:
            ``"auto"`` (C kernel for float32/float64 CPU tensors where built, else ``"torch"``),
            ``"native"`` or ``"torch"`` (the reference :func:`scan` of :func:`li_step`).
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> (v_seq [T, B, ...], state)``.
    """

    def __init__(self, tau_mem: float = 20.0, tau_syn: float = 5.0, learn_tau: bool = False,
                 shape: tuple[int, ...] | None = None, backend: str = "auto"):
        super().__init__()
        from .kernels import LI_BACKENDS, check_backend

        check_backend("LI", backend, LI_BACKENDS)
        self.backend = backend
        _check_tau("LI", "tau_mem", tau_mem, allow_zero=False)
        _check_tau("LI", "tau_syn", tau_syn, allow_zero=True)
        _constant(self, "tau_mem", tau_mem, learn_tau, shape)
        _constant(self, "tau_syn", tau_syn, learn_tau and tau_syn > 0, shape)

    def params(self, dtype: torch.dtype | None = None) -> LIParams:
        """The :class:`LIParams` for the current constants, cast to ``dtype``."""
        dm, ds = _decay(self.tau_mem), _decay(self.tau_syn)
        return LIParams(dm, ds) if dtype is None else LIParams(dm.to(dtype), ds.to(dtype))

    def step(self, x_t: Tensor, state: LIState | None = None) -> tuple[Tensor, LIState]:
        """One step: ``x_t [B, ...] -> (v_t [B, ...], state)``."""
        _check_state("LI", state, x_t)
        return li_step(x_t, state, self.params(x_t.dtype))

    def forward(self, x_seq: Tensor, state: LIState | None = None,
                record: bool = False) -> tuple[Tensor, LIState]:
        """Run ``T`` steps; the output is the membrane trace ``[T, B, ...]``."""
        _check_seq("LI", x_seq)
        _check_state("LI", state, x_seq[0])
        if self.backend == "torch":
            return scan(li_step, x_seq, state, self.params(x_seq.dtype), record=record)
        from .kernels import li_sequence

        return li_sequence(x_seq, state, self.params(x_seq.dtype), self.backend, record)

    def extra_repr(self) -> str:
        return f"tau_mem={self.tau_mem.detach().mean().item():g}, tau_syn={self.tau_syn.detach().mean().item():g}"
