"""Rate-based ANN-to-SNN conversion (Rueckauer, Lungu, Hu, Pfeiffer & Liu 2017).

Pipeline, all under ``torch.no_grad()`` and on a deep copy of the ANN::

    calib = calibrate(ann, train_images)          # trace (torch.fx), fold batch-norm, record activations
    program = normalize(calib, percentile=99.9)   # data-based weight / bias normalisation
    snn = convert(program, reset="subtract")      # IF neurons, gated max-pool, membrane readout
    result = simulate(snn, test_loader, T=200, ann=ann)
    result.accuracy_by_step, result.synops_by_step, result.steps_within(0.005)

or ``snn = ann_to_snn(ann, train_images)`` for the first three steps. Supported operations:
:data:`SUPPORTED`; anything else raises :class:`ConversionError` naming the layer, its position in
the traced graph and what to replace it with.

Modules: :mod:`.graph` (tracing, batch-norm folding), :mod:`.normalization` (calibration,
percentiles, scale factors), :mod:`.snn` (the spiking network, simulation, operation counts),
:mod:`.analysis` (the ``train.py`` hook), :mod:`.lenet` (the LeNet-style ANN of the experiments).
"""

from __future__ import annotations

from torch import nn

from .analysis import conversion_analysis
from .graph import SUPPORTED, ConversionError, Program, fold_batchnorm, forward_ann, run_ann, trace
from .lenet import LeNet
from .normalization import Calibration, calibrate, normalize, percentile
from .snn import (InputMode, Readout, ResetMode, RunResult, SimulationResult, SNNState, SpikingNetwork, ann_macs,
                  evaluate_ann, gated_max_pool2d, if_step, simulate, spike_max_pool2d)

__all__ = [
    "SUPPORTED", "ConversionError", "Program", "Calibration", "SpikingNetwork", "SNNState", "RunResult",
    "SimulationResult", "LeNet", "trace", "fold_batchnorm", "run_ann", "forward_ann", "calibrate", "normalize",
    "percentile", "convert", "ann_to_snn", "conversion_analysis", "simulate", "evaluate_ann", "ann_macs",
    "gated_max_pool2d", "spike_max_pool2d", "if_step",
]


def convert(program: Program, reset: ResetMode = "subtract", input_mode: InputMode = "analog",
            readout: Readout = "membrane", **options) -> SpikingNetwork:
    """The :class:`SpikingNetwork` of a normalised program (arguments as there).

    Args:
        program: from :func:`normalize`.
        reset: "subtract" (default) | "zero". input_mode: "analog" (default) | "poisson".
        readout: "membrane" (default) | "spiking_softmax" | "softmax_clock".
        options: further :class:`SpikingNetwork` arguments (``maxpool_gate``, ``softmax_clock_rate``,
            ``backend``).
    """
    if not program.lambdas:
        raise ValueError("convert: the program is not normalised; pass normalize(calibrate(model, data))")
    return SpikingNetwork(program, reset=reset, input_mode=input_mode, readout=readout, **options)


def ann_to_snn(model: nn.Module, data, *, percentile: float = 99.9, channelwise: bool = False,
               reset: ResetMode = "subtract", input_mode: InputMode = "analog", readout: Readout = "membrane",
               max_inputs: int | None = None, max_values: int = 2**22, device=None, **options) -> SpikingNetwork:
    """``convert(normalize(calibrate(model, data, ...), ...), ...)`` in one call (arguments as there)."""
    calib = calibrate(model, data, max_inputs=max_inputs, max_values=max_values, device=device)
    return convert(normalize(calib, percentile, channelwise), reset, input_mode, readout, **options)
