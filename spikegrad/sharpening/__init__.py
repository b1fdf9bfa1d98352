"""Whetstone sharpening (Severa, Vineyard, Dellana, Verzi & Aimone, Nat. Mach. Intell. 2019).

Train a conventional network whose activations are bounded ramps, sharpen them into binary steps
during training, and export the result as one-step binary threshold neurons.

* :mod:`.activations`: :class:`SharpBReLU`, :class:`SharpSigmoid` (sharpness ``s`` in [0, 1] as a
  0-dim buffer; exact step ``1[x > 0.5]`` at ``s = 1``), :func:`sharpen_act`, :func:`sharpenable_layers`.
* :mod:`.schedules`: :class:`SimpleSharpener`, :class:`ScheduledSharpener`,
  :class:`AdaptiveSharpener` (``bottom_up`` or ``uniform``), called by the training loop.
* :mod:`.annealing`: :class:`SurrogateAnnealer` drives the surrogate slopes of spiking models with
  the same schedules.
* :mod:`.models`: :class:`NHotDecoder`, :class:`WhetstoneMLP`, :class:`WhetstoneConvNet`.
* :mod:`.export`: :func:`export_binary` (BatchNorm folded into weights and thresholds),
  :func:`compare` / :func:`agreement` with the torch model.
* :mod:`.plots`: TensorBoard scalars and activation figures; :mod:`.analysis`: the ``train.py`` hook.

Typical use::

    model = WhetstoneMLP([784, 256, 64], n_classes=10, n_hot=10)
    sharpener = SimpleSharpener(model, start_epoch=10, duration=3, mode="bottom_up")
    fit(model, ..., loss_fn=CrossEntropy(), sharpener=sharpener)   # on_batch_end / on_epoch_end
    net = export_binary(model)                                      # after sharpener.done
    assert agreement(model, net, test_loader) == 1.0
"""

from .activations import (ACTIVATIONS, SharpBReLU, Sharpenable, SharpSigmoid, check_sharpness, make_activation,
                          sharpen_act, sharpenable_layers)
from .analysis import whetstone_analysis
from .export import BinaryNet, ThresholdLayer, agreement, compare, export_binary, fold_threshold
from .models import ImageInput, NHotDecoder, WhetstoneConvNet, WhetstoneMLP
from .plots import activation_figure, log_activation_figure, log_sharpness
from .annealing import SurrogateAnnealer, SurrogateSlope, surrogate_slopes
from .schedules import MODES, AdaptiveSharpener, ScheduledSharpener, Sharpener, SimpleSharpener

__all__ = [
    "ACTIVATIONS", "MODES", "AdaptiveSharpener", "BinaryNet", "ImageInput", "NHotDecoder", "ScheduledSharpener",
    "SharpBReLU", "SharpSigmoid", "Sharpenable", "Sharpener", "SimpleSharpener", "SurrogateAnnealer",
    "SurrogateSlope", "ThresholdLayer", "WhetstoneConvNet", "WhetstoneMLP", "activation_figure", "agreement",
    "check_sharpness", "compare", "export_binary", "fold_threshold", "log_activation_figure", "log_sharpness",
    "make_activation", "sharpen_act", "sharpenable_layers", "surrogate_slopes", "whetstone_analysis",
]
