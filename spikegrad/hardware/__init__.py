"""Hardware in the loop: spiking networks on a (simulated) analog substrate.

* :mod:`~spikegrad.hardware.substrate`: the :class:`Substrate` interface and
  :class:`AnalogSubstrate`, a simulated analog chip (fixed-pattern mismatch, 6-bit weights,
  temporal noise, 8-bit membrane readout);
* :mod:`~spikegrad.hardware.loop`: in-the-loop training (:class:`InTheLoop`);
* :mod:`~spikegrad.hardware.analysis`: weight transfer and chip-to-chip transfer after training
  (``analysis=substrate``), the epoch-time comparison, and the accuracy-versus-mismatch figure of
  a sweep.
"""

from .loop import SURROGATE_AT, TRAIN_ON, InTheLoop, in_the_loop, substitute
from .substrate import (SPREAD_NAMES, AnalogSubstrate, DelayedInput, LayerSpec, NeuronConstants, Observables, Substrate,
                        cadc_read, layer_specs, quantize_weights)

__all__ = ["Substrate", "AnalogSubstrate", "LayerSpec", "NeuronConstants", "Observables", "DelayedInput", "layer_specs",
           "quantize_weights", "cadc_read", "SPREAD_NAMES", "InTheLoop", "in_the_loop", "substitute", "TRAIN_ON",
           "SURROGATE_AT"]
