"""NIR export and import (the Neuromorphic Intermediate Representation, PyPI ``nir``).

NIR describes neurons in continuous time: a time constant ``tau`` in seconds, a resistance ``r``,
``v_leak``, ``v_threshold``, ``v_reset``, and no step. spikegrad neurons are discrete: per step,
``i = ds i + x``, ``v = dm v + i`` with ``d = exp(-1 / tau_steps)``
(:mod:`spikegrad.functional`). Moving between the two needs a step ``dt`` (seconds) and a rule,
the *discretization*; both are written into the graph's metadata and read back.

The contract, for a constant of ``tau_steps`` steps with per-step decay ``d`` (``tau_syn`` gives
``ds``, ``tau_mem`` gives ``dm``)::

                      exact                            euler
    tau (s)           tau_steps * dt                   dt / (1 - d)
    r  (membrane)     1 / (1 - dm)                     1 / (1 - dm)     (= tau_mem / dt)
    w_in (synapse)    1 / (1 - ds)                     1 / (1 - ds)     (= tau_syn / dt)
    r  (IF, I)        1 / dt                           1 / dt
    importer's decay  exp(-dt / tau)  == d             1 - dt / tau  == d

* ``"exact"``: one step of the continuous equation with its input held constant over the step
  (``v(t + dt) = e^{-dt/tau} v + (1 - e^{-dt/tau}) r I``) reproduces spikegrad's update; for the
  current-based neurons the current is advanced first and the membrane sees the new current, as
  in spikegrad. An importer that integrates exactly (exponential Euler) gets spikegrad's network.
* ``"euler"``: a forward-Euler importer (``v += dt / tau (v_leak - v + r I)``: snnTorch, Norse,
  SpikingJelly) gets spikegrad's decay and input gain exactly.

The same graph read with the other rule has another decay: a per-step decay of 0.5 exported
"exact" (``tau = dt / ln 2``) becomes ``1 - ln 2 = 0.307`` under a forward-Euler importer.

Reset: NIR neurons reset to ``v_reset``; spikegrad's ``reset="zero"`` maps to it and
``reset="none"`` maps to a leaky integrator followed by a ``Threshold`` node. Subtractive reset
has no NIR form: exporting it raises a ValueError unless ``lossy_reset=True``, which exports it as
reset-to-zero with a warning. A recurrent LIF layer (``recurrent=N``) becomes a subgraph
``input -> neuron -> output`` with a ``Linear`` ``W_rec`` from the neuron back to itself (the
form snnTorch reads; the recurrent input arrives one step later, as in spikegrad). Refractory
periods, adaptive thresholds (ALIF), non-spiking surrogates (``spiking=False``) and modules
without a NIR node are refused with an error naming the module. Max-pooling of spikes (a
logical OR) is exported as ``SumPool2d`` then ``Threshold(0.5)``.

Weights and thresholds are exported as CPU arrays of ``dtype`` (float32 by default), from any
device and dtype; the derived time constants and gains (``tau``, ``r``, ``w_in``) are float64 so
that the per-step decays survive the round trip bit for bit. :func:`from_nir` builds a
:class:`NIRNetwork` of spikegrad modules (the neurons run on the fast kernels of
:mod:`spikegrad.kernels`); where a foreign graph's gain ``r * (1 - d)`` is not 1 it inserts a
:class:`Scale` before the neuron.

``nir`` (with numpy and h5py) is an optional dependency: ``pip install "spikegrad[nir]"``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import __version__
from .conversion.snn import SpikingNetwork
from .kernels.sparse import SparseInputLinear
from .models import SeqWise, SpikingConvNet, SpikingMLP, SpikingOutput
from .neurons import ALIF, IF, LI, LIF
from .sharpening.export import BinaryNet, ThresholdLayer, export_binary
from .sharpening.models import ImageInput, NHotDecoder, SoftmaxDecoder, WhetstoneConvNet, WhetstoneMLP
from .surrogates import SURROGATES, Surrogate, heaviside, make_surrogate

__all__ = ["DISCRETIZATIONS", "to_nir", "from_nir", "save_nir", "load_nir", "check_nir_export", "NIRNetwork",
           "Scale", "Threshold", "SumPool2d", "export_constants", "import_decay"]

DISCRETIZATIONS = ("exact", "euler")
"""How continuous-time NIR constants relate to per-step decays (see the module docstring)."""

_UNIT_GAIN_RTOL = 1e-9  # an imported gain this close to 1 is 1 (float64 rounding of tau * dt / dt)


def _nir():
    try:
        import nir
    except ImportError as e:  # an optional dependency
        raise ImportError("spikegrad.interop needs the package 'nir' (with numpy and h5py): "
                          "pip install 'spikegrad[nir]'") from e
    return nir


def _check_dt(who: str, dt: Any) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) or not (0 < float(dt) < math.inf):
        raise ValueError(f"{who}: dt must be the step length in seconds, a finite number > 0 (e.g. dt=1e-3), "
                         f"got {dt!r}")
    return float(dt)


def _check_discretization(who: str, discretization: Any) -> str:
    if discretization not in DISCRETIZATIONS:
        raise ValueError(f"{who}: discretization must be one of {DISCRETIZATIONS}, got {discretization!r}: 'exact' "
                         "for importers that integrate exactly (spikegrad), 'euler' for forward-Euler importers "
                         "(snnTorch, Norse, SpikingJelly)")
    return discretization


# ---------------------------------------------------------------------------------------------
# The contract, on float64 arrays
# ---------------------------------------------------------------------------------------------

def export_constants(tau_steps: np.ndarray, dt: float, discretization: str) -> tuple[np.ndarray, np.ndarray]:
    """NIR ``(tau, gain)`` of a leaky stage with time constant ``tau_steps`` (steps, > 0, finite).

    Args:
        tau_steps: time constants in steps, any shape, float64.
        dt: step length (s). discretization: ``"exact"`` or ``"euler"``.
    Returns:
        ``tau`` (s) and the gain (``r`` of a membrane, ``w_in`` of a synapse), ``1 / (1 - d)`` with
        ``d = exp(-1 / tau_steps)``; both float64 of the shape of ``tau_steps``.
    """
    d = np.exp(-1.0 / tau_steps)
    tau = tau_steps * dt if discretization == "exact" else dt / (1.0 - d)
    return tau, 1.0 / -np.expm1(-1.0 / tau_steps)


def import_decay(tau: np.ndarray, dt: float, discretization: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-step decay ``d`` and input factor of a NIR leaky stage ``tau dv/dt = -v + r I``.

    Args:
        tau: time constants (s), float64. dt: step (s). discretization: ``"exact"`` or ``"euler"``.
    Returns:
        ``d`` (``exp(-dt / tau)`` or ``1 - dt / tau``) and the factor that multiplies ``r I`` in
        one step (``1 - exp(-dt / tau)`` or ``dt / tau``), float64 of the shape of ``tau``.
    Raises:
        ValueError: euler with ``tau < dt`` (the forward-Euler decay would be negative).
    """
    if discretization == "exact":
        return np.exp(-dt / tau), -np.expm1(-dt / tau)
    if np.any(tau < dt):
        raise ValueError(f"from_nir: a time constant of {float(np.min(tau)):g} s is shorter than dt={dt:g} s, so "
                         "its forward-Euler decay 1 - dt/tau would be negative; import with a smaller dt or with "
                         "discretization='exact'")
    return 1.0 - dt / tau, dt / tau


def _tau_steps(d: np.ndarray) -> np.ndarray:
    """Time constant in steps of a per-step decay (``0 -> 0``, ``1 -> inf``)."""
    with np.errstate(divide="ignore"):
        return np.where(d <= 0, 0.0, np.where(d >= 1, np.inf, -1.0 / np.log(np.clip(d, 1e-300, 1.0))))


# ---------------------------------------------------------------------------------------------
# Small stateless modules of imported graphs
# ---------------------------------------------------------------------------------------------

def _float_tensor(value: Any) -> Tensor:
    t = torch.as_tensor(value)
    return (t if t.is_floating_point() else t.to(torch.float32)).detach().clone()


class Scale(nn.Module):
    """Per-element gain: ``y = x * scale`` (NIR ``Scale``). ``[T, B, ...] -> [T, B, ...]``."""

    def __init__(self, scale: Tensor):
        super().__init__()
        self.register_buffer("scale", _float_tensor(scale))

    def forward(self, x_seq: Tensor) -> Tensor:
        return x_seq * self.scale.to(x_seq.dtype)


class Threshold(nn.Module):
    """Stateless threshold neurons (NIR ``Threshold``): ``spikes = H(x - threshold)``, strictly greater.

    ``threshold`` broadcasts against one step ``[B, ...]``. ``[T, B, ...] -> [T, B, ...]`` in {0, 1},
    dtype of the input.
    """

    def __init__(self, threshold: Tensor):
        super().__init__()
        self.register_buffer("threshold", _float_tensor(threshold))

    def forward(self, x_seq: Tensor) -> Tensor:
        return heaviside(x_seq - self.threshold.to(x_seq.dtype))


class SumPool2d(nn.Module):
    """Sum over windows (NIR ``SumPool2d``): ``[N, C, H, W] -> [N, C, H', W']`` (wrap in :class:`SeqWise`)."""

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int]):
        super().__init__()
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, count_include_pad=True,
                            divisor_override=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class NIRNetwork(nn.Module):
    """A feed-forward chain of spikegrad modules built by :func:`from_nir`.

    Args:
        names: the NIR node name of each module.
        layers: the modules; stateless layers are wrapped in :class:`SeqWise`.
        spiking: per module, whether its output counts as hidden spikes.
        input_shape: shape of one input step without batch, e.g. ``(256,)`` or ``(1, 16, 16)``.
        metadata: the graph's metadata (dt, discretization, reset, ...), as read.
    Shapes: ``forward(x_seq [T, B, *input_shape], state=None) -> SpikingOutput(readout [T, B, ...],
    spikes, (), state)`` with ``spikes`` the outputs of every spiking module but the last and
    ``state`` the final state of every neuron module, in order (pass it back to continue the run).
    """

    def __init__(self, names: Sequence[str], layers: Sequence[nn.Module], spiking: Sequence[bool],
                 input_shape: Sequence[int], metadata: dict | None = None):
        super().__init__()
        self.names = list(names)
        self.layers = nn.ModuleList(layers)
        self.spiking = [bool(s) for s in spiking]
        self.input_shape = tuple(int(s) for s in input_shape)
        self.metadata = dict(metadata or {})

    def forward(self, x_seq: Tensor, state: tuple | None = None) -> SpikingOutput:
        if x_seq.dim() < 2 or tuple(x_seq.shape[2:]) != self.input_shape:
            raise ValueError(f"NIRNetwork: input must be [T, B, {', '.join(map(str, self.input_shape))}], got "
                             f"{tuple(x_seq.shape)}")
        neurons = [k for k, layer in enumerate(self.layers) if isinstance(layer, (LIF, LI))]
        if state is not None and (not isinstance(state, tuple) or len(state) != len(neurons)):
            raise ValueError(f"NIRNetwork: state must be None or the state of a previous call (a tuple of "
                             f"{len(neurons)} neuron states), got {type(state).__name__}")
        states = dict(zip(neurons, state)) if state is not None else {}
        h, spikes, finals = x_seq, [], []
        last = len(self.layers) - 1
        for k, (layer, spiking) in enumerate(zip(self.layers, self.spiking)):
            if k in neurons:
                h, final = layer(h, states.get(k))
                finals.append(final)
            else:
                h = layer(h)
            if spiking and k < last:
                spikes.append(h)
        return SpikingOutput(h, tuple(spikes), (), tuple(finals))


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def _chain(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` in execution order; stateless layers unwrapped from :class:`SeqWise`.

    ``nn.Flatten(1)`` stands for the flattening of :class:`SpikingMLP`'s input.
    """
    if isinstance(model, SeqWise):
        yield prefix.rstrip("."), model.module
    elif isinstance(model, SpikingMLP):
        yield f"{prefix}flatten", nn.Flatten(1)
        for k, (layer, neuron) in enumerate(zip(model.layers, model.neurons)):
            yield f"{prefix}layers.{k}", layer.module
            yield f"{prefix}neurons.{k}", neuron
    elif isinstance(model, SpikingConvNet):
        for k, (conv, neuron) in enumerate(zip(model.blocks, model.neurons)):
            yield f"{prefix}blocks.{k}", conv.module
            yield f"{prefix}neurons.{k}", neuron
            yield f"{prefix}pool.{k}", model.pool.module
        yield from _chain(model.head, f"{prefix}head.")
    elif isinstance(model, NIRNetwork):
        for name, layer in zip(model.names, model.layers):
            yield name, layer.module if isinstance(layer, SeqWise) else layer
    elif isinstance(model, BinaryNet):
        for k, layer in enumerate(model.layers):
            yield f"{prefix}layers.{k}", layer
        yield f"{prefix}decoder", model.decoder
    elif isinstance(model, nn.Sequential):
        for name, layer in model.named_children():
            yield from _chain(layer, f"{prefix}{name}.") if isinstance(layer, (nn.Sequential, SeqWise)) \
                else [(f"{prefix}{name}", layer)]
    else:
        raise ValueError(f"to_nir: cannot export a {type(model).__name__}; supported are SpikingMLP, SpikingConvNet, "
                         "NIRNetwork, Whetstone models and their BinaryNet, converted SNNs, and nn.Sequential / "
                         "SeqWise chains of the supported layers (an ANN is exported after conversion: "
                         "to_nir(spikegrad.conversion.ann_to_snn(ann, data, reset='zero'), ...))")


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    if isinstance(model, SpikingMLP):
        return (model.sizes[0],)
    if isinstance(model, SpikingConvNet):
        return tuple(model.in_shape)
    if isinstance(model, NIRNetwork):
        return model.input_shape
    if isinstance(model, BinaryNet) and len(model.layers) and isinstance(model.layers[0], ImageInput):
        return tuple(model.layers[0].shape)
    raise ValueError(f"to_nir: the input shape of a {type(model).__name__} is not known; pass input_shape=(...) "
                     "(one step, without batch), e.g. input_shape=(784,)")


def _surrogate_meta(who: str, neuron: nn.Module) -> dict:
    s = getattr(neuron, "surrogate", None)
    if not isinstance(s, Surrogate):
        return {}
    if not s.spiking or type(s).forward is not Surrogate.forward:
        raise ValueError(f"to_nir: {who} uses a surrogate whose forward pass is not the spike H(v - v_th) "
                         f"({type(s).__name__}, spiking={s.spiking}); NIR neurons spike. Use spiking=True and a "
                         "surrogate that only shapes the backward pass")
    if s.slope.numel() != 1:
        raise ValueError(f"to_nir: {who} has a surrogate slope of shape {tuple(s.slope.shape)}; only one slope per "
                         "layer can be stored in the graph's metadata")
    name = next((k for k, cls in SURROGATES.items() if cls is type(s)), type(s).__name__)
    return {"surrogate": name, "slope": float(s.slope)}


class _Exporter:
    """Builds the node list of :func:`to_nir`."""

    def __init__(self, dt: float, discretization: str, lossy_reset: bool, dtype: torch.dtype):
        self.nir = _nir()
        self.dt, self.discretization, self.lossy_reset = dt, discretization, lossy_reset
        self.dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.nodes: list[tuple[str, Any]] = []
        self.resets: set[str] = set()

    def array(self, t: Tensor | float, shape: Sequence[int] | None = None) -> np.ndarray:
        """``t`` as a CPU array of the export dtype, broadcast to ``shape`` if given."""
        t = torch.as_tensor(t).detach().to("cpu", self.dtype)
        a = t.numpy().copy()
        if shape is not None:
            a = np.ascontiguousarray(np.broadcast_to(a, tuple(shape))).copy()
        return a

    def add(self, name: str, node: Any) -> None:
        self.nodes.append((name, node))

    def constant_steps(self, neuron: nn.Module, name: str, shape: Sequence[int]) -> np.ndarray:
        t = torch.as_tensor(getattr(neuron, name)).detach().to("cpu", torch.float64)  # the values the neuron uses
        return np.broadcast_to(t.numpy(), tuple(shape)).copy()

    def neuron(self, name: str, m: nn.Module, shape: tuple[int, ...]) -> None:
        nir = self.nir
        who = f"{name} ({type(m).__name__})"
        if isinstance(m, ALIF):
            raise ValueError(f"to_nir: {who} has an adaptive threshold, which NIR has no node for; use LIF neurons")
        if isinstance(m, LIF) and m.w_rec is not None and m.reset == "none":
            raise ValueError(f"to_nir: {who} is recurrent and does not reset; its NIR form (a leaky integrator and a "
                             "threshold) cannot carry the recurrent weights. Use reset='zero'")
        if isinstance(m, LIF) and m.refractory > 0:
            raise ValueError(f"to_nir: {who} has a refractory period of {m.refractory} steps, which NIR neurons do not "
                             "have; export a network with refractory=0")
        meta = _surrogate_meta(who, m) if isinstance(m, LIF) else {}
        tau_mem = self.constant_steps(m, "tau_mem", shape)
        tau_syn = self.constant_steps(m, "tau_syn", shape)
        leak = bool(np.all(np.isfinite(tau_mem)))
        if not leak and np.any(np.isfinite(tau_mem)):
            raise ValueError(f"to_nir: {who} mixes finite and infinite tau_mem across neurons; NIR needs one neuron "
                             "type per node")
        syn = bool(np.any(tau_syn > 0))
        if syn and not np.all(tau_syn > 0):
            raise ValueError(f"to_nir: {who} mixes tau_syn = 0 and tau_syn > 0 across neurons; NIR needs one neuron "
                             "type per node")
        if syn and not leak:
            raise ValueError(f"to_nir: {who} has tau_mem=inf with a synaptic filter (tau_syn > 0); NIR's "
                             "CubaLIF/CubaLI need a finite tau_mem. Give tau_mem a finite value or set tau_syn=0 (IF)")
        zeros = np.zeros(shape)
        kw: dict[str, Any] = {}
        if syn:
            kw["tau_syn"], kw["w_in"] = export_constants(tau_syn, self.dt, self.discretization)
        if leak:
            tau, kw["r"] = export_constants(tau_mem, self.dt, self.discretization)
            kw["tau_mem" if syn else "tau"] = tau
            kw["v_leak"] = zeros
        else:
            kw["r"] = np.full(shape, 1.0 / self.dt)
        if isinstance(m, LI):
            node = (nir.CubaLI(**kw) if syn else nir.LI(**kw)) if leak else nir.I(r=kw["r"])
            node.metadata.update({"spikegrad": "LI"})
            self.add(name, node)
            return
        reset = m.reset
        v_th = self.array(m.v_th, shape)
        if reset == "subtract":
            if not self.lossy_reset:
                raise ValueError(f"to_nir: {who} resets by subtraction (reset='subtract'), which NIR cannot "
                                 "represent (its LIF, CubaLIF and IF nodes reset to v_reset). Either build/train the "
                                 "network with reset='zero' (the neuron's or convert()'s argument; Hydra: "
                                 "neuron.reset=zero), or pass lossy_reset=True to export it as reset-to-zero (the "
                                 "exported network then differs from this one)")
            warnings.warn(f"to_nir: {who} resets by subtraction; exported as reset to zero (lossy_reset=True): the "
                          "exported network computes different spikes", stacklevel=3)
            self.resets.add("subtract exported as zero (lossy)")
            v_reset = np.zeros(shape, dtype=v_th.dtype)
        else:
            self.resets.add(reset)
            v_reset = self.array(m.v_reset, shape)
        meta.update({"spikegrad": "IF" if isinstance(m, IF) else "LIF", "reset": reset,
                     "detach_reset": bool(m.detach_reset)})
        if reset == "none":  # a leaky integrator and a threshold
            node = (nir.CubaLI(**kw) if syn else nir.LI(**kw)) if leak else nir.I(r=kw["r"])
            node.metadata.update(meta)
            self.add(name, node)
            thr = nir.Threshold(threshold=v_th)
            thr.metadata.update({"spikegrad": "threshold of a neuron without reset"})
            self.add(f"{name}.threshold", thr)
            return
        if not leak:
            node = nir.IF(r=kw["r"], v_threshold=v_th, v_reset=v_reset)
        elif syn:
            node = nir.CubaLIF(v_threshold=v_th, v_reset=v_reset, **kw)
        else:
            node = nir.LIF(v_threshold=v_th, v_reset=v_reset, **kw)
        node.metadata.update(meta)
        if isinstance(m, LIF) and m.w_rec is not None:
            n = np.array(shape)
            node = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": n}), "lif": node,
                                       "w_rec": nir.Linear(weight=self.array(m.w_rec)),
                                       "output": nir.Output(output_type={"output": n})},
                                edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
                                metadata={"spikegrad": "recurrent LIF"}, type_check=False)
        self.add(name, node)

    def layer(self, name: str, m: nn.Module, shape: tuple[int, ...], binary: bool) -> None:
        nir = self.nir
        who = f"{name} ({type(m).__name__})"
        if isinstance(m, nn.Linear):
            w = self.array(m.weight)
            node = nir.Linear(weight=w) if m.bias is None else nir.Affine(weight=w, bias=self.array(m.bias))
            if isinstance(m, SparseInputLinear):
                node.metadata.update({"spikegrad": "SparseInputLinear", "max_density": float(m.max_density)})
            self.add(name, node)
        elif isinstance(m, nn.Conv2d):
            self.add(name, self.conv(who, m.weight, m.bias, m, shape))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"to_nir: {who} flattens dims {m.start_dim}..{m.end_dim}; only flattening everything "
                                 "but the batch (start_dim=1, end_dim=-1) is supported")
            if len(shape) > 1:
                self.add(name, nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
        elif isinstance(m, nn.MaxPool2d):
            k, s, p, dil = (_pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation))
            if not binary or dil != (1, 1) or m.ceil_mode or p != (0, 0):
                why = ("its input is not spikes (max-pooling of spikes is an OR, exported as SumPool2d + "
                       "Threshold(0.5); NIR has no max-pooling of other signals)" if not binary
                       else "only padding=0, dilation=1, ceil_mode=False are supported")
                raise ValueError(f"to_nir: cannot export {who}: {why}")
            self.add(name, nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p)))
            out = _pool_shape(shape, k, s, p)
            thr = nir.Threshold(threshold=np.full(out, 0.5, dtype=np.float64 if self.dtype == torch.float64
                                                  else np.float32))
            thr.metadata.update({"spikegrad": "max-pooling of spikes"})
            self.add(f"{name}.max", thr)
        elif isinstance(m, nn.AvgPool2d):
            k, s, p = (_pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding))
            if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
                raise ValueError(f"to_nir: {who}: only ceil_mode=False, count_include_pad=True and no divisor_override "
                                 "are supported")
            self.add(name, nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p)))
        elif isinstance(m, Scale):
            self.add(name, nir.Scale(scale=self.array(m.scale, shape)))
        elif isinstance(m, Threshold):
            self.add(name, nir.Threshold(threshold=self.array(m.threshold, shape)))
        elif isinstance(m, SumPool2d):
            self.add(name, nir.SumPool2d(kernel_size=np.array(m.kernel_size), stride=np.array(m.stride),
                                         padding=np.array(m.padding)))
        elif isinstance(m, ThresholdLayer):
            if m.conv is None:
                self.add(name, nir.Linear(weight=self.array(m.weight)))
            else:
                self.add(name, self.conv(who, m.weight, None, m.conv, shape))
            out = _run_step(m, shape)
            thr = m.threshold if m.conv is None else m.threshold[:, None, None]
            self.add(f"{name}.threshold", nir.Threshold(threshold=self.array(thr, out)))
        elif isinstance(m, SoftmaxDecoder):  # logits = (2 code - 1) @ (2 key - 1)^T, integers: exact
            key = 2 * m.key.to(torch.float64) - 1                   # [C, W]
            self.add(name, nir.Affine(weight=self.array(2 * key), bias=self.array(-key.sum(1))))
        elif isinstance(m, NHotDecoder):
            w = torch.eye(m.n_classes, dtype=torch.float64).repeat_interleave(m.n_hot, dim=1)  # [C, C * n_hot]
            self.add(name, nir.Linear(weight=self.array(w)))
        elif isinstance(m, (ImageInput, nn.Identity, nn.Dropout)):
            if isinstance(m, nn.Dropout) and m.training:
                raise ValueError(f"to_nir: {who} is in training mode; call model.eval() first")
        else:
            raise ValueError(f"to_nir: {who} has no NIR mapping; supported are Linear, Conv2d, Flatten, MaxPool2d (of "
                             "spikes), AvgPool2d, LIF, IF, LI, Scale, Threshold and the Whetstone binary layers")

    def converted(self, snn: SpikingNetwork) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Nodes of a converted SNN (:mod:`spikegrad.conversion`); returns (input shape, output shape)."""
        nir = self.nir
        if snn.readout != "membrane":
            raise ValueError(f"to_nir: the converted network's readout={snn.readout!r} draws random output spikes; "
                             "NIR has no such node. Convert with readout='membrane'")
        nodes, shapes = snn.nodes(), snn.shapes
        current = next(i for i, n in enumerate(nodes) if n.kind == "input")
        for i, n in enumerate(nodes):
            if n.kind == "input" or shapes[i] is None:
                continue  # structural values (sizes) carry no signal
            who = f"{n.name} ({n.where})"
            data = [j for j in n.inputs if shapes[j] is not None]
            if data != [current]:
                raise ValueError(f"to_nir: {who} reads {[nodes[j].name for j in data]}; only chains (each layer "
                                 "reading the previous one) export, not branches or additions")
            shape = tuple(shapes[current])
            for k, g in enumerate(n.gains):
                if g is not None:
                    self.add(f"{n.name}.gain", nir.Scale(scale=self.array(g, shape)))
            p = n.params
            if n.kind == "conv":
                self.add(n.name, self.conv(who, p["weight"], p["bias"], dict(n.conf, groups=n.conf.get("groups", 1)),
                                           shape))
            elif n.kind == "linear":
                w = self.array(p["weight"])
                self.add(n.name, nir.Linear(weight=w) if p["bias"] is None else nir.Affine(weight=w,
                                                                                            bias=self.array(p["bias"])))
            elif n.kind == "avgpool":
                c = n.conf
                k2, s2, p2 = (_pair(v) for v in (c["kernel_size"], c.get("stride") or c["kernel_size"], c["padding"]))
                if c.get("ceil_mode") or not c.get("count_include_pad", True) or c.get("divisor_override") is not None:
                    raise ValueError(f"to_nir: {who}: only ceil_mode=False, count_include_pad=True and no "
                                     "divisor_override are supported")
                self.add(n.name, nir.AvgPool2d(kernel_size=np.array(k2), stride=np.array(s2), padding=np.array(p2)))
            elif n.kind == "relu":
                self.neuron(n.name, snn.if_layers[snn.neurons.index(i)], shape)
            elif n.kind == "call" and tuple(shapes[i]) == shape:
                pass  # a reshape to the same per-sample shape
            elif n.kind == "call" and len(shapes[i]) == 1 and shapes[i][0] == math.prod(shape):
                if len(shape) > 1:
                    self.add(n.name, nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
            else:
                why = {"maxpool": "its max-pooling passes the spikes of the input with the largest spike count so "
                                  "far (a stateful gate NIR has no node for); convert an ANN with average pooling "
                                  "(LeNet pool='avg')",
                       "scale": "an unfolded batch-norm (scale and shift) has no NIR node; fold it into the "
                                "preceding layer"}.get(n.kind, "NIR has no node for it")
                raise ValueError(f"to_nir: cannot export {who} of the converted network: {why}")
            current = i
        if current != snn.out:
            raise ValueError("to_nir: the converted network's output is not the end of its chain")
        out_shape = tuple(shapes[current])
        if snn.readout_gain is not None:
            self.add("readout.gain", nir.Scale(scale=self.array(snn.readout_gain, out_shape)))
        self.add("readout", nir.I(r=np.full(out_shape, 1.0 / self.dt)))  # the membrane readout sums the current
        return tuple(shapes[next(i for i, n in enumerate(nodes) if n.kind == "input")]), out_shape

    def conv(self, who: str, weight: Tensor, bias: Tensor | None, conv: Any, shape: tuple[int, ...]):
        get = conv.get if isinstance(conv, dict) else lambda k: getattr(conv, k)
        if not isinstance(conv, dict) and conv.padding_mode != "zeros":
            raise ValueError(f"to_nir: {who} uses padding_mode={conv.padding_mode!r}; NIR convolutions pad with zeros")
        padding = get("padding")
        if isinstance(padding, str):
            raise ValueError(f"to_nir: {who} has padding={padding!r}; give the padding as numbers")
        b = torch.zeros(weight.shape[0]) if bias is None else bias
        return self.nir.Conv2d(input_shape=tuple(shape[1:]), weight=self.array(weight), stride=_pair(get("stride")),
                               padding=_pair(padding), dilation=_pair(get("dilation")), groups=int(get("groups")),
                               bias=self.array(b))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pool_shape(shape: Sequence[int], k, s, p) -> tuple[int, ...]:
    c, h, w = shape
    return (c, (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)


@torch.no_grad()
def _run_step(m: nn.Module, shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of one step's output ``[...]`` (no batch) of a stateless or neuron module."""
    ref = next(iter(list(m.parameters()) + list(m.buffers())), None)
    x = torch.zeros(1, *shape) if ref is None else torch.zeros(1, *shape, device=ref.device,
                                                              dtype=ref.dtype if ref.is_floating_point() else None)
    if isinstance(m, (LIF, LI, ALIF)):
        return tuple(shape)
    return tuple(m(x).shape[1:])


@torch.no_grad()
def to_nir(model: nn.Module, dt: float = 1e-3, discretization: str = "exact", lossy_reset: bool = False,
           input_shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32):
    """Export a spikegrad network as a ``nir.NIRGraph``.

    Args:
        model: a :class:`~spikegrad.models.SpikingMLP`, :class:`~spikegrad.models.SpikingConvNet`,
            :class:`NIRNetwork`, the Whetstone ``BinaryNet`` (:func:`spikegrad.sharpening.export_binary`;
            a fully sharpened ``WhetstoneMLP``/``WhetstoneConvNet`` is passed through it first), a
            converted SNN (:class:`spikegrad.conversion.SpikingNetwork`, membrane readout), or an
            ``nn.Sequential`` of supported layers (on any device, any dtype). The binary net runs one
            step per input: its graph is ``Linear/Conv2d -> Threshold`` per layer, and its output node
            gives the decoder's logits (an ``Affine``/``Linear`` node).
        dt: the length of one step in seconds (time constants become ``tau_steps * dt`` or
            ``dt / (1 - d)``).
        discretization: ``"exact"`` or ``"euler"`` (module docstring); choose ``"euler"`` for an
            importer that integrates with forward Euler (snnTorch, Norse, SpikingJelly).
        lossy_reset: export subtract-reset neurons as reset-to-zero (with a warning) instead of
            raising.
        input_shape: shape of one input step without batch; needed for ``nn.Sequential``.
        dtype: dtype of the exported weights and thresholds (float32, or float64 for a float64
            model such as the Whetstone binary net); time constants and gains are float64.
    Returns:
        the graph: ``input -> nodes in execution order -> output``; its metadata holds ``dt`` (s),
        ``discretization``, ``reset`` (the reset modes exported) and ``producer``.
    Raises:
        ValueError: anything NIR cannot represent (subtract reset without ``lossy_reset``,
            refractory periods, adaptive neurons, recurrent layers without reset, unsupported layers).
    """
    nir = _nir()
    dt = _check_dt("to_nir", dt)
    discretization = _check_discretization("to_nir", discretization)
    if isinstance(model, (WhetstoneMLP, WhetstoneConvNet)):
        model = export_binary(model)
    ex = _Exporter(dt, discretization, bool(lossy_reset), dtype)
    items = [] if isinstance(model, SpikingNetwork) else list(_chain(model))
    if isinstance(model, SpikingNetwork):
        in_shape, shape = ex.converted(model)
    else:
        in_shape = _input_shape(model, input_shape)
        shape = in_shape
    binary = False
    for name, m in items:
        if isinstance(m, (LIF, LI, ALIF)):
            ex.neuron(name, m, shape)
            binary = isinstance(m, (LIF, ALIF))  # spikes in {0, 1}
        else:
            ex.layer(name, m, shape, binary)
            binary = isinstance(m, (ThresholdLayer, Threshold)) or (
                binary and isinstance(m, (nn.Flatten, nn.MaxPool2d, nn.Identity, nn.Dropout, ImageInput)))
            shape = _run_step(m, shape)
    if not ex.nodes:
        raise ValueError("to_nir: the model has no layers to export")
    names = ["input", *(n for n, _ in ex.nodes), "output"]
    if len(set(names)) != len(names):
        raise ValueError(f"to_nir: node names collide: {names}")
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)}), **dict(ex.nodes),
             "output": nir.Output(output_type={"output": np.array(shape)})}
    edges = list(zip(names[:-1], names[1:]))
    metadata = {"producer": f"spikegrad {__version__}", "dt": dt, "discretization": discretization,
                "reset": ", ".join(sorted(ex.resets)) or "no spiking neurons"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=True)


def check_nir_export(model: nn.Module, **kwargs) -> None:
    """Raise what :func:`to_nir` (same keyword arguments) would raise for ``model``, e.g. before
    training rather than after; a Whetstone model is checked as if it were fully sharpened."""
    if isinstance(model, (WhetstoneMLP, WhetstoneConvNet)):
        model = export_binary(model, force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lossy_reset warns again at the real export
        to_nir(model, **kwargs)


def save_nir(model: nn.Module, path: str | Path, **kwargs) -> Any:
    """:func:`to_nir` (same keyword arguments) written to a ``.nir`` (HDF5) file; returns the graph."""
    nir = _nir()
    graph = to_nir(model, **kwargs)
    nir.write(str(path), graph)
    return graph


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------

def _meta(obj: Any, key: str) -> Any:
    """``obj.metadata[key]`` of a graph or node as a Python value (as written or as read from HDF5), or None."""
    metadata = getattr(obj, "metadata", None)
    value = metadata.get(key) if isinstance(metadata, dict) else None
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _chain_nodes(graph: Any) -> list[str]:
    nir = _nir()
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise ValueError(f"from_nir: the graph must have exactly one Input node, found {inputs}")
    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    order, node = [], inputs[0]
    while True:
        if len(pred.get(node, [])) > 1 or len(succ.get(node, [])) > 1:
            raise ValueError(f"from_nir: node {node!r} has {len(pred.get(node, []))} inputs and "
                             f"{len(succ.get(node, []))} outputs; spikegrad imports feed-forward chains (no branches, "
                             "merges or recurrent connections)")
        order.append(node)
        nxt = succ.get(node, [])
        if not nxt:
            break
        node = nxt[0]
        if node in order:
            raise ValueError(f"from_nir: the graph has a cycle through {node!r}; recurrent graphs are not supported")
    if not isinstance(graph.nodes[order[-1]], nir.Output):
        raise ValueError(f"from_nir: the chain from the input ends at {order[-1]!r}, not at an Output node")
    if len(order) != len(graph.nodes):
        rest = sorted(set(graph.nodes) - set(order))
        raise ValueError(f"from_nir: nodes {rest} are not on the chain from input to output")
    return order


def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _constant(a: np.ndarray) -> Tensor | float:
    """One float when all entries agree (the kernels' scalar path), else a float32 tensor."""
    a = np.asarray(a, dtype=np.float64)
    if a.size > 0 and np.all(a == a.flat[0]):
        return float(a.flat[0])
    return torch.from_numpy(a.astype(np.float32))


def _gain_module(gain: np.ndarray, who: str) -> Scale | None:
    if not np.all(np.isfinite(gain)):
        raise ValueError(f"from_nir: {who} has a non-finite input gain (r, w_in or tau out of range)")
    if np.allclose(gain, 1.0, rtol=_UNIT_GAIN_RTOL, atol=0.0):
        return None
    return Scale(torch.from_numpy(gain.astype(np.float32)))


class _Importer:
    def __init__(self, dt: float, discretization: str, backend: str, metadata_surrogate: bool, dtype: torch.dtype):
        self.nir = _nir()
        self.dtype = dtype
        self.dt, self.discretization, self.backend = dt, discretization, backend
        self.metadata_surrogate = metadata_surrogate

    def surrogate(self, node: Any) -> Surrogate | str:
        name, slope = _meta(node, "surrogate"), _meta(node, "slope")
        if self.metadata_surrogate and name in SURROGATES:
            return make_surrogate(name, slope=float(slope) if slope is not None else None)
        return "fast_sigmoid"

    def tensor(self, a: Any) -> Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(self.dtype)

    def decay(self, tau: Any) -> tuple[np.ndarray, np.ndarray]:
        return import_decay(_f64(tau), self.dt, self.discretization)

    def recurrent(self, name: str, graph: Any) -> list[tuple[str, nn.Module, bool]]:
        """A subgraph ``input -> neuron (<-> Linear W_rec) -> output``: one recurrent :class:`LIF`."""
        nir = self.nir
        kinds = {type(n) for n in graph.nodes.values()}
        neurons = [k for k, n in graph.nodes.items() if isinstance(n, (nir.LIF, nir.CubaLIF, nir.IF))]
        weights = [k for k, n in graph.nodes.items() if isinstance(n, (nir.Linear, nir.Affine))]
        if (len(graph.nodes) != 4 or not {nir.Input, nir.Output} <= kinds or len(neurons) != 1 or len(weights) != 1
                or {(neurons[0], weights[0]), (weights[0], neurons[0])} - {tuple(e) for e in graph.edges}):
            raise ValueError(f"from_nir: node {name!r} is a subgraph other than a recurrent layer (input -> "
                             f"LIF/CubaLIF/IF <-> Linear -> output); found {sorted(t.__name__ for t in kinds)}")
        lin = graph.nodes[weights[0]]
        if isinstance(lin, nir.Affine) and np.any(np.asarray(lin.bias) != 0):
            raise ValueError(f"from_nir: the recurrent weights of {name!r} have a bias; spikegrad's recurrent layers "
                             "have none")
        mods = self.node(name, graph.nodes[neurons[0]], None, recurrent=self.tensor(lin.weight))
        return mods

    def node(self, name: str, node: Any, prev: Any, threshold: Any = None,
             recurrent: Tensor | None = None) -> list[tuple[str, nn.Module, bool]]:
        """The modules of one node: ``(name, module, spiking)``. ``threshold``: the ``Threshold``
        node after an ``LI``/``CubaLI``/``I`` that :func:`to_nir` wrote for a neuron without reset;
        the pair becomes one ``LIF``/``IF`` with ``reset="none"``."""
        nir = self.nir
        who = f"{name} ({type(node).__name__})"
        if isinstance(node, (nir.LIF, nir.CubaLIF, nir.LI, nir.CubaLI, nir.IF, nir.I)):
            if hasattr(node, "v_leak") and not np.allclose(_f64(node.v_leak), 0.0):
                raise ValueError(f"from_nir: {who} has v_leak != 0; spikegrad neurons relax to 0. Shift v_threshold "
                                 "and v_reset by -v_leak and add the constant current to the previous layer's bias")
            gain = _f64(node.r)
            if isinstance(node, (nir.IF, nir.I)):
                tau_mem, tau_syn, gain = np.inf, 0.0, gain * self.dt
            else:
                dm, fm = self.decay(node.tau_mem if hasattr(node, "tau_mem") else node.tau)
                tau_mem, gain = _tau_steps(dm), gain * fm
                tau_syn = 0.0
                if hasattr(node, "tau_syn"):
                    ds, fs = self.decay(node.tau_syn)
                    tau_syn, gain = _tau_steps(ds), gain * fs * _f64(node.w_in)
            scale = _gain_module(np.broadcast_to(gain, np.shape(_f64(node.r))).copy(), who)
            out = [] if scale is None else [(f"{name}.gain", scale, False)]
            if isinstance(node, (nir.LI, nir.CubaLI, nir.I)) and threshold is None:
                neuron = LI(tau_mem=_constant(np.broadcast_to(tau_mem, np.shape(node.r))),
                            tau_syn=_constant(np.broadcast_to(tau_syn, np.shape(node.r))), backend="auto")
                return out + [(name, neuron, False)]
            tm = _constant(np.broadcast_to(tau_mem, np.shape(node.r)))
            ts = _constant(np.broadcast_to(tau_syn, np.shape(node.r)))
            if threshold is not None:
                kw = dict(v_th=_constant(threshold.threshold), reset="none", v_reset=0.0)
            else:
                kw = dict(v_th=_constant(node.v_threshold), reset="zero", v_reset=_constant(node.v_reset))
            kw.update(surrogate=self.surrogate(node), backend=self.backend)
            v_reset = kw["v_reset"]
            if isinstance(v_reset, Tensor):
                raise ValueError(f"from_nir: {who} has per-neuron v_reset values; spikegrad neurons share one v_reset")
            detach = _meta(node, "detach_reset")
            kw.update(detach_reset=True if detach is None else bool(detach))
            if recurrent is not None:  # the gain scales the recurrent input as the external one
                g = torch.as_tensor(np.broadcast_to(gain, (recurrent.shape[0],)).copy(), dtype=recurrent.dtype)
                w_rec = recurrent if scale is None else recurrent * g[:, None]
                neuron = LIF(tau_mem=tm, tau_syn=ts, recurrent=recurrent.shape[0], **kw)
                with torch.no_grad():
                    neuron.w_rec.copy_(w_rec)
            else:
                neuron = IF(**kw) if isinstance(node, (nir.IF, nir.I)) else LIF(tau_mem=tm, tau_syn=ts, **kw)
            return out + [(name, neuron, True)]
        if isinstance(node, nir.Threshold):
            return [(name, Threshold(self.tensor(node.threshold)),
                     not isinstance(prev, nir.SumPool2d))]
        if isinstance(node, (nir.Linear, nir.Affine)):
            w = self.tensor(node.weight)
            if w.dim() != 2:
                raise ValueError(f"from_nir: {who} has a weight of shape {tuple(w.shape)}; only [out, in] is supported")
            bias = isinstance(node, nir.Affine)
            if _meta(node, "spikegrad") == "SparseInputLinear":
                density = _meta(node, "max_density")
                lin = SparseInputLinear(w.shape[1], w.shape[0], bias=bias, dtype=self.dtype,
                                        max_density=0.05 if density is None else float(density))
            else:
                lin = nn.Linear(w.shape[1], w.shape[0], bias=bias, dtype=self.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                if bias:
                    lin.bias.copy_(self.tensor(node.bias))
            return [(name, SeqWise(lin), False)]
        if isinstance(node, nir.Conv2d):
            w = self.tensor(node.weight)
            padding = node.padding if isinstance(node.padding, str) else _ints(node.padding)
            conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                             stride=_ints(node.stride), padding=padding, dilation=_ints(node.dilation),
                             groups=int(node.groups), bias=True, dtype=self.dtype)
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(self.tensor(node.bias))
            if not torch.any(conv.bias != 0):
                conv.bias = None
            return [(name, SeqWise(conv), False)]
        if isinstance(node, nir.Flatten):
            start, end = int(node.start_dim), int(node.end_dim)
            return [(name, SeqWise(nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)),
                     False)]
        if isinstance(node, nir.SumPool2d):
            return [(name, SeqWise(SumPool2d(_ints(node.kernel_size, 2), _ints(node.stride, 2),
                                             _ints(node.padding, 2))), False)]
        if isinstance(node, nir.AvgPool2d):
            return [(name, SeqWise(nn.AvgPool2d(_ints(node.kernel_size, 2), _ints(node.stride, 2),
                                                _ints(node.padding, 2))), False)]
        if isinstance(node, nir.Scale):
            return [(name, Scale(self.tensor(node.scale)), False)]
        raise ValueError(f"from_nir: {who} is not supported; supported are Input, Output, Linear, Affine, Conv2d, "
                         "Flatten, SumPool2d, AvgPool2d, Scale, Threshold, LIF, CubaLIF, LI, CubaLI, IF and I")


def _ints(v: Any, n: int = 2) -> tuple[int, ...]:
    a = np.asarray(v).ravel()
    return tuple(int(x) for x in (np.repeat(a, n) if a.size == 1 else a))


def from_nir(graph_or_path: Any, dt: float | None = None, discretization: str | None = None,
             backend: str = "auto", surrogate_from_metadata: bool = True,
             dtype: torch.dtype = torch.float32) -> NIRNetwork:
    """Build a spikegrad network from a NIR graph or ``.nir`` file.

    Args:
        graph_or_path: a ``nir.NIRGraph`` or the path of a ``.nir`` file.
        dt: step length (s). None: the graph's ``dt`` metadata (graphs written by :func:`to_nir`).
        discretization: ``"exact"`` or ``"euler"``; None: the graph's metadata. Graphs from
            snnTorch, Norse or SpikingJelly carry neither: pass the step their exporter assumed
            (snnTorch 1e-4 s, Norse 1e-3 s by default) and ``discretization="euler"``.
        backend: backend of the LIF/IF modules (:data:`spikegrad.kernels.BACKENDS`).
        surrogate_from_metadata: use the surrogate (name, slope) stored by :func:`to_nir`; else
            ``fast_sigmoid``. Only gradients depend on it.
        dtype: dtype of the built network (float64 keeps a float64 graph exact).
    Returns:
        a :class:`NIRNetwork` on the CPU; ``forward(x_seq [T, B, *input_shape])``.
    Raises:
        ValueError: no dt/discretization given or stored, a node that spikegrad cannot build
            (``v_leak != 0``, branches, recurrence, unknown types), euler time constants < dt.
    """
    nir = _nir()
    graph = nir.read(str(graph_or_path)) if isinstance(graph_or_path, (str, Path)) else graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir: expected a nir.NIRGraph or a path, got {type(graph_or_path).__name__}")
    stored_dt, stored_disc = _meta(graph, "dt"), _meta(graph, "discretization")
    for arg, stored, label in ((dt, stored_dt, "dt"), (discretization, stored_disc, "discretization")):
        if arg is not None and stored is not None and arg != stored:
            warnings.warn(f"from_nir: {label}={arg!r} overrides the graph's {label}={stored!r}; the imported "
                          "network differs from the exported one", stacklevel=2)
    dt = dt if dt is not None else stored_dt
    discretization = discretization if discretization is not None else stored_disc
    if dt is None or discretization is None:
        missing = " and ".join(n for n, v in (("dt", dt), ("discretization", discretization)) if v is None)
        raise ValueError(f"from_nir: the graph does not say its {missing}; pass them, e.g. from_nir(graph, dt=1e-3, "
                         "discretization='euler') for a graph from snnTorch (dt=1e-4), Norse (dt=1e-3) or "
                         "SpikingJelly, 'exact' for a graph exported exactly")
    dt = _check_dt("from_nir", dt)
    discretization = _check_discretization("from_nir", discretization)
    reset = _meta(graph, "reset")
    if isinstance(reset, str) and "lossy" in reset:
        warnings.warn("from_nir: the graph says its subtract-reset neurons were exported as reset-to-zero (lossy); "
                      "the imported network resets to zero", stacklevel=2)
    order = _chain_nodes(graph)
    importer = _Importer(dt, discretization, backend, surrogate_from_metadata, dtype)
    names, layers, spiking = [], [], []
    fused = set()
    for k, key in enumerate(order[1:-1], start=1):
        node = graph.nodes[key]
        if key in fused:
            continue
        if isinstance(node, nir.NIRGraph):
            for n, m, s in importer.recurrent(key, node):
                names.append(n)
                layers.append(m)
                spiking.append(s)
            continue
        after = graph.nodes[order[k + 1]]
        threshold = None
        if (isinstance(node, (nir.LI, nir.CubaLI, nir.I)) and isinstance(after, nir.Threshold)
                and _meta(node, "reset") == "none" and order[k + 1] == f"{key}.threshold"):
            threshold = after
            fused.add(order[k + 1])
        for n, m, s in importer.node(key, node, graph.nodes[order[k - 1]], threshold):
            names.append(n)
            layers.append(m)
            spiking.append(s)
    in_shape = _drop_batch_axis(tuple(int(s) for s in np.asarray(graph.nodes[order[0]].input_type["input"]).ravel()),
                                layers)
    metadata = {k: _meta(graph, k) for k in (graph.metadata or {})}
    return NIRNetwork(names, layers, spiking, in_shape, {**metadata, "dt": dt, "discretization": discretization}
                      ).to(dtype)


def _drop_batch_axis(shape: tuple[int, ...], layers: list[nn.Module]) -> tuple[int, ...]:
    """The Input node's shape without a leading batch axis of 1, which exporters built on nirtorch
    write (``[1, 256]`` before a ``Linear`` of 256 inputs), with a warning."""
    first = layers[0].module if layers and isinstance(layers[0], SeqWise) else None
    fits = (isinstance(first, nn.Linear) and len(shape) == 2 and shape[1] == first.in_features) or (
        isinstance(first, nn.Conv2d) and len(shape) == 4 and shape[1] == first.in_channels)
    if shape[:1] == (1,) and fits:
        warnings.warn(f"from_nir: the Input node has shape {list(shape)}, whose leading 1 is a batch axis (NIR shapes "
                      f"have none); using {list(shape[1:])}", stacklevel=3)
        return shape[1:]
    return shape


def load_nir(path: str | Path, **kwargs) -> NIRNetwork:
    """:func:`from_nir` of a ``.nir`` file (same keyword arguments)."""
    return from_nir(Path(path), **kwargs)
