"""Calibration (activation statistics on data) and data-based weight normalisation.

Rueckauer et al. (2017), Sec. 2.3: the SNN represents an ANN activation ``a`` of layer ``l`` by a
firing rate ``a / lambda_l`` (spikes/step, at most 1), where ``lambda_l`` is the ``p``-th percentile
of the layer's activations on calibration data (``p = 100``: the maximum, "max-norm" of Diehl et al.
2015; ``p = 99.9`` by default: robust to outliers, trading a few saturated neurons for higher rates
everywhere else). With thresholds at 1, weights and biases become

    W_l <- W_l * lambda_{l-1} / lambda_l          b_l <- b_l / lambda_l

(``lambda_0 = 1`` for the input). The channel-wise variant uses one ``lambda`` per output channel
(``[C]``); the scale of the input channel then enters ``W[o, i]`` as ``lambda_in[i] / lambda_out[o]``.
In a graph the rule generalises to: every value has a scale map; Conv2d / Linear / batch-norm nodes
absorb the scales of their input and of the neuron layer they feed; a residual addition or a
neuron whose input scale differs from its own gets a fixed per-input gain.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .graph import Node, Program, eval_call, run_ann, trace

__all__ = ["Calibration", "calibrate", "normalize", "percentile", "scale_factors"]


@dataclass
class Calibration:
    """Activation statistics of a traced ANN, collected by :func:`calibrate`.

    Attributes:
        program: the traced program (batch-norm folded), parameters in ANN units.
        samples: node index -> sampled activations ``[C, m]`` (C channels on dim 1 of the value:
            conv channels, or the features of a ``[B, N]`` value); exact when all values fit.
        maxima: node index -> exact per-channel maxima ``[C]``.
        n_inputs: number of calibration inputs seen.
    """

    program: Program
    samples: dict[int, Tensor]
    maxima: dict[int, Tensor]
    n_inputs: int


def _batches(data, max_inputs: int | None, batch_size: int = 256) -> Iterable[Tensor]:
    """Input tensors from a Tensor ``[N, ...]`` or an iterable of ``x`` or ``(x, y, ...)`` batches."""
    seen = 0
    source = data.split(batch_size) if isinstance(data, Tensor) else data
    for batch in source:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, Tensor):
            raise TypeError(f"calibration batches must be tensors or (x, y) pairs, got {type(x).__name__}")
        if max_inputs is not None:
            x = x[: max_inputs - seen]
        if len(x):
            yield x
            seen += len(x)
        if max_inputs is not None and seen >= max_inputs:
            return


class _Reservoir:
    """Uniform sample (without replacement) of the positions of ``[C, n]`` batches, per layer.

    Each column (one position of one input) gets a uniform random key; the ``cap`` columns with the
    smallest keys are kept, so every channel keeps the same uniform sample of positions.
    """

    def __init__(self, cap: int, generator: torch.Generator):
        self.cap, self.gen = max(1, cap), generator
        self.vals: Tensor | None = None
        self.keys: Tensor | None = None
        self.max: Tensor | None = None

    def add(self, a: Tensor) -> None:
        a = a.detach()
        m = a.amax(1)
        self.max = m if self.max is None else torch.maximum(self.max, m)
        keys = torch.rand(a.shape[1], generator=self.gen).to(a.device)
        if self.vals is not None and self.vals.shape[1] >= self.cap:
            keep = keys < self.keys.max()
            a, keys = a[:, keep], keys[keep]
        vals = a if self.vals is None else torch.cat([self.vals, a], 1)
        keys = keys if self.keys is None else torch.cat([self.keys, keys])
        if len(keys) > self.cap:
            idx = torch.topk(keys, self.cap, largest=False).indices
            vals, keys = vals[:, idx], keys[idx]
        self.vals, self.keys = vals, keys


def calibrate(model: nn.Module, data, *, max_inputs: int | None = None, max_values: int = 2**22,
              device: torch.device | str | None = None, seed: int = 0) -> Calibration:
    """Traces ``model`` and records the activations of every ReLU layer and of the output.

    Runs under ``torch.no_grad()`` on a batch-norm-folded deep copy; ``model`` (including its
    ``.training`` flag) is left unchanged.

    Args:
        model: the trained ANN (see :func:`spikegrad.conversion.trace` for what is supported).
        data: calibration inputs: a tensor ``[N, ...]`` or an iterable of ``x`` / ``(x, y)`` batches
            (e.g. a DataLoader over training images).
        max_inputs: use at most this many inputs (None: all).
        max_values: per layer, at most this many activation values are kept (a uniform random
            sample of positions beyond that; maxima stay exact). 2**22 values = 16 MiB per layer.
        device: where to run (default: the device of the model's parameters, else CPU).
        seed: seeds the subsampling.
    Returns:
        :class:`Calibration`.
    Raises:
        ValueError: ``data`` yielded no inputs.
        ConversionError: the model contains an unsupported layer.
    """
    if not isinstance(max_values, int) or max_values < 1:
        raise ValueError(f"calibrate: max_values must be a positive int, got {max_values!r}")
    if max_inputs is not None and (not isinstance(max_inputs, int) or max_inputs < 1):
        raise ValueError(f"calibrate: max_inputs must be None or a positive int, got {max_inputs!r}")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    with torch.no_grad():
        program = trace(model).to(device)
        gen = torch.Generator().manual_seed(seed)
        recorded = [*program.neurons, program.out]
        res: dict[int, _Reservoir] = {}
        n = 0
        for x in _batches(data, max_inputs):
            x = x.to(device)
            if program.shapes is None:
                program.infer(x)
                for i in dict.fromkeys(recorded):
                    res[i] = _Reservoir(math.ceil(max_values / program.shapes[i][0]), gen)
            vals = run_ann(program, x)
            for i, r in res.items():
                v = vals[i]
                r.add(v.transpose(0, 1).reshape(v.shape[1], -1))  # [C, B * ...]
            n += len(x)
    if n == 0:
        raise ValueError("calibrate: data yielded no inputs; pass a non-empty tensor [N, ...] or an iterable "
                         "of (x, y) batches (e.g. a DataLoader over some training images).")
    return Calibration(program, {i: r.vals for i, r in res.items()}, {i: r.max for i, r in res.items()}, n)


def percentile(values: Tensor, p: float, ignore_zeros: bool = True) -> Tensor:
    """Per-row ``p``-th percentile with linear interpolation (as ``numpy.percentile``).

    Args:
        values: ``[C, m]``.
        p: percentile in (0, 100].
        ignore_zeros: compute it over the nonzero values of each row only (as the SNN toolbox of
            Rueckauer et al.: a ReLU layer's many exact zeros would otherwise pull it down).
    Returns:
        ``[C]``; 0 for a row without (nonzero) values.
    """
    v = values.double()
    if ignore_zeros:
        v = v.masked_fill(v == 0, -math.inf)
    v = v.sort(1).values
    m = v.shape[1]
    n = (v > -math.inf).sum(1).double() if ignore_zeros else torch.full((v.shape[0],), float(m), device=v.device,
                                                                         dtype=torch.float64)
    pos = (m - n) + (n - 1).clamp(min=0) * (p / 100.0)
    lo = pos.floor().long().clamp(max=m - 1)
    hi = pos.ceil().long().clamp(max=m - 1)
    vlo, vhi = v.gather(1, lo[:, None])[:, 0], v.gather(1, hi[:, None])[:, 0]
    out = vlo + (vhi - vlo).nan_to_num(0.0) * (pos - lo)
    return torch.where(n > 0, out, torch.zeros_like(out)).to(values.dtype)


def scale_factors(calib: Calibration, i: int, p: float, channelwise: bool, ignore_zeros: bool) -> Tensor:
    """Scale factor ``lambda`` of node ``i``: ``[C]`` if ``channelwise`` else ``[1]`` (ANN units)."""
    vals, mx = calib.samples[i], calib.maxima[i]
    if p >= 100:
        lam = mx if channelwise else mx.max().reshape(1)
    else:
        lam = percentile(vals if channelwise else vals.reshape(1, -1), p, ignore_zeros)
    bad = ~(lam > 0)
    if bad.any():
        warnings.warn(f"normalize: {int(bad.sum())} channel(s) of '{calib.program.layer_name(i)}' never had a "
                      "positive activation on the calibration data; using scale factor 1 for them", stacklevel=3)
        lam = torch.where(bad, torch.ones_like(lam), lam)
    return lam


def _per_channel(m: Tensor) -> Tensor | None:
    """``[C]`` if the map ``[C, ...]`` is constant over every channel, else None."""
    c = m.reshape(m.shape[0], -1)
    first = c[:, :1]
    return c[:, 0].clone() if torch.allclose(c, first.expand_as(c), rtol=1e-6, atol=0) else None


def _broadcast(c: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Per-channel ``[C]`` or ``[1]`` factors as a full map ``[*shape]`` (channels on dim 0)."""
    return c.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).clone()


def _gain(ratio: Tensor) -> Tensor | None:
    return None if torch.allclose(ratio, torch.ones_like(ratio), rtol=1e-6, atol=0) else ratio


def normalize(calib: Calibration, percentile: float = 99.9, channelwise: bool = False,
              ignore_zeros: bool = True) -> Program:
    """Data-based normalisation: a copy of the program whose ReLU outputs are activations / lambda.

    Each ReLU layer gets ``lambda`` = the ``percentile`` of its calibration activations (per
    channel if ``channelwise``); the output layer gets the percentile of its values (always one
    scalar, so the argmax readout is unchanged). Batch-norm was already folded by tracing.

    Args:
        calib: from :func:`calibrate`.
        percentile: ``p`` in (0, 100]; 100 = max-norm, 99.9 = the robust rule (default).
        channelwise: one scale factor per channel instead of per layer.
        ignore_zeros: percentiles over nonzero activations only (see :func:`percentile`).
    Returns:
        a :class:`Program` with normalised parameters, ``lambdas`` (node -> ``[C]`` or ``[1]``) and
        per-input ``gains`` where a scale could not be folded into weights.
    """
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise ValueError(f"normalize: percentile must be in (0, 100] (100 = max-norm), got {percentile!r}")
    src = calib.program
    shapes, nodes, n = src.shapes, [], len(src.nodes)
    neurons, out = src.neurons, src.out
    # one scalar for the output layer, even if it is a ReLU: per-class scales would change the argmax
    lam_c = {i: scale_factors(calib, i, percentile, channelwise and i != out, ignore_zeros)
             for i in dict.fromkeys([*neurons, out])}
    lam = {i: _broadcast(c, shapes[i]) for i, c in lam_c.items()}
    users = src.users()

    # desired output scale of current-valued nodes, propagated back from the neurons / the output
    want: dict[int, Tensor] = {}
    for i in neurons:
        j = src.nodes[i].inputs[0]
        if users[j] == 1:
            want[j] = lam[i]
    if src.nodes[out].kind != "relu":
        want[out] = lam[out]
    for i in reversed(range(n)):
        node = src.nodes[i]
        if i not in want or node.kind not in ("avgpool", "maxpool", "add", "call"):
            continue
        ins = [j for j in node.inputs if shapes[j] is not None]
        for j in ins:
            if users[j] != 1 or j in want:
                continue
            if node.kind == "add":
                want[j] = want[i]
            elif node.kind in ("avgpool", "maxpool") and (c := _per_channel(want[i])) is not None:
                want[j] = _broadcast(c, shapes[j])
            elif node.kind == "call" and len(ins) == 1 and _gain(want[i] / want[i].flatten()[0]) is None:
                want[j] = torch.full(shapes[j], float(want[i].flatten()[0]), device=want[i].device)

    # forward: actual scale map of every value, new parameters and gains
    s: list = [None] * n  # maps [1, *shape] (or structural values for shape-only nodes)
    for i, node in enumerate(src.nodes):
        node = Node(node.name, node.where, node.kind, node.inputs, dict(node.params), dict(node.conf), node.fn,
                    node.args, dict(node.kwargs), (None,) * len(node.inputs))
        k = node.kind
        if k == "input":
            s[i] = torch.ones((1, *shapes[i]), device=_device(src))
        elif k in ("conv", "linear", "scale"):
            s_in = s[node.inputs[0]][0]
            c_in = s_in.clone() if k == "linear" else _per_channel(s_in)
            if c_in is None:  # input scale varies within a channel: undo it at the input
                node.gains, c_in = (s_in,), torch.ones(s_in.shape[0], device=s_in.device)
            c_out = _per_channel(want[i]) if i in want else None
            if c_out is None or (k == "scale" and len(c_out) != len(c_in)):
                c_out = torch.ones(shapes[i][0], device=s_in.device)
            node.params = _rescale(node, c_in, c_out)
            s[i] = _broadcast(c_out, shapes[i])[None]
        elif k in ("avgpool", "maxpool"):
            s_in = s[node.inputs[0]][0]
            c = _per_channel(s_in)
            if c is None:
                node.gains, c = (s_in,), torch.ones(s_in.shape[0], device=s_in.device)
            s[i] = _broadcast(c, shapes[i])[None]
        elif k == "relu":
            node.gains = (_gain(s[node.inputs[0]][0] / lam[i]),)
            s[i] = lam[i][None]
        elif k == "add":
            s_out = want.get(i, s[node.inputs[0]][0])
            node.gains = tuple(_gain(s[j][0] / s_out) for j in node.inputs)
            s[i] = s_out[None]
        else:  # call: shape-only, apply it to the scale maps
            s[i] = eval_call(node, s)
        nodes.append(node)
    s_out = s[out][0]
    readout_gain = None if _gain(s_out / s_out.flatten()[0]) is None else s_out / lam[out]
    return Program(nodes, out, list(shapes), lam_c, readout_gain)


def _device(p: Program) -> torch.device:
    for node in p.nodes:
        for t in node.params.values():
            if t is not None:
                return t.device
    return torch.device("cpu")


def _rescale(node: Node, c_in: Tensor, c_out: Tensor) -> dict[str, Tensor]:
    """Parameters of a conv/linear/scale node mapping inputs at scale ``c_in`` to outputs at ``c_out``."""
    p = dict(node.params)
    if node.kind == "scale":
        return {"scale": p["scale"] * c_in / c_out, "shift": p["shift"] / c_out}
    w = p["weight"]
    if node.kind == "linear":
        w = w * c_in[None, :] / c_out[:, None]
    else:  # conv weight [Cout, Cin / g, kh, kw]: input channel of w[o, j] is (o // (Cout/g)) * (Cin/g) + j
        g = node.conf["groups"]
        cin_w = c_in.reshape(g, -1).repeat_interleave(w.shape[0] // g, dim=0)  # [Cout, Cin / g]
        w = w * (cin_w / c_out[:, None])[:, :, None, None]
    p["weight"] = w
    if p.get("bias") is not None:
        p["bias"] = p["bias"] / c_out
    return p
