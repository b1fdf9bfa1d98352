"""The functional core: neuron states, constants and pure step functions, and the time loop.

Everything that defines what a neuron computes lives here, once. The fast paths of
:mod:`spikegrad.kernels` compute the same maths (and are tested against :func:`scan` of these
steps); the ``nn.Module``\\ s of :mod:`spikegrad.neurons` own the constants and call them. This
module imports only :mod:`spikegrad.checks` and torch; spike functions are passed in.

Conventions (project-wide):

* tensors are time-first, ``[T, B, ...]``; one step is ``[B, ...]``; any trailing shape works, so
  the neurons can follow a ``Linear`` ([T, B, N]) or a ``Conv2d`` ([T, B, C, H, W]);
* time is counted in steps: a time constant ``tau`` gives the per-step decay ``exp(-1 / tau)``;
  ``tau_syn = 0`` removes the synaptic filter, ``tau_mem = inf`` removes the leak;
* voltages are in threshold units (``v_th = 1`` by default); a neuron spikes iff ``v - v_th > 0``;
* precision: constants and states are kept in float32 for float16 / bfloat16 inputs
  (:func:`state_dtype`); only the outputs (spikes, the LI membrane output) take the input's dtype,
  so a half-precision input does not move the time constants.

The current-based LIF neuron (as trained on BrainScaleS-2 with surrogate gradients) is, per step::

    i[t] = decay_syn * i[t-1] + x[t]                  # synaptic current
    v[t] = decay_mem * v[t-1] + i[t]                  # membrane (before reset)
    s[t] = H(v[t] - v_th)                             # spike, surrogate gradient in backward
    v[t] <- v[t] - s v_th        (reset="subtract")
            v[t] (1 - s) + s v_reset    (reset="zero")
            v[t]                  (reset="none")

with ``s`` detached in the reset when ``detach_reset`` (the default). With ``refractory = n > 0``
a neuron that spiked holds its membrane and cannot spike for the next ``n`` steps. The IF neuron
is the LIF neuron with ``decay_mem = 1`` and ``decay_syn = 0``.

The adaptive LIF neuron (ALIF, the LSNN neuron of Bellec et al. 2018) adds a threshold that rises
with every spike and relaxes with its own time constant::

    th[t] = v_th + beta * a[t-1]                      # effective threshold
    s[t]  = H(v[t] - th[t])
    v[t] <- v[t] - s th[t]       (reset="subtract"; "zero" and "none" as above)
    a[t]  = decay_ada * a[t-1] + (1 - decay_ada) s[t]
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from . import checks

__all__ = [
    "RESET_MODES", "LIFParams", "LIFState", "ALIFParams", "ALIFState", "LIParams", "LIState",
    "decay", "lif_step", "recurrent_lif_step", "alif_step", "recurrent_alif_step", "li_step", "scan", "last", "detach_state",
    "stack_states", "check_reset", "state_dtype", "NetworkState", "recompute_chunks",
]

RESET_MODES = ("subtract", "zero", "none")
"""What a spike does to the membrane: subtract the threshold, set it to ``v_reset``, or nothing."""

SpikeFn = Callable[[Tensor], Tensor]


def check_reset(who: str, reset: Any) -> str:
    """``reset`` if it is one of :data:`RESET_MODES`; else a ValueError naming ``who``."""
    return checks.one_of(who, "reset", reset, RESET_MODES)


class LIFParams(NamedTuple):
    """Constants of :func:`lif_step`; tensors broadcast against ``[B, ...]``.

    decay_mem, decay_syn: per-step decays in [0, 1] (``exp(-1 / tau)``).
    v_th: threshold (threshold units, > 0). v_reset: reset potential for ``reset="zero"``.
    reset: one of :data:`RESET_MODES`. detach_reset: stop the gradient through the reset.
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


class ALIFParams(NamedTuple):
    """Constants of :func:`alif_step`: those of :class:`LIFParams` (no refractory period) plus
    ``decay_ada`` (per-step decay of the adaptation, ``exp(-1 / tau_ada)``) and ``beta`` (threshold
    increase per unit of adaptation, threshold units)."""

    decay_mem: Tensor | float
    decay_syn: Tensor | float
    decay_ada: Tensor | float
    beta: Tensor | float
    v_th: Tensor | float = 1.0
    v_reset: Tensor | float = 0.0
    reset: str = "subtract"
    detach_reset: bool = True


class ALIFState(NamedTuple):
    """State of an ALIF population, each ``[B, ...]``: membrane ``v``, synaptic current ``i``,
    adaptation ``a`` (a low-pass filter of the neuron's spikes, spikes/step) and ``z``, the spikes
    of the previous step (only for recurrent layers, else None)."""

    v: Tensor
    i: Tensor
    a: Tensor
    z: Tensor | None = None


class LIParams(NamedTuple):
    """Constants of :func:`li_step`: per-step decays of membrane and synaptic current."""

    decay_mem: Tensor | float
    decay_syn: Tensor | float


class LIState(NamedTuple):
    """State of a leaky integrator, each ``[B, ...]``: membrane ``v`` and synaptic current ``i``."""

    v: Tensor
    i: Tensor


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of constants and states for inputs of ``dtype``: float32 for float16 / bfloat16
    (a bfloat16 membrane with ``tau_mem = 100`` would decay as if ``tau`` were 84), else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def decay(tau: Tensor) -> Tensor:
    """Per-step decay ``exp(-1 / tau)`` of a time constant in steps (``tau = 0 -> 0``, ``inf -> 1``)."""
    return torch.exp(-1.0 / tau)


def _reset(v: Tensor, s: Tensor, v_th: Tensor | float, v_reset: Tensor | float, reset: str) -> Tensor:
    if reset == "subtract":
        return v - s * v_th
    if reset == "zero":
        return v * (1 - s) + s * v_reset
    return v


def lif_step(x: Tensor, state: LIFState | None, p: LIFParams, spike_fn: SpikeFn) -> tuple[Tensor, LIFState]:
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
        zero = x.new_zeros(x.shape, dtype=state_dtype(x.dtype))
        state = LIFState(zero, zero, zero if p.refractory > 0 else None)
    i = p.decay_syn * state.i + x
    v = p.decay_mem * state.v + i
    if p.refractory > 0:
        active = state.r <= 0
        v = torch.where(active, v, state.v)
        spikes = spike_fn(v - p.v_th) * active.to(v.dtype)
    else:
        spikes = spike_fn(v - p.v_th)
    s = spikes.detach() if p.detach_reset else spikes
    v = _reset(v, s, p.v_th, p.v_reset, p.reset)
    r = None
    if p.refractory > 0:
        r = torch.where(spikes.detach() > 0, torch.full_like(state.r, p.refractory), (state.r - 1).clamp(min=0))
    return spikes.to(x.dtype), LIFState(v, i, r)


def _recurrent_input(x: Tensor, state: Any, w_rec: Tensor) -> Tensor:
    """``x + z @ w_rec.T``: the input plus the recurrent current of the previous step's spikes
    ``state.z [B, N]`` (none at rest, or when the state holds no spikes)."""
    if state is None or state.z is None:
        return x
    return x + state.z @ w_rec.to(x.dtype).t()


def recurrent_lif_step(x: Tensor, state: LIFState | None, p: LIFParams, w_rec: Tensor,
                       spike_fn: SpikeFn) -> tuple[Tensor, LIFState]:
    """One step of a LIF layer with all-to-all recurrent weights on the previous step's spikes.

    Args:
        x: input current ``[B, N]``. w_rec: recurrent weights ``[N, N]`` (row = target neuron).
        state, p, spike_fn: as :func:`lif_step`; ``state.z`` holds the previous spikes ``[B, N]``.
    Returns:
        ``(spikes [B, N], new state with z = spikes)``.
    """
    spikes, new = lif_step(_recurrent_input(x, state, w_rec), state, p, spike_fn)
    return spikes, new._replace(z=spikes)


def recurrent_alif_step(x: Tensor, state: ALIFState | None, p: ALIFParams, w_rec: Tensor,
                        spike_fn: SpikeFn) -> tuple[Tensor, ALIFState]:
    """One step of an ALIF layer with all-to-all recurrent weights (the LSNN layer of Bellec et
    al. 2018): :func:`alif_step` on ``x + z @ w_rec.T``, ``z`` the previous step's spikes.

    Args:
        x: input current ``[B, N]``. w_rec: recurrent weights ``[N, N]`` (row = target neuron).
        state, p, spike_fn: as :func:`alif_step`; ``state.z`` holds the previous spikes ``[B, N]``.
    Returns:
        ``(spikes [B, N], new state with z = spikes)``.
    """
    spikes, new = alif_step(_recurrent_input(x, state, w_rec), state, p, spike_fn)
    return spikes, new._replace(z=spikes)


def alif_step(x: Tensor, state: ALIFState | None, p: ALIFParams, spike_fn: SpikeFn) -> tuple[Tensor, ALIFState]:
    """One step of the adaptive LIF neuron (equations in the module docstring).

    Args:
        x: input current ``[B, ...]``. state: previous :class:`ALIFState` or None (rest).
        p: :class:`ALIFParams`. spike_fn: maps ``v - th`` to spikes.
    Returns:
        ``(spikes [B, ...] in {0, 1}, new state)``.
    """
    if state is None:
        zero = x.new_zeros(x.shape, dtype=state_dtype(x.dtype))
        state = ALIFState(zero, zero, zero)
    i = p.decay_syn * state.i + x
    v = p.decay_mem * state.v + i
    th = p.v_th + p.beta * state.a
    spikes = spike_fn(v - th)
    s = spikes.detach() if p.detach_reset else spikes
    v = _reset(v, s, th, p.v_reset, p.reset)
    a = p.decay_ada * state.a + (1 - p.decay_ada) * s
    return spikes.to(x.dtype), ALIFState(v, i, a)


def li_step(x: Tensor, state: LIState | None, p: LIParams) -> tuple[Tensor, LIState]:
    """One step of the non-spiking leaky integrator: ``i = ds i + x``, ``v = dm v + i``.

    Args:
        x: input current ``[B, ...]``. state: previous :class:`LIState` or None (rest).
    Returns:
        ``(v [B, ...], new state)``: the membrane is the output.
    """
    if state is None:
        zero = x.new_zeros(x.shape, dtype=state_dtype(x.dtype))
        state = LIState(zero, zero)
    i = p.decay_syn * state.i + x
    v = p.decay_mem * state.v + i
    return v.to(x.dtype), LIState(v, i)


def stack_states(states: list) -> Any:
    """Stack a list of per-step states (NamedTuples of ``[B, ...]`` tensors or None) to ``[T, B, ...]``."""
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
    return torch.stack(outs), (stack_states(states) if record else state)


def _map_tensors(fn: Callable[[Any], Any], tree: Any, leaf: type | object = Tensor) -> Any:
    """``tree`` (nested tuples, lists, NamedTuples) with ``fn`` applied to every ``leaf`` (a type, or one object)."""
    if isinstance(leaf, type) and isinstance(tree, leaf) or tree is leaf:
        return fn(tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a NamedTuple state
        return type(tree)(*(_map_tensors(fn, t, leaf) for t in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map_tensors(fn, t, leaf) for t in tree)
    return tree


def last(states: Any) -> Any:
    """The final state ``[B, ...]`` of states recorded with ``record=True`` (``[T, B, ...]``)."""
    return _map_tensors(lambda t: t[-1], states)


def detach_state(state: Any) -> Any:
    """Detach every tensor of a (nested) state, e.g. between chunks of truncated BPTT."""
    return _map_tensors(Tensor.detach, state)


class NetworkState(tuple):
    """The state of a network: the final state of every stateful layer, in order, as a tuple.

    What every multi-layer network returns as its state (:class:`~spikegrad.models.SpikingMLP`,
    :class:`~spikegrad.models.SpikingConvNet`, the NIR importer's ``NIRNetwork``, the simulated chip's
    ``Observables``) and takes back to continue a run: running a sequence in chunks, passing each
    call's state to the next, gives the outputs of one run over the whole sequence.

    Entry ``k`` is the state of the network's ``k``-th stateful layer (stateless layers such as
    ``Linear`` have none): a neuron state (:class:`LIFState`, :class:`ALIFState`,
    :class:`LIState`, ...) of ``[B, ...]`` tensors, the :class:`NetworkState` of a sub-network (the
    MLP head of a ``SpikingConvNet``), or None for a layer at rest. It stays a plain tuple
    (``state[k]``, ``len(state)``, unpacking), and :func:`detach_state` and :func:`last` map over it.
    """

    __slots__ = ()

    @classmethod
    def of(cls, who: str, state: Any, n: int) -> "NetworkState":
        """Check the ``state`` argument of a network of ``n`` stateful layers.

        Args:
            who: the caller, named in the error (e.g. ``"SpikingMLP"``).
            state: None (every layer at rest), or the state a previous call returned (a
                :class:`NetworkState`, or a plain tuple of ``n`` layer states).
            n: the number of stateful layers.
        Returns:
            the per-layer states, ``n`` entries (all None for ``state=None``).
        Raises:
            ValueError: ``state`` is not a tuple of ``n`` layer states (e.g. a single layer's
                state, or the state of another network), naming ``who``, what was passed and the fix.
        """
        if state is None:
            return cls((None,) * n)
        if isinstance(state, tuple) and not hasattr(state, "_fields") and len(state) == n:
            return state if type(state) is cls else cls(state)
        if hasattr(state, "_fields"):
            got = f"a {type(state).__name__} (the state of one layer)"
        elif isinstance(state, tuple):
            got = f"a tuple of {len(state)}"
        else:
            got = type(state).__name__
        raise ValueError(f"{who}: state must be None or the .state of a previous call (a NetworkState of {n} layer "
                         f"states, one per stateful layer), got {got}; pass state=None to start at rest, or the "
                         "state this network returned to continue its run")

    def detach(self) -> "NetworkState":
        """Every tensor detached (:func:`detach_state`): the next chunk of truncated BPTT starts here
        with the same values and no graph back into this chunk."""
        return detach_state(self)

    def to(self, *args: Any, **kwargs: Any) -> "NetworkState":
        """Every tensor moved or cast as by :meth:`torch.Tensor.to` (e.g. ``state.to("cuda")``)."""
        return _map_tensors(lambda t: t.to(*args, **kwargs), self)

    def __repr__(self) -> str:
        return f"NetworkState{tuple.__repr__(self)}"


_SLOT = object()  # where a tensor of a state goes back, in the skeleton of a flattened state


def _cat_states(states: list) -> Any:
    """Concatenate outputs or recorded states (nested tuples of ``[T_k, B, ...]`` tensors and None) along time."""
    first = states[0]
    if isinstance(first, Tensor):
        return torch.cat(states)
    if isinstance(first, (tuple, list)):
        fields = [_cat_states([s[k] for s in states]) for k in range(len(first))]
        return type(first)(*fields) if hasattr(first, "_fields") else type(first)(fields)
    return first


def _own_storage(t: Tensor) -> Tensor:
    """``t``, or a copy where ``t`` is a view of a larger tensor (a final state that is the last step of
    a chunk's output, e.g. the spikes ``z``): a kept boundary state must not keep the chunk alive."""
    return t.clone() if t.untyped_storage().nbytes() > t.numel() * t.element_size() else t


def _run_chunk(fn: Callable, skeleton: Any, record: bool, x: Tensor, *tensors: Tensor) -> tuple[Tensor, Any]:
    """``fn`` on one chunk, the state rebuilt from ``skeleton`` and its ``tensors`` (passed flat, so
    that :func:`torch.utils.checkpoint.checkpoint` keeps them as saved inputs)."""
    it = iter(tensors)
    state = _map_tensors(lambda _: next(it), skeleton, _SLOT)
    return fn(x, state, record=True) if record else fn(x, state)


def recompute_chunks(fn: Callable, x_seq: Tensor, state: Any, chunk: int, record: bool = False) -> tuple[Any, Any]:
    """Run ``fn(x_chunk, state) -> (out_chunk, state)`` over time in chunks of ``chunk`` steps, each
    chunk under activation checkpointing (:func:`torch.utils.checkpoint.checkpoint`, non-reentrant).

    Between the forward and the backward pass only ``x_seq`` (the chunks' inputs), the outputs and
    the states at the chunk boundaries (``ceil(T / chunk)`` of them) are kept; backward runs each
    chunk's forward pass again, latest chunk first, and holds what ``fn`` saves for backward (a
    neuron's membranes, adaptation, ...) for that chunk only. That memory then grows with ``chunk``
    instead of ``T``, for the time of a second forward pass of ``fn``. Outputs and gradients (of the
    input, the initial state and anything ``fn`` uses: weights, constants) are those of one call
    ``fn(x_seq, state)`` up to float rounding (per-chunk parts of a gradient are added in another
    order), provided ``fn`` computes step by step (step ``t`` depends on steps ``<= t`` only, through
    the state); random operations are replayed from the saved random state, but draw other numbers
    than one call on the whole sequence would. Without gradients (``torch.no_grad``) ``fn`` runs
    once on the whole sequence. A whole model that takes and returns its state runs the same way::

        def run(x, state):
            out = model(x, state)                     # a SpikingOutput
            return (out.readout, out.spikes), out.state
        (readout, spikes), state = recompute_chunks(run, x_seq, None, 56)

    Args:
        fn: ``fn(x_chunk [t, B, ...], state) -> (out, state)``, ``out`` a ``[t, B, ...]`` tensor or a
            nested tuple of them (``state=None``: at rest); called as ``fn(x, state, record=True)``
            when ``record``, e.g. a neuron's sequence function.
        x_seq: input ``[T, B, ...]``. state: initial state (a nested tuple of ``[B, ...]`` tensors
            and None) or None.
        chunk: steps per chunk (int > 0); ``chunk >= T`` checkpoints the sequence as one chunk.
        record: ``fn`` returns per-step states ``[t, B, ...]``; they are concatenated to ``[T, B, ...]``
            and the next chunk starts from their last step (:func:`last`).
    Returns:
        ``(out [T, B, ...] (the chunks' outputs concatenated in time), final state, or the recorded
        states [T, B, ...] with record)``.
    """
    chunk = checks.positive_int("recompute_chunks", "chunk", chunk, "steps per chunk")
    if not torch.is_grad_enabled():
        return fn(x_seq, state, record=True) if record else fn(x_seq, state)
    outs, recorded = [], []
    for x in x_seq.split(chunk):
        tensors: list[Tensor] = []
        skeleton = _map_tensors(lambda t: tensors.append(t) or _SLOT, state)
        out, state = checkpoint(partial(_run_chunk, fn, skeleton, record), x, *tensors, use_reentrant=False)
        outs.append(out)
        if record:
            recorded.append(state)
            state = last(state)
        state = _map_tensors(_own_storage, state)
    if len(outs) == 1:
        return outs[0], (recorded[0] if record else state)
    return _cat_states(outs), (_cat_states(recorded) if record else state)
