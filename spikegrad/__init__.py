"""spikegrad: spiking neural networks in PyTorch.

Surrogate-gradient training (as on BrainScaleS-2), Whetstone sharpening and rate-based
ANN-to-SNN conversion, on one functional core. What a model builder needs is importable from here::

    import spikegrad as sg
    layer = sg.LIF(tau_mem=20.0, tau_syn=5.0, surrogate="atan")
    spikes, state = layer(x_seq)            # x_seq [T, B, N] -> spikes [T, B, N]

Layers import one way: ``checks``, ``surrogates`` <- ``functional`` <- ``kernels`` <- ``neurons``
<- ``models`` <- ``training``; method packages (``sharpening``, ``conversion``) sit on top.
"""

from . import functional
from .encoding import (CurrentEncoder, LatencyEncoder, RateEncoder, current_encode, latency_encode, poisson_encode,
                       rate_encode)
from .functional import ALIFState, LIFState, LIState, NetworkState, detach_state, last, scan
from .kernels.events import SpikeTimes
from .models import SeqWise, SpikingConvNet, SpikingMLP, SpikingOutput, spikes_per_input
from .neurons import ALIF, IF, LI, LIF
from .surrogates import SURROGATES, Surrogate, make_surrogate, register_surrogate

__version__ = "0.2.0"

__all__ = [
    "__version__", "functional",
    "LIF", "IF", "ALIF", "LI", "LIFState", "ALIFState", "LIState", "NetworkState", "scan", "last", "detach_state",
    "Surrogate", "SURROGATES", "make_surrogate", "register_surrogate",
    "LatencyEncoder", "RateEncoder", "CurrentEncoder", "latency_encode", "rate_encode", "poisson_encode",
    "current_encode", "SpikeTimes",
    "SeqWise", "SpikingMLP", "SpikingConvNet", "SpikingOutput", "spikes_per_input",
]
