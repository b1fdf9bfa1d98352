"""NIR import: :func:`from_nir` builds a :class:`~spikegrad.interop.NIRNetwork` from a graph or ``.nir`` file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..kernels.sparse import SparseInputLinear
from ..models import SeqWise
from ..neurons import IF, LI, LIF
from ..surrogates import SURROGATES, Surrogate, make_surrogate
from .contract import _UNIT_GAIN_RTOL, _check_discretization, _check_dt, _nir, _tau_steps, import_decay
from .runtime import NIRNetwork, Scale, SumPool2d, Threshold

__all__ = ["from_nir", "load_nir"]


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
