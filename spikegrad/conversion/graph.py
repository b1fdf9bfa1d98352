"""Tracing a trained ANN into a flat program of operations that have a spiking counterpart.

:func:`fold_batchnorm` traces the model with ``torch.fx`` (on a deep copy in eval mode) and folds
every batch-norm into the Conv2d / Linear that feeds it. :func:`trace` turns the folded graph into a
:class:`Program`: a list of :class:`Node` in topological order, each one of

=========  ===================================================================================
kind       source
=========  ===================================================================================
input      the single placeholder (the model's input tensor)
conv       ``nn.Conv2d`` (padding mode "zeros", any stride / dilation / groups)
linear     ``nn.Linear`` on ``[B, N]`` inputs
scale      a batch-norm that could not be folded (per-channel ``a * x + b`` on dim 1)
avgpool    ``nn.AvgPool2d`` / ``F.avg_pool2d``
maxpool    ``nn.MaxPool2d`` / ``F.max_pool2d``
relu       ``nn.ReLU`` / ``F.relu`` / ``torch.relu`` / ``.relu()``: becomes an IF neuron layer
add        ``a + b`` of two activations (residual connections)
call       shape-only operations: ``nn.Flatten`` / ``nn.Unflatten``, flatten, view, reshape, cat,
           squeeze, unsqueeze, contiguous, indexing, and integer arithmetic on sizes
           (``x.shape[0]``, ``x.size(0)``)
=========  ===================================================================================

``Dropout``, ``Identity`` and a trailing softmax / log-softmax (argmax-invariant) are dropped. Any
other layer raises :class:`ConversionError` naming it, its position in the traced graph and what to
replace it with.
"""

from __future__ import annotations

import builtins
import copy
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

__all__ = ["SUPPORTED", "ConversionError", "Node", "Program", "fold_batchnorm", "forward_ann", "run_ann", "trace"]

SUPPORTED = ("Conv2d, Linear, ReLU, BatchNorm1d/2d, AvgPool2d, MaxPool2d, Flatten, Dropout, Identity, "
             "residual additions, concatenation and reshapes")
SYNAPTIC = ("conv", "linear", "scale", "avgpool")  # kinds whose inputs drive synapses

_HINTS = {
    nn.LeakyReLU: "nn.ReLU", nn.PReLU: "nn.ReLU", nn.ReLU6: "nn.ReLU", nn.ELU: "nn.ReLU",
    nn.GELU: "nn.ReLU", nn.SiLU: "nn.ReLU", nn.Sigmoid: "nn.ReLU", nn.Tanh: "nn.ReLU",
    nn.Hardtanh: "nn.ReLU", nn.Softplus: "nn.ReLU", nn.Mish: "nn.ReLU",
    nn.AdaptiveAvgPool2d: "nn.AvgPool2d with a fixed kernel_size",
    nn.AdaptiveMaxPool2d: "nn.MaxPool2d with a fixed kernel_size",
    nn.Conv1d: "nn.Conv2d", nn.Conv3d: "nn.Conv2d", nn.ConvTranspose2d: "nn.Conv2d",
    nn.LayerNorm: "nn.BatchNorm1d/2d", nn.GroupNorm: "nn.BatchNorm2d",
    nn.InstanceNorm2d: "nn.BatchNorm2d",
}
_ACTIVATIONS = ("sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu", "relu6", "hardtanh", "softplus", "mish")
_RELU_FNS = (F.relu, torch.relu, torch.relu_)
_ADD_FNS = (operator.add, operator.iadd, torch.add)
_SOFTMAX_FNS = (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax)
_DROP_FNS = (F.dropout, F.dropout1d, F.dropout2d, torch.dropout)
_SHAPE_FNS = (torch.flatten, torch.reshape, torch.cat, torch.concat, torch.squeeze, torch.unsqueeze,
              operator.getitem)
_SHAPE_METHODS = ("view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "view_as",
                  "reshape_as", "__getitem__")
_MAXPOOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVGPOOL_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


class ConversionError(ValueError):
    """The model contains an operation without a spiking counterpart (the message says which)."""


@dataclass(frozen=True)
class _Ref:
    """Placeholder in :attr:`Node.args` for the value of program node ``index``."""

    index: int


@dataclass
class Node:
    """One operation of a :class:`Program`.

    Attributes:
        name: the module path for layers (``features.0``), else the ``torch.fx`` node name;
            unique within the program (``relu#2`` for a module called twice).
        where: human-readable origin (``layer 'features.0' (Conv2d)``), used in messages.
        kind: one of ``input, conv, linear, scale, avgpool, maxpool, relu, add, call``.
        inputs: program indices of the values it reads (for ``call``: every ``_Ref`` in ``args``).
        params: tensors: ``weight``/``bias`` (conv, linear), ``scale``/``shift`` (scale).
        conf: keyword arguments of the functional op (stride, padding, kernel_size, ...).
        fn: for ``call``: the callable or the method name; ``args``/``kwargs`` hold ``_Ref``\\ s.
        gains: per input, None or a multiplier ``[*shape]`` applied to the input before the op
            (set by normalisation where a scale cannot be folded into weights).
    """

    name: str
    where: str
    kind: str
    inputs: tuple[int, ...] = ()
    params: dict[str, Tensor] = field(default_factory=dict)
    conf: dict[str, Any] = field(default_factory=dict)
    fn: Any = None
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    gains: tuple[Tensor | None, ...] = ()


@dataclass
class Program:
    """A traced network: nodes in topological order and the index of the output node.

    After :meth:`infer`, ``shapes[i]`` is the per-sample shape of node ``i`` (``None`` for
    structural values such as sizes). Normalisation fills ``lambdas`` (node index -> scale
    factor per channel ``[C]`` or ``[1]``, ANN units per unit rate) and ``readout_gain``.
    """

    nodes: list[Node]
    out: int
    shapes: list[tuple[int, ...] | None] | None = None
    lambdas: dict[int, Tensor] = field(default_factory=dict)
    readout_gain: Tensor | None = None

    @property
    def neurons(self) -> list[int]:
        """Indices of the ``relu`` nodes (the IF layers of the SNN)."""
        return [i for i, n in enumerate(self.nodes) if n.kind == "relu"]

    def users(self) -> list[int]:
        """Number of nodes reading each node's value as data (the output counts as one reader).

        Once shapes are known, reads by structural nodes (``x.size(0)``, ``x.shape``) do not count.
        """
        count = [0] * len(self.nodes)
        for k, n in enumerate(self.nodes):
            if self.shapes is None or self.shapes[k] is not None:
                for j in n.inputs:
                    count[j] += 1
        count[self.out] += 1
        return count

    def layer_name(self, i: int) -> str:
        """The name of node ``i`` (module path such as ``features.0``, else the fx node name)."""
        return self.nodes[i].name

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Program:
        """A copy with every parameter and gain moved to ``device`` / ``dtype``."""
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        nodes = [copy.copy(n) for n in self.nodes]
        for n in nodes:
            n.params = {k: mv(v) for k, v in n.params.items()}
            n.gains = tuple(mv(g) for g in n.gains)
        return Program(nodes, self.out, self.shapes, {k: mv(v) for k, v in self.lambdas.items()},
                       mv(self.readout_gain))

    def infer(self, x: Tensor) -> None:
        """Records per-sample shapes from one example batch and checks the operations' inputs.

        Args:
            x: an example input batch ``[B, ...]`` as the model takes it.
        Raises:
            ConversionError: an operation that is only structural (e.g. ``*``) is applied to
                activations, or an input has a rank the spiking layer does not support.
        """
        vals = run_ann(self, x)
        act = [False] * len(self.nodes)  # act: the value is an activation [B, ...]
        for i, (n, v) in enumerate(zip(self.nodes, vals)):
            ins = [act[j] for j in n.inputs]
            if n.kind == "add" and not all(ins):
                if any(ins):
                    _fail(n.where, "adding a constant to activations is not supported",
                          "the bias of the preceding Conv2d/Linear")
                self.nodes[i] = Node(n.name, n.where, "call", n.inputs, fn=operator.add,
                                     args=tuple(_Ref(j) for j in n.inputs), conf={"method": False})
                n = self.nodes[i]
            act[i] = n.kind != "call" or (isinstance(v, Tensor) and any(ins))
            if n.kind == "call" and n.conf.get("structural_only") and any(ins):
                _fail(n.where, "this operation on activations has no spiking counterpart",
                      "a Conv2d/Linear holding the constant, or use " + SUPPORTED)
            if n.kind in ("conv", "maxpool", "avgpool") and vals[n.inputs[0]].dim() != 4:
                _fail(n.where, "2-d convolution and pooling need inputs [B, C, H, W]", "a reshape first")
            if n.kind == "linear" and vals[n.inputs[0]].dim() != 2:
                _fail(n.where, "Linear is supported on [B, N] inputs only", "a flatten first")
        out = vals[self.out]
        if not (act[self.out] and out.dim() == 2):
            raise ConversionError("The model output must be one tensor of class scores [B, C]; got "
                                  f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}.")
        self.shapes = [tuple(v.shape[1:]) if a else None for v, a in zip(vals, act)]


def _fail(where: str, why: str, hint: str) -> None:
    raise ConversionError(f"{where}: {why}; replace it with {hint}. Supported: {SUPPORTED}.")


# ------------------------------------------------------------------------------ tracing
def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow, unsupported Python constructs
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}: {e}. The forward pass must "
                              "not branch on tensor values; build it from " + SUPPORTED + ".") from e


def _set_module(root: nn.Module, qualname: str, module: nn.Module) -> None:
    parent, _, name = qualname.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """Traces a deep copy of ``model`` in eval mode and folds batch-norms into the preceding layer.

    ``Conv2d -> BatchNorm2d`` and ``Linear -> BatchNorm1d`` pairs become one layer with
    ``w' = w * g / sqrt(var + eps)`` and ``b' = (b - mean) * g / sqrt(var + eps) + beta`` when the
    layer feeds only the batch-norm and each module is called once. Other batch-norms stay (they
    become per-channel ``scale`` nodes). ``model`` itself is not modified.

    Args:
        model: a trained ``nn.Module``.
    Returns:
        an ``fx.GraphModule`` in eval mode computing the same function as ``model.eval()``.
    """
    gm = _symbolic_trace(copy.deepcopy(model).eval())
    for k, node in enumerate(gm.graph.nodes):  # positions in the model's own graph, for messages
        node.meta["position"] = k
    gm.meta["graph_size"] = k + 1
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        bn, prev = modules[node.target], node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and calls[prev.target] == 1 and calls[node.target] == 1 and bn.running_mean is not None):
            continue
        layer = modules[prev.target]
        if type(layer) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d):
            fused = fuse_conv_bn_eval(layer, bn)
        elif type(layer) is nn.Linear and isinstance(bn, nn.BatchNorm1d) and layer.out_features == bn.num_features:
            fused = fuse_linear_bn_eval(layer, bn)
        else:
            continue
        _set_module(gm, prev.target, fused)
        modules[prev.target] = fused
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm.eval()


def _where(node: fx.Node, modules: dict[str, nn.Module], total: int) -> str:
    """``layer 'features.3' (LeakyReLU) at position 5 of 12 in the traced graph`` (positions before folding)."""
    if node.op == "call_module":
        what = f"layer '{node.target}' ({type(modules[node.target]).__name__})"
    elif node.op == "call_method":
        what = f"method .{node.target}() (node '{node.name}')"
    elif node.op == "call_function":
        what = f"function {getattr(node.target, '__name__', node.target)} (node '{node.name}')"
    else:
        what = f"{node.op} '{node.name}'"
    return f"{what} at position {node.meta.get('position', '?')} of {total} in the traced graph"


def _bind(args: tuple, kwargs: dict, names: tuple[str, ...]) -> dict[str, Any]:
    conf = dict(zip(names, args))
    conf.update({k: v for k, v in kwargs.items() if k in names})
    return conf


def _pool_conf(conf: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "count_include_pad": True,
                "divisor_override": None, "return_indices": False}
    out = {k: conf.get(k, defaults.get(k)) for k in names}
    if out["stride"] is None or out["stride"] == [] or out["stride"] == ():
        out["stride"] = out["kernel_size"]
    return out


def trace(model: nn.Module) -> Program:
    """Traces ``model`` (deep copy, eval mode, batch-norms folded) into a :class:`Program`.

    Args:
        model: a trained ``nn.Module`` with one tensor input and one ``[B, C]`` output.
    Returns:
        the :class:`Program` with parameters in ANN units (shapes unknown until :meth:`Program.infer`).
    Raises:
        ConversionError: naming the unsupported layer, its position and what to replace it with.
    """
    gm = fold_batchnorm(model)
    modules = dict(gm.named_modules())
    total = gm.meta["graph_size"]
    nodes: list[Node] = []
    index: dict[fx.Node, int] = {}
    dropped: list[fx.Node] = []
    out = None

    for fn in gm.graph.nodes:
        where = _where(fn, modules, total)
        name = str(fn.target) if fn.op == "call_module" else fn.name  # module path, e.g. "features.0"
        if any(n.name == name for n in nodes):  # a module called more than once
            name = f"{name}#{sum(n.name.split('#')[0] == name for n in nodes) + 1}"

        def add(kind, inputs=(), **kw):
            index[fn] = len(nodes)
            nodes.append(Node(name, where, kind, tuple(index[a] for a in inputs), **kw))

        def alias(src):
            if not isinstance(src, fx.Node):
                _fail(where, "expected an activation as input", SUPPORTED)
            index[fn] = index[src]

        def call(structural_only=False):
            refs = []

            def ref(a):
                refs.append(index[a])
                return _Ref(index[a])
            args = fx.node.map_arg(fn.args, ref)
            kwargs = fx.node.map_arg(fn.kwargs, ref)
            index[fn] = len(nodes)
            nodes.append(Node(name, where, "call", tuple(dict.fromkeys(refs)), fn=fn.target, args=args,
                              kwargs=kwargs, conf={"structural_only": structural_only,
                                                   "method": fn.op == "call_method"}))

        if fn.op == "placeholder":
            if any(n.kind == "input" for n in nodes):
                _fail(where, "models with more than one input are not supported",
                      "a model taking a single tensor")
            add("input")
        elif fn.op == "output":
            res = fn.args[0]
            if not isinstance(res, fx.Node):
                _fail(where, "the output must be a single tensor of class scores [B, C]",
                      "a model returning one tensor")
            out = index[res]
        elif fn.op == "get_attr":
            _fail(where, "direct use of a parameter or buffer in forward() is not supported",
                  "a layer (nn.Conv2d, nn.Linear, nn.BatchNorm) holding it")
        elif fn.op == "call_module":
            m = modules[fn.target]
            x = fn.args[0] if fn.args else None
            if type(m) is nn.Conv2d:
                if m.padding_mode != "zeros":
                    _fail(where, f"padding_mode={m.padding_mode!r} is not supported",
                          "nn.Conv2d with padding_mode='zeros'")
                if isinstance(m.padding, str):
                    _fail(where, f"padding={m.padding!r} is not supported", "explicit integer padding")
                add("conv", (x,), params={"weight": m.weight.detach().clone(),
                                          "bias": None if m.bias is None else m.bias.detach().clone()},
                    conf={"stride": m.stride, "padding": m.padding, "dilation": m.dilation, "groups": m.groups})
            elif type(m) is nn.Linear:
                add("linear", (x,), params={"weight": m.weight.detach().clone(),
                                            "bias": None if m.bias is None else m.bias.detach().clone()})
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if m.running_mean is None:
                    _fail(where, "batch-norm without running statistics cannot be converted",
                          "BatchNorm with track_running_stats=True")
                a = m.running_var.detach().add(m.eps).rsqrt()
                if m.affine:
                    a = a * m.weight.detach()
                b = -m.running_mean.detach() * a + (m.bias.detach() if m.affine else 0)
                add("scale", (x,), params={"scale": a, "shift": b})
            elif type(m) is nn.ReLU:
                add("relu", (x,))
            elif type(m) is nn.MaxPool2d:
                if m.return_indices:
                    _fail(where, "return_indices=True is not supported", "nn.MaxPool2d()")
                add("maxpool", (x,), conf={k: getattr(m, k) for k in _MAXPOOL_ARGS[:-1]})
            elif type(m) is nn.AvgPool2d:
                add("avgpool", (x,), conf={k: getattr(m, k) for k in _AVGPOOL_ARGS})
            elif type(m) in (nn.Flatten, nn.Unflatten):
                index[fn] = len(nodes)
                nodes.append(Node(name, where, "call", (index[x],), fn=copy.deepcopy(m), args=(_Ref(index[x]),),
                                  conf={"structural_only": False, "method": False}))
            elif isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.AlphaDropout)):
                alias(x)
            elif isinstance(m, (nn.Softmax, nn.LogSoftmax)):
                alias(x)
                dropped.append(fn)
            else:
                _fail(where, "no spiking counterpart", _HINTS.get(type(m), "a supported layer"))
        elif fn.op in ("call_function", "call_method"):
            t = fn.target
            method = fn.op == "call_method"
            targs = [a for a in fn.args if isinstance(a, fx.Node)]
            if (t in _RELU_FNS) or (method and t in ("relu", "relu_")):
                add("relu", (fn.args[0],))
            elif (t in _ADD_FNS or (method and t in ("add", "add_"))) and len(targs) == 2 \
                    and not (len(fn.args) > 2 or "alpha" in fn.kwargs):
                add("add", tuple(targs))
            elif t is F.max_pool2d:
                conf = _pool_conf(_bind(fn.args[1:], fn.kwargs, _MAXPOOL_ARGS), _MAXPOOL_ARGS)
                if conf.pop("return_indices"):
                    _fail(where, "return_indices=True is not supported", "F.max_pool2d(x, k)")
                add("maxpool", (fn.args[0],), conf=conf)
            elif t is F.avg_pool2d:
                add("avgpool", (fn.args[0],), conf=_pool_conf(_bind(fn.args[1:], fn.kwargs, _AVGPOOL_ARGS),
                                                              _AVGPOOL_ARGS))
            elif t in _DROP_FNS or (method and t in ("dropout",)):
                alias(fn.args[0])
            elif t in _SOFTMAX_FNS or (method and t in ("softmax", "log_softmax")):
                alias(fn.args[0])
                dropped.append(fn)
            elif t in _SHAPE_FNS or (method and t in _SHAPE_METHODS):
                call()
            elif method and t in ("size", "dim"):
                call()
            elif t is builtins.getattr and len(fn.args) == 2 and fn.args[1] in ("shape", "ndim"):
                call()
            elif not method and getattr(t, "__module__", None) in ("_operator", "operator", "builtins", "math"):
                call(structural_only=True)  # integer arithmetic on sizes; checked in Program.infer
            else:
                name_t = getattr(t, "__name__", str(t))
                _fail(where, "no spiking counterpart", "nn.ReLU" if name_t in _ACTIVATIONS else "a supported layer")
        else:  # pragma: no cover - fx has no other node kinds
            _fail(where, f"unknown node kind {fn.op!r}", SUPPORTED)

    for fn in dropped:  # a softmax may only be the last operation (it does not change argmax)
        if any(u.op != "output" for u in fn.users):
            _fail(_where(fn, modules, total),
                  "softmax is only supported as the final operation", "a membrane readout (drop it)")
    if out is None:  # pragma: no cover - every traced graph has an output
        raise ConversionError("the traced graph has no output")
    if not any(n.kind == "input" for n in nodes):
        raise ConversionError("the traced graph has no input")
    return Program(nodes, out)


# ----------------------------------------------------------------------------- evaluation
def _resolve(a: Any, vals: list) -> Any:
    if isinstance(a, _Ref):
        return vals[a.index]
    if isinstance(a, (tuple, list)):
        return type(a)(_resolve(b, vals) for b in a)
    if isinstance(a, dict):
        return {k: _resolve(v, vals) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_resolve(a.start, vals), _resolve(a.stop, vals), _resolve(a.step, vals))
    return a


def eval_call(node: Node, vals: list) -> Any:
    """Evaluates a ``call`` node on the current values (tensors, sizes) of its inputs."""
    args, kwargs = _resolve(node.args, vals), _resolve(node.kwargs, vals)
    if node.conf.get("method"):
        return getattr(args[0], node.fn)(*args[1:], **kwargs)
    return node.fn(*args, **kwargs)


def apply_stateless(node: Node, xs: list, vals: list) -> Any:
    """Applies a stateless node (everything but ``relu`` and ``maxpool``) to its inputs ``xs``.

    The same code serves the ANN and, per step, the SNN: conv/linear/scale/avgpool/add are linear
    maps of their (spike or current) input plus a constant bias current.
    """
    k, p = node.kind, node.params
    if k == "conv":
        return F.conv2d(xs[0], p["weight"], p["bias"], **node.conf)
    if k == "linear":
        return F.linear(xs[0], p["weight"], p["bias"])
    if k == "scale":
        shape = (1, -1) + (1,) * (xs[0].dim() - 2)
        return torch.addcmul(p["shift"].view(shape), xs[0], p["scale"].view(shape))
    if k == "avgpool":
        return F.avg_pool2d(xs[0], **node.conf)
    if k == "add":
        return xs[0] + xs[1]
    if k == "call":
        return eval_call(node, vals)
    raise ValueError(f"apply_stateless: node kind {k!r} has state")  # pragma: no cover


def gained(node: Node, vals: list) -> list:
    """The inputs of ``node`` with its gains applied."""
    xs = [vals[j] for j in node.inputs]
    for k, g in enumerate(node.gains):
        if g is not None:
            xs[k] = xs[k] * g
    return xs


def run_ann(program: Program, x: Tensor) -> list:
    """Runs the program as an ANN (ReLU, ordinary max-pool); returns the value of every node.

    With normalised parameters the ``relu`` values are the ANN activations divided by the layer's
    scale factor, i.e. the target firing rates (spikes/step) of the SNN.

    Args:
        x: input batch ``[B, ...]``.
    Returns:
        list of values, one per node (tensors ``[B, ...]`` or structural values such as sizes);
        the network output is ``forward_ann`` (this list's ``program.out`` entry times the readout gain).
    """
    vals: list = [None] * len(program.nodes)
    for i, n in enumerate(program.nodes):
        if n.kind == "input":
            vals[i] = x
        elif n.kind == "call":
            vals[i] = eval_call(n, vals)
        elif n.kind == "relu":
            vals[i] = F.relu(gained(n, vals)[0])
        elif n.kind == "maxpool":
            vals[i] = F.max_pool2d(gained(n, vals)[0], **n.conf)
        else:
            vals[i] = apply_stateless(n, gained(n, vals), vals)
    return vals


def forward_ann(program: Program, x: Tensor) -> Tensor:
    """The program's output ``[B, C]`` as an ANN (after normalisation: ANN logits / output scale)."""
    out = run_ann(program, x)[program.out]
    return out if program.readout_gain is None else out * program.readout_gain
