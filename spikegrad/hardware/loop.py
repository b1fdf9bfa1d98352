"""In-the-loop training: the forward pass on a substrate, the gradient from the software model.

:func:`in_the_loop` runs the network on a :class:`~spikegrad.hardware.substrate.Substrate`
without autograd, then evaluates the software model layer by layer on the *recorded* presynaptic
spikes, and substitutes the measured values into the software graph::

    out = sw + (hw - sw).detach()     # value: the chip's; gradient: the software model's

for the spikes of every hidden layer (which are also the next layer's input), the hidden
membranes where recorded, and the readout trace. Losses and regularizers therefore see the chip's
observables, and backpropagation runs through the software model's surrogate gradients at the
chip's activity (the substitution of hxtorch's in-the-loop mode). On an ideal substrate the
measured values equal the software ones, so the gradient is exactly the software gradient.

A run continues from a state as the models do: ``state`` is the chip's
:attr:`~spikegrad.hardware.substrate.Observables.state` of the previous chunk (a
:class:`~spikegrad.functional.NetworkState`); the chip's circuits and the software layers both
start from it, and the output's ``state`` is the chip's at the end of the chunk (no gradient flows
through it: the chip's values are measured).

Where the surrogate derivative is evaluated (``surrogate_at``):

* ``"software"`` (default): at the software membrane, driven by the chip's input spikes; the
  hidden layers run on the fast kernels.
* ``"membrane"``: at the chip's recorded membrane. Every step, the software membrane is replaced by
  the sampled one (before reset, reconstructed as ``v + s v_th`` from the post-reset sample), so
  the surrogate sees the chip's distance to threshold, as when CADC samples are injected on
  BrainScaleS-2. This runs a time loop in PyTorch (slower) and needs the substrate to record the
  hidden membranes.

:class:`InTheLoop` wraps a model so that the training loop of :mod:`spikegrad.training` needs no
change: in training mode (with gradients enabled) it returns the substituted output; otherwise
(validation, test) the substrate's observables alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import checks
from ..functional import LIFState, NetworkState
from ..models import SpikingOutput
from .substrate import DelayedInput, Observables, Substrate, layer_specs

__all__ = ["InTheLoop", "in_the_loop", "substitute", "TRAIN_ON", "SURROGATE_AT"]

TRAIN_ON = ("substrate", "software")
SURROGATE_AT = ("software", "membrane")


def substitute(sw: Tensor, hw: Tensor) -> Tensor:
    """``sw + (hw - sw).detach()``: the value of ``hw`` with the gradient of ``sw`` (same shapes)."""
    return sw + (hw - sw).detach()


def _lif_at_membrane(neuron: nn.Module, current: Tensor, s_hw: Tensor, v_hw: Tensor,
                     state: LIFState | None = None) -> tuple[Tensor, Tensor]:
    """A LIF layer whose membrane is replaced every step by the recorded one (``current``, ``s_hw``,
    ``v_hw``: ``[T, B, N]``; ``v_hw`` after reset), starting from ``state`` (a ``LIFState`` or None:
    rest). Returns ``(spikes, v)``, both ``[T, B, N]``."""
    p = neuron.params(current.dtype)
    i = v = torch.zeros_like(current[0])
    if state is not None:
        i, v = state.i, state.v
    spikes, vs = [], []
    for t in range(current.shape[0]):
        i = p.decay_syn * i + current[t]
        v = p.decay_mem * v + i
        v_pre = v_hw[t] + s_hw[t] * p.v_th if p.reset == "subtract" else v_hw[t]
        v = substitute(v, v_pre)
        s = substitute(neuron.surrogate(v - p.v_th), s_hw[t])
        if p.reset == "subtract":
            v = v - (s.detach() if p.detach_reset else s) * p.v_th
        spikes.append(s)
        vs.append(v)
    return torch.stack(spikes), torch.stack(vs)


def _recurrent_at_spikes(neuron: nn.Module, current: Tensor, s_hw: Tensor, record_v: bool,
                         state: LIFState | None = None) -> tuple[Tensor, Tensor | None]:
    """A recurrent LIF layer fed, at every step, the recorded spikes of its previous step
    (substituted: the chip's values with the software gradient), starting from ``state`` (a
    ``LIFState`` or None). ``current``, ``s_hw``: ``[T, B, N]``.
    Returns ``(spikes [T, B, N], v [T, B, N] or None)``."""
    spikes, vs = [], []
    for t in range(current.shape[0]):
        s_sw, state = neuron.step(current[t], state)
        s = substitute(s_sw, s_hw[t])
        state = state._replace(z=s)
        spikes.append(s)
        if record_v:
            vs.append(state.v)
    return torch.stack(spikes), (torch.stack(vs) if record_v else None)


def _check_membrane_mode(model: nn.Module) -> None:
    for k, neuron in enumerate(model.neurons[:-1]):
        if getattr(neuron, "w_rec", None) is not None:
            raise ValueError(f"surrogate_at='membrane': layer {k} is recurrent, which runs with the surrogate at the "
                             "software membrane only; use surrogate_at='software'")
        if neuron.reset not in ("subtract", "none") or neuron.refractory > 0:
            raise ValueError(f"surrogate_at='membrane': layer {k} uses reset={neuron.reset!r}, refractory="
                             f"{neuron.refractory}; the pre-reset membrane can only be reconstructed for reset "
                             "'subtract' or 'none' without a refractory period (or use surrogate_at='software')")


def in_the_loop(model: nn.Module, x_seq: Tensor, obs: Observables, surrogate_at: str = "software",
                state: NetworkState | None = None) -> SpikingOutput:
    """The software :class:`~spikegrad.models.SpikingMLP` ``model`` evaluated at the observables ``obs``.

    Each layer gets the recorded spikes of the layer below as its input; its own output (and the
    membrane, when ``model.record_v``) is replaced by the recorded value through :func:`substitute`.

    Args:
        model: the software model (its weights are the ones the substrate ran).
        x_seq: the input ``[T, B, ...]`` the substrate ran.
        obs: what the substrate recorded (:class:`~spikegrad.hardware.substrate.Observables`).
        surrogate_at: ``"software"`` or ``"membrane"`` (see the module docstring; ``"membrane"``
            needs ``obs.v`` for every hidden layer).
        state: the state the substrate started ``obs`` from (None: rest); the software layers
            start from it too.
    Returns:
        :class:`~spikegrad.models.SpikingOutput` with the substrate's values and the software
        model's gradients; its ``state`` is ``obs.state``, the chip's at the end of the run.
    """
    checks.one_of("in_the_loop", "surrogate_at", surrogate_at, SURROGATE_AT)
    states = NetworkState.of("in_the_loop", state, len(model.neurons))
    h = x_seq.flatten(2)  # [T, B, N_in]
    spikes, vs = [], []
    last = len(model.layers) - 1
    readout = None
    for k, (layer, neuron, st) in enumerate(zip(model.layers, model.neurons, states)):
        if isinstance(st, DelayedInput):  # the software model has no synaptic delay: its circuits' state
            st = st.neuron
        current = layer(h)
        if k < last and surrogate_at == "membrane":
            if k >= len(obs.v) or obs.v[k] is None:
                raise ValueError("surrogate_at='membrane' needs the hidden membranes; run the substrate with "
                                 "record_v=True")
            h, v = _lif_at_membrane(neuron, current, obs.spikes[k], obs.v[k], st)
            spikes.append(h)
            if model.record_v:
                vs.append(substitute(v, obs.v[k]))
        elif k < last and getattr(neuron, "w_rec", None) is not None:
            h, v = _recurrent_at_spikes(neuron, current, obs.spikes[k], model.record_v, st)
            spikes.append(h)
            if model.record_v:
                vs.append(substitute(v, obs.v[k]) if k < len(obs.v) and obs.v[k] is not None else v)
        elif k < last:
            if model.record_v:
                s_sw, recorded = neuron(current, st, record=True)
                v_hw = obs.v[k] if k < len(obs.v) and obs.v[k] is not None else recorded.v
                vs.append(substitute(recorded.v, v_hw))
            else:
                s_sw, _ = neuron(current, st)
            h = substitute(s_sw, obs.spikes[k])
            spikes.append(h)
        else:
            r_sw, _ = neuron(current, st)
            readout = substitute(r_sw, obs.readout)
    return SpikingOutput(readout, tuple(spikes), tuple(vs), obs.state)


class InTheLoop(nn.Module):
    """A software model trained in the loop with a substrate (or in software and tested on it).

    Args:
        model: a :class:`~spikegrad.models.SpikingMLP` (the substrate's :meth:`check` and
            :func:`~spikegrad.hardware.substrate.layer_specs` say what it must look like).
        substrate: the :class:`~spikegrad.hardware.substrate.Substrate` to run on.
        train_on: ``"substrate"``: every forward pass runs on the substrate; in training mode the
            gradient comes from the software model at the recorded observables
            (:func:`in_the_loop`). ``"software"``: the wrapper is transparent (train and evaluate in
            software, e.g. to measure weight transfer afterwards with
            :func:`~spikegrad.hardware.analysis.substrate_analysis`).
        surrogate_at: where the surrogate derivative is evaluated in the loop: ``"software"`` (the
            software membrane, fast kernels) or ``"membrane"`` (the chip's recorded membrane).
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> SpikingOutput(readout [T, B, C], spikes, v,
    state)``; ``state`` is the chip's (:attr:`~spikegrad.hardware.substrate.Observables.state`), or the
    software model's with ``train_on="software"``: pass it back to continue the run.
    """

    def __init__(self, model: nn.Module, substrate: Substrate, train_on: str = "substrate",
                 surrogate_at: str = "software"):
        super().__init__()
        checks.one_of("InTheLoop", "train_on", train_on, TRAIN_ON)
        checks.one_of("InTheLoop", "surrogate_at", surrogate_at, SURROGATE_AT)
        if not isinstance(substrate, Substrate):
            raise TypeError(f"InTheLoop: substrate must be a spikegrad.hardware.Substrate, got "
                            f"{type(substrate).__name__}")
        substrate.check(layer_specs(model))  # a model the substrate cannot run fails here, not mid-training
        if surrogate_at == "membrane":
            _check_membrane_mode(model)
        self.model = model
        self.substrate = substrate
        self.train_on = train_on
        self.surrogate_at = surrogate_at

    def observe(self, x_seq: Tensor, record_v: bool = False, state: NetworkState | None = None) -> Observables:
        """Run ``x_seq [T, B, ...]`` on the substrate with the model's current weights (no autograd),
        from ``state`` (None: rest); hidden membranes are recorded if ``record_v`` or the model records them."""
        return self.substrate.run(x_seq, layer_specs(self.model), record_v=record_v or self.model.record_v,
                                  state=state)

    def forward(self, x_seq: Tensor, state: NetworkState | None = None) -> SpikingOutput:
        if self.train_on == "software":
            return self.model(x_seq, state)
        if x_seq.dim() < 3:
            raise ValueError(f"InTheLoop: input must be [T, B, features...], got shape {tuple(x_seq.shape)}")
        train = self.training and torch.is_grad_enabled()
        obs = self.observe(x_seq, record_v=train and self.surrogate_at == "membrane", state=state)
        if train:
            return in_the_loop(self.model, x_seq, obs, self.surrogate_at, state)
        return SpikingOutput(obs.readout, obs.spikes, tuple(v for v in obs.v if v is not None), obs.state)

    def extra_repr(self) -> str:
        return f"train_on={self.train_on!r}, surrogate_at={self.surrogate_at!r}"
