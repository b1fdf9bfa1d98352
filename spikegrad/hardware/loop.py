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

:class:`InTheLoop` wraps a model so that the training loop of :mod:`spikegrad.training` needs no
change: in training mode (with gradients enabled) it returns the substituted output; otherwise
(validation, test) the substrate's observables alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models import SpikingOutput
from .substrate import Observables, Substrate, layer_specs

__all__ = ["InTheLoop", "in_the_loop", "substitute", "TRAIN_ON"]

TRAIN_ON = ("substrate", "software")


def substitute(sw: Tensor, hw: Tensor) -> Tensor:
    """``sw + (hw - sw).detach()``: the value of ``hw`` with the gradient of ``sw`` (same shapes)."""
    return sw + (hw - sw).detach()


def in_the_loop(model: nn.Module, x_seq: Tensor, obs: Observables) -> SpikingOutput:
    """The software :class:`~spikegrad.models.SpikingMLP` ``model`` evaluated at the observables ``obs``.

    Each layer gets the recorded spikes of the layer below as its input; its own output (and the
    membrane, when ``model.record_v``) is replaced by the recorded value through :func:`substitute`.

    Args:
        model: the software model (its weights are the ones the substrate ran).
        x_seq: the input ``[T, B, ...]`` the substrate ran.
        obs: what the substrate recorded (:class:`~spikegrad.hardware.substrate.Observables`).
    Returns:
        :class:`~spikegrad.models.SpikingOutput` with the substrate's values and the software
        model's gradients.
    """
    h = x_seq.flatten(2)  # [T, B, N_in]
    spikes, vs = [], []
    last = len(model.layers) - 1
    readout = None
    for k, (layer, neuron) in enumerate(zip(model.layers, model.neurons)):
        current = layer(h)
        if k < last:
            if model.record_v:
                s_sw, states = neuron(current, record=True)
                v_hw = obs.v[k] if k < len(obs.v) and obs.v[k] is not None else states.v
                vs.append(substitute(states.v, v_hw))
            else:
                s_sw, _ = neuron(current)
            h = substitute(s_sw, obs.spikes[k])
            spikes.append(h)
        else:
            r_sw, _ = neuron(current)
            readout = substitute(r_sw, obs.readout)
    return SpikingOutput(readout, tuple(spikes), tuple(vs))


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
    Shapes: ``forward(x_seq [T, B, ...]) -> SpikingOutput(readout [T, B, C], spikes, v)``.
    """

    def __init__(self, model: nn.Module, substrate: Substrate, train_on: str = "substrate"):
        super().__init__()
        if train_on not in TRAIN_ON:
            raise ValueError(f"InTheLoop: train_on must be one of {TRAIN_ON}, got {train_on!r}")
        if not isinstance(substrate, Substrate):
            raise TypeError(f"InTheLoop: substrate must be a spikegrad.hardware.Substrate, got "
                            f"{type(substrate).__name__}")
        substrate.check(layer_specs(model))  # a model the substrate cannot run fails here, not mid-training
        self.model = model
        self.substrate = substrate
        self.train_on = train_on

    def observe(self, x_seq: Tensor) -> Observables:
        """Run ``x_seq [T, B, ...]`` on the substrate with the model's current weights (no autograd)."""
        return self.substrate.run(x_seq, layer_specs(self.model), record_v=self.model.record_v)

    def forward(self, x_seq: Tensor) -> SpikingOutput:
        if self.train_on == "software":
            return self.model(x_seq)
        if x_seq.dim() < 3:
            raise ValueError(f"InTheLoop: input must be [T, B, features...], got shape {tuple(x_seq.shape)}")
        obs = self.observe(x_seq)
        if self.training and torch.is_grad_enabled():
            return in_the_loop(self.model, x_seq, obs)
        return SpikingOutput(obs.readout, obs.spikes, tuple(v for v in obs.v if v is not None))

    def extra_repr(self) -> str:
        return f"train_on={self.train_on!r}"
