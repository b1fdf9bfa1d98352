"""Export a fully sharpened Whetstone network as one-step binary threshold neurons.

At sharpness 1 a block ``Linear/Conv2d (W, b) -> BatchNorm -> act`` computes, in eval mode,

    y = H(a (W x + b) + c - m),   a = gamma / sqrt(running_var + eps),   c = beta - a * running_mean

(``H`` strict: 1 iff the argument is > 0; ``m`` is the activation's step position, 0.5 for the
bounded ReLU and 0 for the sigmoid). Folding everything into the weights,

    W' = a W (per output unit),   b' = a b + c - m,   y = H(W' x + b'),

holds for either sign of ``a`` (a negative BN scale flips the inequality on ``W x``, and ``W'``
carries that sign); ``a = 0`` gives a constant unit. Each unit becomes a threshold neuron that
receives ``W' x`` and spikes once iff it exceeds its threshold ``theta = -b'``: one step of
:func:`spikegrad.neurons.lif_step` with no leak memory and no reset (``decay = 0``,
``v_th = theta``), so ``v - v_th = W' x + b'`` exactly. Max-pooling of spikes is an OR. Hidden
units communicate one binary spike in one time step; the first layer receives the analog pixels
as input currents.

The folded network differs from the torch model only by rounding: it is built, and compared with
the model, in float64 by default, where no unit of MNIST-sized networks lands within rounding
error of its threshold; in float32 such ties can flip a few units.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..neurons import LIFParams, lif_step
from ..surrogates import heaviside
from .activations import Sharpenable, sharpenable_layers
from .models import ImageInput, NHotDecoder, SoftmaxDecoder

__all__ = ["ThresholdLayer", "BinaryNet", "fold_threshold", "export_binary", "compare", "agreement"]

_KEEP = (ImageInput, nn.Flatten, nn.MaxPool2d, nn.Unflatten)  # copied as they are
_SKIP = (nn.Dropout, nn.Identity)                             # identities in eval mode


class ThresholdLayer(nn.Module):
    """Binary threshold neurons: ``spikes = H(W' x - theta)`` in one step (strictly greater).

    Args:
        weight: ``[N, N_in]`` (linear) or ``[C_out, C_in, kh, kw]`` (conv), folded weights.
        threshold: ``[N]`` / ``[C_out]`` thresholds ``theta = -b'`` (input units).
        conv: keyword arguments of ``F.conv2d`` (stride, padding, dilation, groups), None for linear.
    Shapes: ``[B, N_in] -> [B, N]`` or ``[B, C_in, H, W] -> [B, C_out, H', W']``, spikes in {0, 1}.
    """

    def __init__(self, weight: Tensor, threshold: Tensor, conv: dict | None = None):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("threshold", threshold.detach().clone())
        self.conv = None if conv is None else dict(conv)

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is None:
            current = F.linear(x, self.weight)
            v_th = self.threshold
        else:
            current = F.conv2d(x, self.weight, **self.conv)
            v_th = self.threshold[:, None, None]  # [C, 1, 1]
        params = LIFParams(decay_mem=0.0, decay_syn=0.0, v_th=v_th, reset="none")
        spikes, _ = lif_step(current, None, params, heaviside)
        return spikes

    def extra_repr(self) -> str:
        kind = "linear" if self.conv is None else f"conv2d {self.conv}"
        return f"{kind}, weight={list(self.weight.shape)}"


class BinaryNet(nn.Module):
    """The exported network: ``layers`` (threshold layers, pooling, reshapes) and the decoder.

    ``forward(x) -> scores [B, n_classes]``; :meth:`run` also returns every threshold layer's spikes.
    """

    def __init__(self, layers: Iterable[nn.Module], decoder: SoftmaxDecoder | NHotDecoder):
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.decoder = decoder

    def run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``x [B, ...] -> (scores [B, n_classes], [spikes [B, ...] per threshold layer])``."""
        spikes = []
        for m in self.layers:
            x = m(x)
            if isinstance(m, ThresholdLayer):
                spikes.append(x)
        return self.decoder(x), spikes

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)[0]


@torch.no_grad()
def fold_threshold(layer: nn.Linear | nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm | None,
                   dtype: torch.dtype = torch.float64, center: float = 0.5) -> tuple[Tensor, Tensor]:
    """Fold ``layer -> bn -> step at center`` into ``(W', b')`` with ``y = H(W' x + b')`` (eval-mode BN).

    ``center`` is the activation's step position: 0.5 for :class:`SharpBReLU`, 0 for :class:`SharpSigmoid`.

    Returns:
        ``W'`` of the layer weight's shape and ``b' [N]``, in ``dtype``.
    """
    w = layer.weight.to(dtype)
    n = w.shape[0]
    b = layer.bias.to(dtype) if layer.bias is not None else w.new_zeros(n)
    if bn is None:
        a, c = w.new_ones(n), w.new_zeros(n)
    else:
        if bn.running_mean is None:
            raise ValueError("export_binary: BatchNorm without running statistics (track_running_stats=False) "
                             "cannot be folded into thresholds")
        a = (bn.weight.to(dtype) if bn.affine else w.new_ones(n)) / torch.sqrt(bn.running_var.to(dtype) + bn.eps)
        c = (bn.bias.to(dtype) if bn.affine else w.new_zeros(n)) - a * bn.running_mean.to(dtype)
    w_folded = a.reshape(n, *([1] * (w.dim() - 1))) * w
    return w_folded, a * b + c - center


def _conv_kwargs(conv: nn.Conv2d) -> dict:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("export_binary: only zero padding given as numbers is supported, got "
                         f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
    return {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}


@torch.no_grad()
def export_binary(model: nn.Module, dtype: torch.dtype = torch.float64, force: bool = False) -> BinaryNet:
    """Convert a fully sharpened Whetstone model into a :class:`BinaryNet` of threshold neurons.

    The model must have ``layers`` (an ``nn.Sequential`` of ``Linear/Conv2d [-> BatchNorm] ->
    Sharpenable`` blocks, ``MaxPool2d``, ``Flatten``, ``ImageInput``, ``Dropout``) and ``decoder``
    (a :class:`SoftmaxDecoder` or :class:`NHotDecoder`), as the models of :mod:`spikegrad.sharpening.models` have.

    Args:
        model: the sharpened model (its BatchNorm running statistics are used).
        dtype: dtype of the exported weights and thresholds.
        force: export even if some activation is not fully sharp (the binary net then matches the
            model with every sharpness set to 1, not the model as it is).
    Returns:
        the :class:`BinaryNet` (on the model's device).
    Raises:
        ValueError: a layer is not fully sharp (without ``force``) or the structure is not supported.
    """
    layers, decoder = getattr(model, "layers", None), getattr(model, "decoder", None)
    if not isinstance(layers, nn.Sequential) or not isinstance(decoder, (SoftmaxDecoder, NHotDecoder)):
        raise ValueError(f"export_binary: {type(model).__name__} needs .layers (nn.Sequential) and .decoder "
                         "(SoftmaxDecoder or NHotDecoder), as WhetstoneMLP and WhetstoneConvNet have")
    soft = [(k, a.get_sharpness()) for k, a in enumerate(sharpenable_layers(model)) if not a.fully_sharp]
    if soft and not force:
        raise ValueError(f"export_binary: activations {[k for k, _ in soft]} have sharpness "
                         f"{[round(s, 4) for _, s in soft]} < 1; finish sharpening first (more epochs, or an earlier "
                         "start), or pass force=True to export the model's fully sharp limit")
    mods = list(layers)
    out: list[nn.Module] = []
    k = 0
    while k < len(mods):
        m = mods[k]
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            bn = mods[k + 1] if k + 1 < len(mods) and isinstance(mods[k + 1], nn.modules.batchnorm._BatchNorm) else None
            j = k + 1 + (bn is not None)
            if j >= len(mods) or not isinstance(mods[j], Sharpenable):
                raise ValueError(f"export_binary: layer {k} ({type(m).__name__}) must be followed by an optional "
                                 "BatchNorm and a Sharpenable activation")
            w, b = fold_threshold(m, bn, dtype, mods[j].center)
            out.append(ThresholdLayer(w, -b, _conv_kwargs(m) if isinstance(m, nn.Conv2d) else None))
            k = j + 1
        elif isinstance(m, _KEEP):
            out.append(copy.deepcopy(m))
            k += 1
        elif isinstance(m, _SKIP):
            k += 1
        else:
            raise ValueError(f"export_binary: layer {k} ({type(m).__name__}) is not supported; supported are "
                             "Linear/Conv2d [-> BatchNorm] -> Sharpenable blocks, MaxPool2d, Flatten, ImageInput, "
                             "Dropout")
    if not out or not isinstance(out[-1], ThresholdLayer):
        raise ValueError("export_binary: the last layer must be a sharpenable block (the binary output code)")
    return BinaryNet(out, copy.deepcopy(decoder))


@torch.no_grad()
def compare(model: nn.Module, net: BinaryNet, loader: Iterable, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """Run the torch model and the exported net on ``loader`` and compare their predictions.

    Both run in ``dtype`` (the model on an eval-mode copy; ``model`` itself is untouched).

    Args:
        loader: yields ``(x [B, ...], y [B])``.
    Returns:
        ``agreement`` (fraction of inputs with the same predicted class), ``accuracy_model``,
        ``accuracy_binary``, ``fraction_active`` (mean over inputs of the fraction of hidden units,
        i.e. all threshold layers but the output code, that spike; nan without hidden layers) and
        ``samples``.
    """
    device = torch.device(device)
    ref = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    net = copy.deepcopy(net).to(device=device, dtype=dtype).eval()
    n = same = right_model = right_net = 0
    active = 0.0
    for x, y in loader:
        x, y = x.to(device=device, dtype=dtype), y.to(device)
        p_model = ref(x).argmax(-1)
        scores, spikes = net.run(x)
        p_net = scores.argmax(-1)
        n += y.shape[0]
        same += int((p_model == p_net).sum())
        right_model += int((p_model == y).sum())
        right_net += int((p_net == y).sum())
        hidden = spikes[:-1]
        if hidden:
            units = sum(s[0].numel() for s in hidden)
            active += float(sum(s.flatten(1).sum(1) for s in hidden).sum()) / units
    if n == 0:
        raise ValueError("compare: the data loader yielded no samples")
    return {"agreement": same / n, "accuracy_model": right_model / n, "accuracy_binary": right_net / n,
            "fraction_active": active / n if len(spikes) > 1 else float("nan"), "samples": n}


def agreement(model: nn.Module, net: BinaryNet, loader: Iterable, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float64) -> float:
    """Fraction of inputs on which ``net`` predicts the same class as ``model`` (see :func:`compare`)."""
    return compare(model, net, loader, device, dtype)["agreement"]
