"""NIR export: :func:`to_nir`, :func:`check_nir_export`, :func:`save_nir` and the generic :class:`Exporter`.

A model reaches the exporter through :func:`walk`, dispatched on the model's class (one walker
per model family, registered by the interop module of the family's package: :mod:`.walk_models`,
:mod:`.walk_sharpening`, :mod:`.walk_conversion`; :class:`~spikegrad.interop.NIRNetwork`'s is
here). A walker hands the layers and neurons to :meth:`Exporter.module` in execution order. A
layer becomes NIR nodes through :func:`export_layer`, dispatched on the layer's class: the torch
layers and the NIR runtime modules are registered here, the layers a family brings (the Whetstone
binary layers and decoders) by that family's module; neurons go to :meth:`Exporter.neuron`.
:func:`for_check` names what :func:`check_nir_export` exports in place of a model not yet trained.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..kernels.sparse import SparseInputLinear
from ..models import SeqWise
from ..neurons import ALIF, IF, LI, LIF
from ..surrogates import SURROGATES, Surrogate
from .contract import _check_discretization, _check_dt, _nir, export_constants
from .runtime import NIRNetwork, Scale, SumPool2d, Threshold

__all__ = ["to_nir", "check_nir_export", "save_nir", "Exporter", "walk", "export_layer", "for_check"]


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


class Exporter:
    """Builds the node list of :func:`to_nir`.

    A walker (:func:`walk`) calls :meth:`start` with its model's input shape, then :meth:`module`
    for each layer and neuron in execution order; a walker that builds its nodes itself (the
    converted networks) calls :meth:`add` and sets ``in_shape`` and ``shape``.

    Args:
        dt: step (s). discretization: ``"exact"`` or ``"euler"``. lossy_reset, dtype: as in
            :func:`to_nir`.
        input_shape: the caller's shape of one input step (no batch), or None: the model's own.
    Attributes:
        in_shape: the input node's shape, once started. shape: one step's shape (no batch) after
            the nodes so far. binary: whether that signal is spikes in {0, 1}.
    """

    def __init__(self, dt: float, discretization: str, lossy_reset: bool, dtype: torch.dtype,
                 input_shape: Sequence[int] | None = None):
        self.nir = _nir()
        self.dt, self.discretization, self.lossy_reset = dt, discretization, lossy_reset
        self.dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.nodes: list[tuple[str, Any]] = []
        self.resets: set[str] = set()
        self.input_shape = input_shape
        self.in_shape: tuple[int, ...] | None = None
        self.shape: tuple[int, ...] | None = None
        self.binary = False

    def start(self, shape: Sequence[int] | None, model: nn.Module) -> None:
        """Begin the chain at the caller's ``input_shape``, else at ``shape`` (``model``'s own input
        shape, None if it has none); nothing once begun (a walker called for a part of a model)."""
        if self.in_shape is not None:
            return
        if self.input_shape is not None:
            shape = self.input_shape
        if shape is None:
            raise ValueError(f"to_nir: the input shape of a {type(model).__name__} is not known; pass "
                             "input_shape=(...) (one step, without batch), e.g. input_shape=(784,)")
        self.in_shape = self.shape = tuple(int(s) for s in shape)

    def module(self, name: str, m: nn.Module) -> None:
        """The nodes of one layer or neuron module ``m`` at the current shape; updates ``shape`` and ``binary``."""
        if isinstance(m, (LIF, LI, ALIF)):
            self.neuron(name, m, self.shape)
            self.binary = isinstance(m, (LIF, ALIF))  # spikes in {0, 1}
        else:
            self.binary = export_layer(m, self, name)
            self.shape = _run_step(m, self.shape)

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


# ---------------------------------------------------------------------------------------------
# Model families: one walker each
# ---------------------------------------------------------------------------------------------

@functools.singledispatch
def walk(model: nn.Module, ex: Exporter, prefix: str = "") -> None:
    """Export ``model`` through ``ex``: its layers, in execution order, to :meth:`Exporter.module`.

    One implementation per model family, registered with ``@walk.register(cls)`` (chosen by the
    model's class, its nearest registered base otherwise). ``prefix`` starts the node names of a
    model walked as a part of another (``"head."``). Unregistered classes cannot be exported.
    """
    raise ValueError(f"to_nir: cannot export a {type(model).__name__}; supported are SpikingMLP, SpikingConvNet, "
                     "NIRNetwork, Whetstone models and their BinaryNet, converted SNNs, and nn.Sequential / "
                     "SeqWise chains of the supported layers (an ANN is exported after conversion: "
                     "to_nir(spikegrad.conversion.ann_to_snn(ann, data, reset='zero'), ...))")


@walk.register(NIRNetwork)
def walk_nir_network(model: NIRNetwork, ex: Exporter, prefix: str = "") -> None:
    """An imported network: its modules under their NIR node names."""
    ex.start(model.input_shape, model)
    for name, layer in zip(model.names, model.layers):
        ex.module(name, layer.module if isinstance(layer, SeqWise) else layer)


@functools.singledispatch
def for_check(model: nn.Module) -> nn.Module:
    """What :func:`check_nir_export` exports in place of ``model``: ``model`` itself, unless its
    family exports only once trained and registers (``@for_check.register(cls)``) the trained
    limit to check instead (a Whetstone model: its fully sharpened binary net)."""
    return model


# ---------------------------------------------------------------------------------------------
# Layers: one mapping each
# ---------------------------------------------------------------------------------------------

@functools.singledispatch
def export_layer(m: nn.Module, ex: Exporter, name: str) -> bool:
    """Add the NIR nodes of the stateless layer ``m`` (input shape ``ex.shape``) to ``ex``.

    One implementation per layer class, registered with ``@export_layer.register(cls)``.
    Returns:
        whether the layer's output is spikes in {0, 1} (``ex.binary`` for layers that pass their
        input's kind on).
    """
    raise ValueError(f"to_nir: {name} ({type(m).__name__}) has no NIR mapping; supported are Linear, Conv2d, Flatten, "
                     "MaxPool2d (of spikes), AvgPool2d, LIF, IF, LI, Scale, Threshold and the Whetstone binary layers")


@export_layer.register(nn.Linear)
def _linear(m: nn.Linear, ex: Exporter, name: str) -> bool:
    nir = ex.nir
    w = ex.array(m.weight)
    node = nir.Linear(weight=w) if m.bias is None else nir.Affine(weight=w, bias=ex.array(m.bias))
    if isinstance(m, SparseInputLinear):
        node.metadata.update({"spikegrad": "SparseInputLinear", "max_density": float(m.max_density)})
    ex.add(name, node)
    return False


@export_layer.register(nn.Conv2d)
def _conv2d(m: nn.Conv2d, ex: Exporter, name: str) -> bool:
    ex.add(name, ex.conv(f"{name} ({type(m).__name__})", m.weight, m.bias, m, ex.shape))
    return False


@export_layer.register(nn.Flatten)
def _flatten(m: nn.Flatten, ex: Exporter, name: str) -> bool:
    if m.start_dim != 1 or m.end_dim != -1:
        raise ValueError(f"to_nir: {name} ({type(m).__name__}) flattens dims {m.start_dim}..{m.end_dim}; only "
                         "flattening everything but the batch (start_dim=1, end_dim=-1) is supported")
    if len(ex.shape) > 1:
        ex.add(name, ex.nir.Flatten(input_type={"input": np.array(ex.shape)}, start_dim=0, end_dim=-1))
    return ex.binary


@export_layer.register(nn.MaxPool2d)
def _max_pool2d(m: nn.MaxPool2d, ex: Exporter, name: str) -> bool:
    nir = ex.nir
    k, s, p, dil = (_pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation))
    if not ex.binary or dil != (1, 1) or m.ceil_mode or p != (0, 0):
        why = ("its input is not spikes (max-pooling of spikes is an OR, exported as SumPool2d + "
               "Threshold(0.5); NIR has no max-pooling of other signals)" if not ex.binary
               else "only padding=0, dilation=1, ceil_mode=False are supported")
        raise ValueError(f"to_nir: cannot export {name} ({type(m).__name__}): {why}")
    ex.add(name, nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p)))
    out = _pool_shape(ex.shape, k, s, p)
    thr = nir.Threshold(threshold=np.full(out, 0.5, dtype=np.float64 if ex.dtype == torch.float64 else np.float32))
    thr.metadata.update({"spikegrad": "max-pooling of spikes"})
    ex.add(f"{name}.max", thr)
    return ex.binary


@export_layer.register(nn.AvgPool2d)
def _avg_pool2d(m: nn.AvgPool2d, ex: Exporter, name: str) -> bool:
    k, s, p = (_pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding))
    if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
        raise ValueError(f"to_nir: {name} ({type(m).__name__}): only ceil_mode=False, count_include_pad=True and no "
                         "divisor_override are supported")
    ex.add(name, ex.nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p)))
    return False


@export_layer.register(Scale)
def _scale(m: Scale, ex: Exporter, name: str) -> bool:
    ex.add(name, ex.nir.Scale(scale=ex.array(m.scale, ex.shape)))
    return False


@export_layer.register(Threshold)
def _threshold(m: Threshold, ex: Exporter, name: str) -> bool:
    ex.add(name, ex.nir.Threshold(threshold=ex.array(m.threshold, ex.shape)))
    return True


@export_layer.register(SumPool2d)
def _sum_pool2d(m: SumPool2d, ex: Exporter, name: str) -> bool:
    ex.add(name, ex.nir.SumPool2d(kernel_size=np.array(m.kernel_size), stride=np.array(m.stride),
                                  padding=np.array(m.padding)))
    return False


@export_layer.register(nn.Identity)
@export_layer.register(nn.Dropout)
def _no_node(m: nn.Module, ex: Exporter, name: str) -> bool:
    if isinstance(m, nn.Dropout) and m.training:
        raise ValueError(f"to_nir: {name} ({type(m).__name__}) is in training mode; call model.eval() first")
    return ex.binary


# ---------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------

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
    ex = Exporter(dt, discretization, bool(lossy_reset), dtype, input_shape)
    walk(model, ex)
    if not ex.nodes:
        raise ValueError("to_nir: the model has no layers to export")
    names = ["input", *(n for n, _ in ex.nodes), "output"]
    if len(set(names)) != len(names):
        raise ValueError(f"to_nir: node names collide: {names}")
    nodes = {"input": nir.Input(input_type={"input": np.array(ex.in_shape)}), **dict(ex.nodes),
             "output": nir.Output(output_type={"output": np.array(ex.shape)})}
    edges = list(zip(names[:-1], names[1:]))
    metadata = {"producer": f"spikegrad {__version__}", "dt": dt, "discretization": discretization,
                "reset": ", ".join(sorted(ex.resets)) or "no spiking neurons"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=True)


def check_nir_export(model: nn.Module, **kwargs) -> None:
    """Raise what :func:`to_nir` (same keyword arguments) would raise for ``model``, e.g. before
    training rather than after; a Whetstone model is checked as if it were fully sharpened."""
    model = for_check(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lossy_reset warns again at the real export
        to_nir(model, **kwargs)


def save_nir(model: nn.Module, path: str | Path, **kwargs) -> Any:
    """:func:`to_nir` (same keyword arguments) written to a ``.nir`` (HDF5) file; returns the graph."""
    nir = _nir()
    graph = to_nir(model, **kwargs)
    nir.write(str(path), graph)
    return graph


def li_as_lif(graph: Any, names: Sequence[str] | None = None) -> Any:
    """The graph with its leaky integrators as neurons that never fire, for importers without ``LI`` nodes.

    snnTorch, Norse and SpikingJelly import no ``LI``/``CubaLI`` node (a readout); a ``LIF``/``CubaLIF``
    with the same constants, ``v_threshold = inf`` and ``v_reset = 0`` has the same equations, and the
    peer's neuron state then holds the readout's membrane.

    Args:
        graph: a ``nir.NIRGraph`` (e.g. from :func:`to_nir`); it is not changed.
        names: the ``LI``/``CubaLI`` nodes to replace; None: every one of them.
    Returns:
        a new ``nir.NIRGraph`` with the same edges and metadata; the new nodes' thresholds and resets are
        float32 arrays of the node's shape.
    Raises:
        ValueError: a name that is not an ``LI`` or ``CubaLI`` node of the graph.
    """
    nir = _nir()
    leaky = {k for k, node in graph.nodes.items() if isinstance(node, (nir.LI, nir.CubaLI))}
    names = sorted(leaky) if names is None else list(names)
    bad = [k for k in names if k not in leaky]
    if bad:
        raise ValueError(f"li_as_lif: {bad} are not LI or CubaLI nodes of the graph (those are {sorted(leaky)})")
    nodes = dict(graph.nodes)
    for name in names:
        li = nodes[name]
        cuba = isinstance(li, nir.CubaLI)
        n = (li.tau_mem if cuba else li.tau).shape
        kw = {"r": li.r, "v_leak": li.v_leak, "v_threshold": np.full(n, np.inf, dtype=np.float32),
              "v_reset": np.zeros(n, np.float32)}
        nodes[name] = (nir.CubaLIF(tau_syn=li.tau_syn, tau_mem=li.tau_mem, w_in=li.w_in, **kw) if cuba
                       else nir.LIF(tau=li.tau, **kw))
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata))


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
