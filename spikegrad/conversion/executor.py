"""How a converted network is run: the event plan, fusion, chunks of steps, tiles of images.

:class:`~spikegrad.conversion.snn.SpikingNetwork` owns the layers and what each node computes
(IF layers, pooling gates, operation counts, readout); this module decides the schedule and runs
it, calling the network's node methods:

* the *event plan* (:func:`event_plan`): on CPU with the C kernels, which Conv2d / Linear nodes sum
  the weights of their nonzero inputs only (:mod:`spikegrad.kernels.events`), and which IF layers
  run fused with the count-gated max-pool that is their only target (:func:`fusable_pools`);
* *chunks* of ``K`` steps (time folded into the batch axis, step-major) so that each node runs once
  per chunk, and for :func:`run` *tiles* of images, so that each layer's state stays in cache over a
  chunk (:func:`tiling`); the widest time-varying value of a chunk stays under ``chunk_elements``,
  by default sized from the CPU's L3 (:func:`chunk_budget`);
* time-invariant values (constant analog input) computed once per tile.

The network passes its memory budget (``spikegrad.conversion.snn.CHUNK_ELEMENTS``, ``CHUNK_STEPS``)
on every call; the kernels size their own pieces of work to the caches
(:mod:`spikegrad.kernels.events`). The functions take the network as ``net`` and read its node
tables (``shapes``, ``_slot``, ``_static``, ``_binary``, ``_gained``, ``_fused_pool``, ...); this
module imports nothing from :mod:`.snn`, which imports it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import events
from ..kernels.cpuinfo import cache_sizes
from .graph import SYNAPTIC, Node, Program, apply_stateless, eval_call, gained

__all__ = ["EventPlan", "fusable_pools", "event_plan", "chunk_budget", "chunk_steps", "tiling", "run", "forward"]

# Bounds of chunk_budget, bytes. Below 16 MiB the Python work of a chunk (about 0.7 ms for the
# convert_mnist LeNet) costs more than keeping its values in the L3 saves (bench/RESULTS.md)
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 16 << 20, 64 << 20


class EventPlan(NamedTuple):
    tables: dict[int, tuple[Tensor, Tensor]]  # event-driven Conv2d / Linear node -> its weight rows
    fused: dict[int, tuple[float, float]]     # IF layer fused with its max-pool -> (v_th, v_reset)


# ---------------------------------------------------------------------------- the plan
def fusable_pools(net: nn.Module, program: Program) -> dict[int, tuple[int, tuple[int, int], tuple[int, int]]]:
    """IF layer -> ``(node, kernel, stride)`` of the count-gated max-pool (no padding, dilation 1,
    floor mode) that is its only target: the two run fused in the event-driven mode."""
    out = {}
    for i in net.neurons:
        targets = [j for j, n in enumerate(program.nodes) if i in n.inputs]
        if len(targets) != 1 or i == net.out or program.nodes[targets[0]].kind != "maxpool":
            continue
        j = targets[0]
        conf = program.nodes[j].conf
        if (net._pool_reads_count(j) and len(net.shapes[i]) == 3 and _pair(conf.get("padding", 0)) == (0, 0)
                and _pair(conf.get("dilation", 1)) == (1, 1) and not conf.get("ceil_mode", False)):
            stride = conf["stride"] if conf.get("stride") is not None else conf["kernel_size"]
            out[i] = (j, _pair(conf["kernel_size"]), _pair(stride))
    return out


def uses_events(net: nn.Module, x: Tensor) -> bool:
    """Whether input ``x`` runs on the event-driven C kernels."""
    return net.synapses != "dense" and events.supports(x) and events.available()


def event_plan(net: nn.Module, nodes: list[Node], x: Tensor) -> EventPlan:
    """What runs on the event-driven kernels for input ``x``: per Conv2d / Linear node its weight
    rows (see :mod:`spikegrad.kernels.events`), and the IF layers fused with their max-pool."""
    if not uses_events(net, x):
        return EventPlan({}, {})
    fused = {i: c for i in net._fused_pool if (c := _plain_if(net, net._slot[i])) is not None}
    tables = {}
    for i, n in enumerate(nodes):
        src = n.inputs[0] if n.inputs else None
        if n.kind not in ("conv", "linear") or net._static[i] or src is None:
            continue
        if net.synapses == "auto" and not (net._binary[src] and (i, 0) not in net._gained):
            continue
        w, b = n.params["weight"], n.params.get("bias")
        if n.kind == "linear":
            tables[i] = events.linear_table(w, b)
        elif events.conv_geometry(n.conf, net.shapes[src][1:], tuple(w.shape[2:])) is not None:
            tables[i] = events.conv2d_table(w, b)
    return EventPlan(tables, fused)


def _plain_if(net: nn.Module, slot: int) -> tuple[float, float] | None:
    """``(v_th, v_reset)`` of IF layer ``slot`` if its constants are single values (the fused kernel's case)."""
    layer = net.if_layers[slot]
    if layer.refractory or layer.v_th.numel() != 1 or layer.v_reset.numel() != 1:
        return None
    return float(layer.v_th), float(layer.v_reset)


# ---------------------------------------------------------------------------- chunks and tiles
def chunk_budget(element_size: int, threads: int | None = None, l3: int | None = None) -> int:
    """Elements of the widest value of one chunk: a quarter of the L3 that ``threads`` threads
    (default PyTorch's) can count on (``l3`` bytes per CPU, default
    :func:`~spikegrad.kernels.cpuinfo.cache_sizes`), so that a node's input and output values of
    a chunk stay in the L3 together, within ``[MIN_CHUNK_BYTES, MAX_CHUNK_BYTES]``."""
    l3 = cache_sizes().l3 if l3 is None else l3
    share = l3 * (threads or torch.get_num_threads()) // 4
    return min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, share)) // element_size


def chunk_steps(net: nn.Module, batch: int, static: list[bool], hidden: set[int], chunk_elements: int) -> int:
    """Steps simulated at once: every dynamic node's ``[K * B, ...]`` value (but the ``hidden``
    ones, never materialised) stays under ``chunk_elements`` elements."""
    return max(1, chunk_elements // max(1, batch * _widest(net, static, hidden)))


def _widest(net: nn.Module, static: list[bool], hidden: set[int]) -> int:
    """Elements per input of the widest time-varying value (but the ``hidden`` ones)."""
    return max((math.prod(net.shapes[i]) for i in range(len(net.shapes))
                if net.shapes[i] is not None and not static[i] and i not in hidden), default=1)


def tiling(net: nn.Module, batch: int, T: int, hidden: set[int], chunk_elements: int,
           max_steps: int) -> tuple[int, int]:
    """``(steps per chunk, images per tile)`` for :func:`run`: a large batch runs in tiles of
    images, each for ``max_steps`` steps at a time, so that every layer's state is read from
    memory once per chunk rather than once per step."""
    K = chunk_steps(net, batch, net._static, hidden, chunk_elements)
    if K >= min(T, max_steps):
        return K, batch
    K = min(T, max_steps)
    return K, max(1, chunk_elements // (K * _widest(net, net._static, hidden)))


# ---------------------------------------------------------------------------- running the plan
def run(net: nn.Module, x: Tensor, T: int, generator: torch.Generator | None, count_ops: bool,
        chunk_elements: int | None, max_steps: int) -> tuple[Tensor, tuple[Tensor, ...], Tensor | None]:
    """``T`` steps of the images ``x [B, ...]`` (checked by ``SpikingNetwork.run``), without gradients;
    ``chunk_elements`` None: :func:`chunk_budget`.

    Returns:
        ``(readout [T, B, C], spike counts per IF layer [B, *shape], synops [T, L] float64 or None)``.
    """
    with torch.no_grad():
        nodes = net.nodes()
        plan = event_plan(net, nodes, x)
        K, tile = tiling(net, len(x), T, set(plan.fused), chunk_elements or chunk_budget(x.element_size()),
                         max_steps)
        readout = torch.empty((T, len(x), *net.shapes[net.out]), device=x.device, dtype=x.dtype)
        synops = torch.zeros(T, len(net.synaptic), dtype=torch.float64, device=x.device) if count_ops else None
        counts = [_run_tile(net, nodes, plan, x[b:b + tile], T, K, generator, readout[:, b:b + tile], synops)
                  for b in range(0, len(x), tile)]
        return readout, tuple(torch.cat(c) for c in zip(*counts)), synops


def _run_tile(net: nn.Module, nodes: list[Node], plan: EventPlan, x: Tensor, T: int, K: int,
              generator: torch.Generator | None, readout: Tensor, synops: Tensor | None) -> list[Tensor]:
    """:func:`run` on the images ``x [b, ...]``: writes ``readout [T, b, C]``, adds to ``synops``;
    returns the spike counts of every IF layer."""
    st = working_copy(net.init_state(len(x), x.device, x.dtype), clone=False)
    static_vals: list = [None] * len(nodes)
    for i, n in enumerate(nodes):
        if not net._static[i]:
            continue
        if n.kind == "input":
            static_vals[i] = x
        elif n.kind == "call":
            static_vals[i] = eval_call(n, static_vals)
        elif n.kind == "maxpool":  # constant input: the gate picks the maximum
            static_vals[i] = F.max_pool2d(gained(n, static_vals)[0], **n.conf)
        else:
            xs = gained(n, static_vals)
            if synops is not None and n.kind in SYNAPTIC:
                net._count(i, xs[0], synops[:1], 1)
            static_vals[i] = apply_stateless(n, xs, static_vals)
        if isinstance(static_vals[i], Tensor) and static_vals[i].dim() == 4:  # the IF layers' order
            static_vals[i] = static_vals[i].contiguous(memory_format=torch.channels_last)
    order = [i for i in range(len(nodes)) if not net._static[i] and i != net._input]
    for t0 in range(0, T, K):
        k = min(K, T - t0)
        vals = list(static_vals)
        if net.input_mode == "poisson":
            u = torch.rand((k, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
            vals[net._input] = (u < x).to(x.dtype).reshape(k * len(x), *x.shape[1:])  # Bernoulli spikes
        readout[t0:t0 + k] = advance(net, nodes, vals, order, net._static, st, k, generator,
                                     None if synops is None else synops[t0:t0 + k], plan).view(k, len(x), -1)
    return list(st.count)


def forward(net: nn.Module, x_seq: Tensor, state: NamedTuple, generator: torch.Generator | None,
            chunk_elements: int | None) -> tuple[Tensor, NamedTuple]:
    """``T`` steps of the inputs ``x_seq [T, B, ...]`` (checked by ``SpikingNetwork.forward``) from
    ``state`` (not modified), without gradients: ``(readout [T, B, C], new state)``;
    ``chunk_elements`` None: :func:`chunk_budget`."""
    with torch.no_grad():
        st = working_copy(state)
        nodes = net.nodes()
        order = [i for i in range(len(nodes)) if i != net._input]
        T, B = x_seq.shape[:2]
        static = [False] * len(nodes)  # every step's input is given
        plan = event_plan(net, nodes, x_seq)
        K = chunk_steps(net, B, static, set(plan.fused), chunk_elements or chunk_budget(x_seq.element_size()))
        outs = []
        for t0 in range(0, T, K):
            chunk = x_seq[t0:t0 + K]
            vals: list = [None] * len(nodes)
            vals[net._input] = chunk.reshape(len(chunk) * B, *chunk.shape[2:])
            outs.append(advance(net, nodes, vals, order, static, st, len(chunk), generator, None, plan))
        return torch.cat(outs), frozen(st)


def advance(net: nn.Module, nodes: list[Node], vals: list, order: list[int], static: list[bool], st: NamedTuple,
            K: int, generator: torch.Generator | None, synops: Tensor | None, plan: EventPlan) -> Tensor:
    """Runs the nodes in ``order`` for ``K`` steps at once, updating ``st`` (a :func:`working_copy`);
    returns the readout ``[K, B, C]``.

    ``vals[i]`` is ``[B, ...]`` for a time-invariant node (``static[i]``) and ``[K * B, ...]``
    (time folded into the batch, step-major) for the others; every node runs once per chunk.
    ``plan``: the event-driven synaptic nodes and fused IF layers (:func:`event_plan`).
    """
    B = st.out_v.shape[0]
    counts_seq: dict[int, Tensor] = {}  # IF layer -> spike counts so far, [K * B, ...]

    def folded(j: int) -> Tensor:
        x = vals[j]
        if static[j] and isinstance(x, Tensor):
            return x.unsqueeze(0).expand(K, *x.shape).reshape(K * B, *x.shape[1:])
        return x

    done: set[int] = set()  # max-pools computed with their IF layer
    for i in order:
        if i in done:
            continue
        n = nodes[i]
        k = n.kind
        if i in plan.fused:
            done.add(_fuse(net, i, n, vals, st, K, *plan.fused[i]))
            continue
        ins = list(vals)
        for j in n.inputs:
            if not (k == "relu" and static[j]):  # a constant current: the IF kernel reads one row
                ins[j] = folded(j)
        if k == "call":  # user code (x.view(...)) may need the standard layout
            for j in n.inputs:
                if isinstance(ins[j], Tensor):
                    ins[j] = ins[j].contiguous()
            vals[i] = eval_call(n, ins)
            continue
        xs = gained(n, ins)
        if k == "relu":
            vals[i], counts_seq[net._slot[i]] = net._integrate(i, xs[0], static[n.inputs[0]], st, K)
        elif k == "maxpool":
            vals[i] = net._max_pool(i, n, xs[0], counts_seq, st, K)
        else:
            if synops is not None and k in SYNAPTIC:
                net._count(i, xs[0], synops, K)
            vals[i] = _synapses(net, i, n, xs[0], plan.tables) if i in plan.tables else apply_stateless(n, xs, ins)
    out = net._read(folded(net.out).reshape(K, B, -1), st, generator)
    if st.time is not None:
        st.time.add_(K)
    return out


def _fuse(net: nn.Module, i: int, n: Node, vals: list, st: NamedTuple, K: int, v_th: float, v_reset: float) -> int:
    """Runs IF layer ``i`` (threshold ``v_th``, reset potential ``v_reset``) and its max-pool for
    ``K`` steps in one kernel; returns the pool's index."""
    slot = net._slot[i]
    pool, kernel, stride = net._fused_pool[i]
    x = gained(n, vals)[0]  # [B, ...] (constant current) or [K * B, ...]
    v, count, s = (t.contiguous(memory_format=torch.channels_last) for t in (st.v[slot], st.count[slot],
                                                                               st.s[slot]))
    vals[pool] = events.if_maxpool(x, v, count, s, K, v_th, net.if_layers[slot].reset, v_reset, kernel, stride)
    st.v[slot], st.count[slot], st.s[slot] = v, count, s
    return pool


def _synapses(net: nn.Module, i: int, n: Node, x: Tensor, tables: dict[int, tuple[Tensor, Tensor]]) -> Tensor:
    """Conv2d / Linear node ``i`` on input ``x [N, ...]``, summing the weights of the non-zero inputs only."""
    w = n.params["weight"]
    binary = net._binary[n.inputs[0]] and (i, 0) not in net._gained
    if n.kind == "linear":
        return events.event_linear(x.reshape(len(x), -1), tables[i], w.shape[0], binary)
    stride, padding, dilation, _ = events.conv_geometry(n.conf, tuple(x.shape[2:]), tuple(w.shape[2:]))
    return events.event_conv2d(x, tables[i], w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, binary)


# ---------------------------------------------------------------------------- working state
def working_copy(state: NamedTuple, clone: bool = True) -> NamedTuple:
    """``state`` (an ``SNNState``) with lists as per-layer fields (replaced layer by layer during a
    chunk), its tensors cloned (``clone=True``: the caller's state is left as it was) or shared."""
    def copy(t):
        return t.clone(memory_format=torch.preserve_format) if clone and t is not None else t
    return type(state)(*([copy(t) for t in f] if isinstance(f, tuple) else copy(f) for f in state))


def frozen(state: NamedTuple) -> NamedTuple:
    """A :func:`working_copy` back to tuples per field."""
    return type(state)(*(tuple(f) if isinstance(f, list) else f for f in state))


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)
