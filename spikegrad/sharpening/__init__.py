"""Whetstone sharpening (Severa, Vineyard, Dellana, Verzi & Aimone, Nat. Mach. Intell. 2019).

Train a conventional network whose activations are bounded ramps, sharpen them into binary steps
during training, and export the result as one-step binary threshold neurons.

* :mod:`.activations`: :class:`SharpBReLU`, :class:`SharpSigmoid` (Whetstone's ``Spiking_BRelu`` and
  ``Spiking_Sigmoid``; sharpness ``s`` in [0, 1] as a 0-dim buffer; exact step at ``s = 1``; exact or
  straight-through gradient), :func:`sharpen_act`, :func:`sharpenable_layers`.
* :mod:`.schedules`: :class:`SimpleSharpener`, :class:`ScheduledSharpener`,
  :class:`AdaptiveSharpener` (``bottom_up`` or ``uniform``), called by the training loop, which
  stops once every layer is fully sharp (``stop_training``).
* :mod:`.annealing`: :class:`SurrogateAnnealer` drives the surrogate slopes of spiking models with
  the same schedules.
* :mod:`.models`: :class:`SoftmaxDecoder` with :func:`random_key` (Whetstone's), :class:`NHotDecoder`,
  :class:`WhetstoneMLP`, :class:`WhetstoneConvNet`.
* :mod:`.export`: :func:`export_binary` (BatchNorm folded into weights and thresholds),
  :func:`compare` / :func:`agreement` with the torch model.
* :mod:`.plots`: TensorBoard scalars and activation figures; :mod:`.analysis`: the ``train.py`` hook.

Typical use::

    model = WhetstoneMLP([784, 256, 64], n_classes=10, n_hot=10)   # softmax decoder, random key
    sharpener = SimpleSharpener(model, start_epoch=10, duration=3, mode="bottom_up")
    fit(model, ..., loss_fn=CrossEntropy(), sharpener=sharpener)   # stops once sharpener.done
    net = export_binary(model)
    assert agreement(model, net, test_loader) == 1.0
"""

from .activations import (ACTIVATIONS, GRADIENTS, SharpBReLU, Sharpenable, SharpSigmoid, check_sharpness,
                          make_activation, sharpen_act, sharpenable_layers)
from .analysis import whetstone_analysis
from .export import BinaryNet, ThresholdLayer, agreement, compare, export_binary, fold_threshold
from .models import DECODERS, ImageInput, NHotDecoder, SoftmaxDecoder, WhetstoneConvNet, WhetstoneMLP, random_key
from .plots import activation_figure, log_activation_figure, log_sharpness
from .annealing import SurrogateAnnealer, SurrogateSlope, surrogate_slopes
from .schedules import MODES, AdaptiveSharpener, ScheduledSharpener, Sharpener, SimpleSharpener

__all__ = [
    "ACTIVATIONS", "DECODERS", "GRADIENTS", "MODES", "AdaptiveSharpener", "BinaryNet", "ImageInput", "NHotDecoder",
    "ScheduledSharpener", "SharpBReLU", "SharpSigmoid", "Sharpenable", "Sharpener", "SimpleSharpener",
    "SoftmaxDecoder", "SurrogateAnnealer", "SurrogateSlope", "ThresholdLayer", "WhetstoneConvNet", "WhetstoneMLP",
    "activation_figure", "agreement", "check_sharpness", "compare", "export_binary", "fold_threshold",
    "log_activation_figure", "log_sharpness", "make_activation", "random_key", "sharpen_act", "sharpenable_layers",
    "surrogate_slopes", "whetstone_analysis",
]
