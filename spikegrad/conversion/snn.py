"""The converted spiking network: IF neurons, gated max-pooling, readout, and its simulation.

Per time step ``t`` (Rueckauer et al. 2017, Sec. 2):

* the input is the analog image as a constant current (``input_mode="analog"``) or Bernoulli
  spikes with probability = pixel value (``"poisson"``);
* Conv2d / Linear / batch-norm / AvgPool2d / additions map their input (spikes or currents) to a
  current, the bias entering as a constant current every step;
* every ReLU is a layer of :class:`spikegrad.neurons.IF` neurons (threshold 1): ``v += x``; spike iff
  ``v > 1``; reset by subtracting 1 (``reset="subtract"``, keeps the residual charge) or to 0
  (``"zero"``); the layers run on the fast kernels of :mod:`spikegrad.kernels`;
* max-pooling passes, in each window, the spikes of the input with the largest running spike count,
  an online estimate of the presynaptic rates (:func:`spike_max_pool2d`; the count before the
  current step decides, ties go to an input that spikes now, so the pooled spike count equals the
  largest input count exactly). Pooling of currents passes the current of the input with the largest
  summed current (:func:`gated_max_pool2d`);
* the output layer does not spike: it accumulates its input current (membrane readout), and the
  prediction after ``t`` steps is the argmax of that sum. ``readout="spiking_softmax"`` instead
  integrates into a membrane ``v``, fires output ``c`` with probability ``softmax(v)[c]`` each step
  (resetting ``v_c`` to 0), and predicts the most frequent output (ties: larger ``softmax(v)``).
  ``readout="softmax_clock"`` is the paper's first variant: an external Poisson clock ticks with
  probability ``softmax_clock_rate`` per step and sample; on a tick the output with the largest
  ``softmax(v)`` fires and that sample's membranes reset to 0;
* ``maxpool_gate`` chooses the online rate estimate of spiking max-pooling: ``"count"`` (default,
  spike counts with the tie rule above), or the three of the authors' simulator, updated every step
  ``t = 1, 2, ...`` from the input ``x_t``: ``"fir"`` (``r += x_t / t``), ``"avg"`` (the running
  mean, ``r += (x_t - r) / t``) and ``"exp"`` (``r = 1.005 r + 0.995 x_t``, the reference code's
  constants); the input with the largest ``r`` (first in the window on ties) passes.

Constant analog input makes the first layers' currents constant: :meth:`SpikingNetwork.run`
computes every time-invariant value once per batch. The other nodes run on chunks of steps at
once (time folded into the batch axis; a large batch in tiles of images, so that each layer's
state stays in cache over a chunk), which gives the same values as a per-step loop: the IF
layers, running sums (spike counts, pooling gates, the membrane readout) and all stateless nodes
compute each step from the same operands in the same order. That schedule (the event plan below,
chunks and tiles, the order of the nodes) is :mod:`spikegrad.conversion.executor`'s; this module
holds the network and what each node computes, and :meth:`SpikingNetwork.run` / ``forward`` call
the executor.

On CPU (float32 / float64, with the C kernels) the synapses are event-driven by default
(``synapses="auto"``): a Conv2d or Linear node fed by spikes adds up the weights of the spiking
inputs only (:mod:`spikegrad.kernels.events`), and an IF layer whose only target is a count-gated
max-pool runs fused with it. The sums are those of the dense layers in another order of additions
(float rounding); ``synapses="dense"`` runs ``F.conv2d`` / ``F.linear``.

Operation counts (per input, :class:`SimulationResult`): a *synaptic operation* is one addition of
a weight to a target, triggered by a nonzero input of a Conv2d / Linear / batch-norm / AvgPool2d
node: ``synops(t) = sum over nonzero inputs of their fan-out`` (number of weights connecting the
element to outputs, exact at padded borders), i.e. spikes x fan-out for spike inputs. An analog
input layer whose current is constant is computed once: its multiply-accumulates are counted once,
at step 1. Bias currents are not counted unless ``count_bias=True`` (then one operation per biased
neuron per step). The ANN is charged ``out_numel * fan_in`` multiply-accumulates per Conv2d / Linear
(``out_numel * kernel_area`` per AvgPool2d, one per element for an unfolded batch-norm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import LIFParams, LIFState, check_reset, lif_step
from ..models import eval_mode
from ..neurons import IF
from .. import checks
from ..surrogates import heaviside
from . import executor
from .graph import SYNAPTIC, Node, Program

__all__ = [
    "SNNState", "RunResult", "SimulationResult", "SpikingNetwork", "gated_max_pool2d", "spike_max_pool2d", "if_step",
    "simulate", "evaluate_ann", "ann_macs",
]

ResetMode = Literal["subtract", "zero", "none"]  # spikegrad.functional.RESET_MODES
InputMode = Literal["analog", "poisson"]
Readout = Literal["membrane", "spiking_softmax", "softmax_clock"]
READOUTS = ("membrane", "spiking_softmax", "softmax_clock")
MAXPOOL_GATES = ("count", "fir", "avg", "exp")
SYNAPSES = ("auto", "event", "dense")


# The memory budget run() and forward() hand to the executor on every call (read here at each call).
# Elements of the widest [K * B, ...] value of one chunk of steps; None: sized from the CPU's L3
# (executor.chunk_budget, 4-64 MiB), an int forces it
CHUNK_ELEMENTS: int | None = None
CHUNK_STEPS = 16  # SpikingNetwork.run splits a batch into tiles of images rather than run fewer steps at once


def if_step(x: Tensor, v: Tensor, reset: ResetMode = "subtract", v_th: float = 1.0) -> tuple[Tensor, Tensor]:
    """One step of the IF neuron of the converted network, on membranes alone: ``v += x``, spike iff
    ``v > v_th``, reset (:func:`spikegrad.functional.lif_step` with ``decay_mem = 1``, ``decay_syn = 0``).

    Args:
        x: input current ``[B, ...]`` (threshold units per step).
        v: membrane after the previous step ``[B, ...]``.
        reset: one of :data:`spikegrad.functional.RESET_MODES`.
        v_th: threshold (1 after normalisation).
    Returns:
        ``(spikes [B, ...] in {0, 1} with the dtype of x, new membrane)``.
    """
    s, st = lif_step(x, LIFState(v, torch.zeros_like(v)), LIFParams(1.0, 0.0, v_th, 0.0, check_reset("if_step", reset)),
                     heaviside)
    return s, st.v


def gated_max_pool2d(x: Tensor, rate: Tensor, kernel_size, stride=None, padding=0, dilation=1,
                     ceil_mode: bool = False) -> Tensor:
    """Spiking max-pooling: per window, pass ``x`` of the input with the largest ``rate``.

    Args:
        x: this step's input (spikes or currents) ``[B, C, H, W]``.
        rate: the online rate estimate of every input, e.g. its spike count so far ``[B, C, H, W]``.
        kernel_size, stride, padding, dilation, ceil_mode: as ``F.max_pool2d``.
    Returns:
        ``[B, C, H', W']``: the element of ``x`` at the arg-max of ``rate`` in each window (ties go
        to the first element in row-major order). Binary if ``x`` is.
    """
    _, idx = F.max_pool2d(rate, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    return x.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)


def spike_max_pool2d(spikes: Tensor, counts: Tensor, kernel_size, stride=None, padding=0, dilation=1,
                     ceil_mode: bool = False) -> Tensor:
    """Spiking max-pooling gated by spike counts: per window, pass the spike of the most active input.

    The gate ranks the inputs by their count *before* this step (``counts - spikes``) and breaks ties
    in favour of an input that spikes now. Then an output spike occurs exactly when the largest count
    in the window grows, so the pooled count always equals the largest input count (the max of the
    rates). Implemented as one ``max_pool2d`` of ``counts - spikes / 2``.

    Args:
        spikes: this step's spikes ``[B, C, H, W]`` in {0, 1}.
        counts: spikes so far *including* this step ``[B, C, H, W]`` (integers < 2**23).
        kernel_size, stride, padding, dilation, ceil_mode: as ``F.max_pool2d``.
    Returns:
        pooled spikes ``[B, C, H', W']`` in {0, 1}, dtype of ``spikes``.
    """
    key = torch.sub(counts, spikes, alpha=0.5)  # count before the step + spike / 2
    m = F.max_pool2d(key, kernel_size, stride, padding, dilation, ceil_mode)
    return torch.frac(m).mul_(2)


class SNNState(NamedTuple):
    """State of a :class:`SpikingNetwork` for one batch; each tensor ``[B, ...]``.

    v: membrane of each IF layer (threshold units, in the order of ``Program.neurons``).
    count: spikes emitted so far by each IF layer (the max-pool rate estimate).
    s: spikes of each IF layer at the last step.
    pool: per max-pool node, its rate estimate of its input (None for the ``"count"`` gate of an
        input that is an IF layer: that layer's counts serve).
    out_v: readout membrane ``[B, C]`` (accumulated output current; reset on output spikes for
        the spiking softmax).
    out_count: output spikes so far ``[B, C]`` (spiking softmax only, else None).
    time: steps simulated so far, a 0-dim int64 tensor (the ``"fir"`` and ``"avg"`` gates weigh by it).
    """

    v: tuple[Tensor, ...]
    count: tuple[Tensor, ...]
    s: tuple[Tensor, ...]
    pool: tuple[Tensor | None, ...]
    out_v: Tensor
    out_count: Tensor | None = None
    time: Tensor | None = None


class RunResult(NamedTuple):
    """Output of :meth:`SpikingNetwork.run` for one batch.

    readout: ``[T, B, C]``; ``readout[t].argmax(-1)`` is the prediction after ``t + 1`` steps.
    spike_counts: per IF layer, spikes over the ``T`` steps ``[B, *shape]``.
    synops: ``[T, L]`` synaptic operations per step and synaptic layer, summed over the batch
        (float64), or None when not counted.
    """

    readout: Tensor
    spike_counts: tuple[Tensor, ...]
    synops: Tensor | None


def _fanout(node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Tensor:
    """Number of weights from each input element ``[*in_shape]`` of a synaptic node to its outputs."""
    if node.kind == "linear":
        return torch.full(in_shape, float(out_shape[0]), dtype=torch.float64)
    if node.kind == "scale":
        return torch.ones(in_shape, dtype=torch.float64)
    with torch.enable_grad():
        x = torch.zeros((1, *in_shape), dtype=torch.float64, requires_grad=True)
        if node.kind == "conv":
            y = F.conv2d(x, torch.ones(node.params["weight"].shape, dtype=torch.float64), None, **node.conf)
        else:  # avgpool as a sum pool: every window an element belongs to is one synapse
            y = F.avg_pool2d(x, **{**node.conf, "divisor_override": 1})
        y.backward(torch.ones_like(y))
    return x.grad[0]


def ann_macs(program: Program) -> dict[str, int]:
    """Multiply-accumulates per input of each synaptic node of the ANN (dense count, see module doc)."""
    macs = {}
    for i, n in enumerate(program.nodes):
        if n.kind not in SYNAPTIC:
            continue
        out = _numel(program.shapes[i])
        if n.kind == "conv":
            macs[n.name] = out * _numel(n.params["weight"].shape[1:])
        elif n.kind == "linear":
            macs[n.name] = out * program.shapes[n.inputs[0]][0]
        elif n.kind == "avgpool":
            k = n.conf["kernel_size"]
            macs[n.name] = out * (k * k if isinstance(k, int) else _numel(k))
        else:
            macs[n.name] = out
    return macs


def _numel(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


class SpikingNetwork(nn.Module):
    """A converted SNN (build it with :func:`spikegrad.conversion.convert`).

    Parameters, gains and fan-out maps are buffers, so ``.to(device)`` and ``state_dict()`` work.

    Args:
        program: a normalised :class:`Program` (from :func:`spikegrad.conversion.normalize`).
        reset: IF reset, "subtract" (default, Rueckauer et al.), "zero" (for comparison) or "none".
        input_mode: "analog" (constant current, default) or "poisson" (Bernoulli spikes, rate =
            intensity; inputs must lie in [0, 1]).
        readout: "membrane" (default), "spiking_softmax" or "softmax_clock" (see the module doc).
        softmax_clock_rate: ticks per step of the external Poisson clock of ``"softmax_clock"``.
        maxpool_gate: the rate estimate of spiking max-pooling: "count" (default), "fir", "avg", "exp".
        surrogate: the IF layers' surrogate (used only if gradients are taken through them).
        backend: the IF layers' backend (:data:`spikegrad.kernels.BACKENDS`; "auto": the fastest).
        synapses: how :meth:`run` and :meth:`forward` compute the Conv2d / Linear nodes on CPU
            (float32 / float64) when the C kernels are available: "auto" (default) sums the weights
            of the spikes only (:mod:`spikegrad.kernels.events`) for inputs that are spikes, "event"
            does so for every time-varying input, "dense" always runs ``F.conv2d`` / ``F.linear``.
            The sums are the same up to float rounding (another order of additions). With "auto" or
            "event", an IF layer whose only target is a count-gated max-pool runs fused with it.
    Shapes: ``forward(x_seq [T, B, ...], state=None) -> (readout [T, B, C], state)``;
    :meth:`run` ``(x [B, ...], T) -> RunResult`` is the fast path for a constant image.
    """

    def __init__(self, program: Program, reset: ResetMode = "subtract", input_mode: InputMode = "analog",
                 readout: Readout = "membrane", surrogate: str = "fast_sigmoid", backend: str = "auto",
                 softmax_clock_rate: float = 0.3, maxpool_gate: str = "count", synapses: str = "auto"):
        super().__init__()
        check_reset("SpikingNetwork", reset)
        checks.one_of("SpikingNetwork", "input_mode", input_mode, ("analog", "poisson"))
        checks.one_of("SpikingNetwork", "readout", readout, READOUTS)
        self.maxpool_gate = checks.one_of("SpikingNetwork", "maxpool_gate", maxpool_gate, MAXPOOL_GATES)
        self.synapses = checks.one_of("SpikingNetwork", "synapses", synapses, SYNAPSES)
        self.softmax_clock_rate = checks.real("SpikingNetwork", "softmax_clock_rate", softmax_clock_rate,
                                              lambda r: 0 < r <= 1, "a probability in (0, 1] (ticks per step)")
        if program.shapes is None:
            raise ValueError("SpikingNetwork: the program has no shapes; build it with calibrate -> normalize")
        self.reset, self.input_mode, self.readout = reset, input_mode, readout
        self.shapes = list(program.shapes)
        self.out = program.out
        self.neurons = program.neurons
        self._slot = {i: k for k, i in enumerate(self.neurons)}
        self.pools = [i for i, n in enumerate(program.nodes) if n.kind == "maxpool"]
        self._pool_slot = {i: k for k, i in enumerate(self.pools)}
        self._input = next(i for i, n in enumerate(program.nodes) if n.kind == "input")
        self.synaptic = [i for i, n in enumerate(program.nodes) if n.kind in SYNAPTIC]
        self._syn_slot = {i: k for k, i in enumerate(self.synaptic)}
        self.if_layers = nn.ModuleList(IF(v_th=1.0, reset=reset, surrogate=surrogate, backend=backend)
                                       for _ in self.neurons)
        self._nodes, self._gained = [], set()
        for i, n in enumerate(program.nodes):  # tensors live in buffers; nodes keep their names
            for name, t in n.params.items():
                if t is not None:  # channels-last convolutions (and states): faster pooling on CPU
                    fmt = torch.channels_last if t.dim() == 4 else torch.contiguous_format
                    self.register_buffer(f"n{i}_{name}", t.detach().clone().contiguous(memory_format=fmt))
            for k, g in enumerate(n.gains):
                if g is not None:
                    self.register_buffer(f"n{i}_gain{k}", g.detach().clone())
                    self._gained.add((i, k))
            self._nodes.append(Node(n.name, n.where, n.kind, n.inputs, {k: None for k in n.params}, dict(n.conf),
                                    n.fn, n.args, dict(n.kwargs), tuple(None for _ in n.gains)))
        buf = next(iter(self.buffers()), None)
        device = buf.device if buf is not None else None
        for i in self.synaptic:
            f = _fanout(program.nodes[i], self.shapes[self._nodes[i].inputs[0]], self.shapes[i])
            f = _flat(f[None].contiguous(memory_format=torch.channels_last) if f.dim() == 3 else f[None])[0]
            self.register_buffer(f"n{i}_fanout", f.to(device=device, dtype=self._dtype()))  # in memory order
        for i, lam in program.lambdas.items():
            self.register_buffer(f"n{i}_lambda", lam.detach().clone())
        self.register_buffer("readout_gain", None if program.readout_gain is None else program.readout_gain.clone())
        self.macs = ann_macs(program)

        # time-invariant values (analog input) and binary values, by node
        static, binary = [], []
        for n in program.nodes:
            ins_s = [static[j] for j in n.inputs]
            ins_b = [binary[j] for j in n.inputs if self.shapes[j] is not None]
            if n.kind == "input":
                static.append(input_mode == "analog")
                binary.append(input_mode == "poisson")
            else:
                static.append(n.kind != "relu" and all(ins_s))
                binary.append(n.kind == "relu" or (n.kind in ("maxpool", "call") and bool(ins_b) and all(ins_b)
                                                   and all(g is None for g in n.gains)))
        self._static, self._binary = static, binary
        self._fused_pool = executor.fusable_pools(self, program)

    def _event_plan(self, nodes: list[Node], x: Tensor) -> executor.EventPlan:
        """What runs on the event-driven kernels for input ``x`` (:func:`.executor.event_plan`)."""
        return executor.event_plan(self, nodes, x)

    # ------------------------------------------------------------------ helpers
    def _dtype(self) -> torch.dtype:
        for b in self.buffers():
            if b.is_floating_point():
                return b.dtype
        return torch.get_default_dtype()

    def nodes(self) -> list[Node]:
        """The program's nodes with their tensors taken from the current buffers."""
        out = []
        for i, n in enumerate(self._nodes):
            m = Node(n.name, n.where, n.kind, n.inputs, {k: getattr(self, f"n{i}_{k}", None) for k in n.params},
                     n.conf, n.fn, n.args, n.kwargs,
                     tuple(getattr(self, f"n{i}_gain{k}", None) for k in range(len(n.gains))))
            out.append(m)
        return out

    @property
    def layer_names(self) -> list[str]:
        """Names of the IF layers (fx node names), in state order."""
        return [self._nodes[i].name for i in self.neurons]

    @property
    def synaptic_names(self) -> list[str]:
        """Names of the synaptic nodes, in the column order of ``RunResult.synops``."""
        return [self._nodes[i].name for i in self.synaptic]

    def lambdas(self) -> dict[str, Tensor]:
        """Scale factor per IF layer (and the output), ``[C]`` or ``[1]``, ANN units per unit rate."""
        return {self._nodes[i].name: getattr(self, f"n{i}_lambda") for i in [*self.neurons, self.out]
                if hasattr(self, f"n{i}_lambda")}

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> SNNState:
        """A network at rest: zero membranes and counts for ``batch_size`` inputs."""
        buf = next(iter(self.buffers()), None)
        device = device if device is not None else (buf.device if buf is not None else None)
        dtype = dtype or self._dtype()

        def z(i):
            fmt = torch.channels_last if len(self.shapes[i]) == 3 else torch.contiguous_format
            return torch.empty((batch_size, *self.shapes[i]), device=device, dtype=dtype, memory_format=fmt).zero_()
        pool = tuple(None if self._pool_reads_count(i) else z(self._nodes[i].inputs[0]) for i in self.pools)
        zs = [tuple(z(i) for i in self.neurons) for _ in range(3)]
        return SNNState(*zs, pool, z(self.out), z(self.out) if self.readout != "membrane" else None,
                        torch.zeros((), dtype=torch.int64, device=device))

    def _pool_reads_count(self, i: int) -> bool:
        """A max-pool fed directly by an IF layer uses that layer's spike count as its rate estimate
        (the ``"count"`` gate)."""
        return self.maxpool_gate == "count" and self._nodes[i].inputs[0] in self._slot and (i, 0) not in self._gained

    # ------------------------------------------------------------------ what the nodes compute
    def _integrate(self, i: int, x: Tensor, constant: bool, st: SNNState, K: int) -> tuple[Tensor, Tensor]:
        """IF layer node ``i`` for ``K`` steps of input current ``x`` (``[B, ...]`` if ``constant``, else
        ``[K * B, ...]``, step-major); updates its membrane, spike count and last spikes in ``st`` (a
        working copy with lists per field). Returns ``(spikes, counts so far)``, each ``[K * B, *shape]``."""
        B = st.out_v.shape[0]
        slot = self._slot[i]
        shape = self.shapes[i]  # IF neurons are elementwise: they run on the memory order
        x = _flat(x).unsqueeze(0).expand(K, B, -1) if constant else _flat(x).view(K, B, -1)
        v0 = _flat(st.v[slot])
        spikes, new = self.if_layers[slot](x, LIFState(v0, torch.zeros_like(v0)))
        counts = _running_sum(_flat(st.count[slot]), spikes)            # [K, B, F], including this step
        st.v[slot], st.count[slot] = _unflat(new.v, shape), _unflat(counts[-1], shape)
        st.s[slot] = _unflat(spikes[-1], shape)
        return _unflat(spikes.view(K * B, -1), shape), _unflat(counts.view(K * B, -1), shape)

    def _max_pool(self, i: int, n: Node, x: Tensor, counts_seq: dict[int, Tensor], st: SNNState, K: int) -> Tensor:
        """Max-pool node ``i`` for ``K`` steps of input ``x [K * B, ...]``: the gate's rates come from
        ``counts_seq`` (IF slot -> spike counts so far ``[K * B, ...]``) for the ``"count"`` gate of an
        IF layer, else from its own estimate in ``st`` (updated). Returns ``[K * B, C, H', W']``."""
        p = st.pool[self._pool_slot[i]]
        if p is None:  # fed by an IF layer: its spike counts so far are the rates
            rate = counts_seq[self._slot[n.inputs[0]]]
        else:
            rates = self._rates(p, x.reshape(K, *p.shape), st.time)
            st.pool[self._pool_slot[i]] = rates[-1]
            rate = rates.flatten(0, 1)                                  # [K * B, ...]
        if self.maxpool_gate == "count" and self._binary[n.inputs[0]] and n.gains[0] is None:
            return spike_max_pool2d(x, rate, **n.conf)
        return gated_max_pool2d(x, rate, **n.conf)

    def _rates(self, r: Tensor, x: Tensor, time: Tensor) -> Tensor:
        """The max-pool gate's rate estimates after each of ``K`` steps of input ``x [K, B, ...]``,
        from ``r [B, ...]`` after ``time`` steps: ``[K, B, ...]`` (see ``maxpool_gate``)."""
        if self.maxpool_gate == "count":
            return _running_sum(r, x)
        out = torch.empty_like(x)
        for k in range(len(x)):
            t = (time + k + 1).to(x.dtype)
            if self.maxpool_gate == "fir":
                r = r + x[k] / t
            elif self.maxpool_gate == "avg":
                r = r + (x[k] - r) / t
            else:
                r = 1.005 * r + 0.995 * x[k]
            out[k] = r
        return out

    def _count(self, i: int, x: Tensor, synops: Tensor, K: int) -> None:
        """Adds the synaptic operations of node ``i`` for input ``x [K * B, ...]`` to ``synops [K, L]``."""
        binary = self._binary[self._nodes[i].inputs[0]] and (i, 0) not in self._gained
        active = x if binary else (x != 0).to(x.dtype)
        f = getattr(self, f"n{i}_fanout")                               # in the order of _flat
        per_input = _flat(active) @ f                                   # [K * B]
        synops[:, self._syn_slot[i]] += per_input.reshape(K, -1).sum(1).double()

    def _read(self, o: Tensor, st: SNNState, generator: torch.Generator | None) -> Tensor:
        """Readout of ``K`` steps of output current ``o [K, B, C]``: ``[K, B, C]``."""
        if self.readout_gain is not None:
            o = o * self.readout_gain
        if self.readout == "membrane":
            out = _running_sum(st.out_v, o)
            st.out_v.copy_(out[-1])
            return out
        outs = []
        for o_t in o:  # the spiking softmaxes draw per step: [B, C] work only
            st.out_v.add_(o_t)
            p = torch.softmax(st.out_v, 1)
            if self.readout == "spiking_softmax":
                fired = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p
                st.out_v.masked_fill_(fired, 0.0)
            else:  # a clock tick: the most probable output fires, the sample's membranes reset
                tick = torch.rand(p.shape[:1], generator=generator, device=p.device, dtype=p.dtype) \
                    < self.softmax_clock_rate
                fired = (p == p.amax(1, keepdim=True)) & tick[:, None]
                st.out_v.masked_fill_(tick[:, None], 0.0)
            st.out_count.add_(fired.to(p.dtype))
            outs.append(st.out_count + 0.5 * p)  # p < 1 only breaks ties between equal counts
        return torch.stack(outs)

    def step(self, x_t: Tensor, state: SNNState | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, SNNState]:
        """One step: ``x_t [B, ...]`` (current or spikes, as given) -> ``(readout_t [B, C], state)``.

        The state passed in is not modified (it is copied first).
        """
        out, state = self.forward(x_t[None], state, generator)
        return out[0], state

    def forward(self, x_seq: Tensor, state: SNNState | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, SNNState]:
        """Runs ``T`` steps on ``x_seq [T, B, ...]`` (fed as given: currents or spikes).

        Args:
            x_seq: ``[T, B, ...]`` input per step.
            state: from a previous call (copied, not modified), or None for a network at rest.
            generator: for the spiking softmax.
        Returns:
            ``(readout [T, B, C], state)``; ``readout[t].argmax(-1)`` = prediction after ``t + 1`` steps.
        """
        if not isinstance(x_seq, Tensor) or x_seq.dim() < 2:
            raise ValueError("SpikingNetwork: x_seq must be a tensor [T, B, ...] (time first); use run(x, T) "
                             "for a constant image")
        if x_seq.shape[0] == 0 or x_seq.shape[1] == 0:
            raise ValueError(f"SpikingNetwork: x_seq has shape {tuple(x_seq.shape)}; T and B must be at least 1")
        with torch.no_grad():
            if state is None:
                state = self.init_state(x_seq.shape[1], x_seq.device, x_seq.dtype)
        return executor.forward(self, x_seq, state, generator, CHUNK_ELEMENTS)

    # ------------------------------------------------------------------ fast path
    def run(self, x: Tensor, T: int, generator: torch.Generator | None = None, count_ops: bool = True) -> RunResult:
        """Simulates ``T`` steps of one batch of images (the path used by :func:`simulate`).

        Time-invariant values (everything computed from a constant analog input before the first
        IF layer) are computed once; the other nodes run on chunks of steps at once, the IF layers
        on the fast kernels of :mod:`spikegrad.kernels`.

        Args:
            x: images ``[B, ...]`` as the ANN takes them (on the network's device).
            T: number of steps.
            generator: for Poisson input and the spiking softmax.
            count_ops: count synaptic operations (a cheap matrix-vector product per layer and chunk).
        Returns:
            :class:`RunResult`.
        """
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"SpikingNetwork.run: T must be a positive int (steps), got {T!r}")
        if len(x) == 0:
            raise ValueError("SpikingNetwork.run: x is an empty batch; pass at least one image")
        if self.input_mode == "poisson" and x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
            raise ValueError("SpikingNetwork.run: input_mode='poisson' needs intensities in [0, 1]; use "
                             "input_mode='analog' for other inputs")
        readout, counts, synops = executor.run(self, x, T, generator, count_ops, CHUNK_ELEMENTS, CHUNK_STEPS)
        return RunResult(readout, counts, synops)


def _flat(t: Tensor) -> Tensor:
    """``[N, ...] -> [N, F]``; ``[N, C, H, W]`` in channels-last order (a view when it is stored so)."""
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(len(t), -1)
    return t.reshape(len(t), -1)


def _unflat(f: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``[N, F]`` from :func:`_flat` back to ``[N, *shape]``; ``(C, H, W)`` come back channels-last."""
    if len(shape) == 3:
        c, h, w = shape
        return f.reshape(len(f), h, w, c).permute(0, 3, 1, 2)
    return f.reshape(len(f), *shape)


def _running_sum(start: Tensor, x: Tensor) -> Tensor:
    """``start + x[0]``, ``start + x[0] + x[1]``, ... added in that order (as a per-step loop would
    round): ``[K, *start.shape]`` for ``x [K, *start.shape]``."""
    x = x.reshape(len(x), *start.shape)
    out = torch.empty_like(x)
    torch.add(start, x[0], out=out[0])
    for k in range(1, len(x)):
        torch.add(out[k - 1], x[k], out=out[k])
    return out


# ---------------------------------------------------------------------------- simulation
@dataclass
class SimulationResult:
    """Accuracy, operations and firing rates of an SNN over time (all per input, averaged).

    Attributes:
        T: number of steps simulated.
        n_inputs: number of test inputs.
        accuracy_by_step: ``[T]`` accuracy (fraction) of ``argmax`` of the readout after ``t + 1`` steps.
        synops_by_step: ``[T]`` synaptic operations per input during each step (see module doc).
        synops_by_layer: synaptic node name -> operations per input over all ``T`` steps.
        firing_rates: IF layer name -> mean rate (spikes/step/neuron).
        ann_accuracy: accuracy of the ANN on the same inputs (None if not evaluated).
        ann_macs: ANN multiply-accumulates per input.
        bias_ops_per_step: operations per input and step for bias currents (added to
            ``synops_by_step`` only if ``count_bias``).
        spike_counts: IF layer name -> spikes per input over all ``T`` steps.
    """

    T: int
    n_inputs: int
    accuracy_by_step: Tensor
    synops_by_step: Tensor
    synops_by_layer: dict[str, float]
    firing_rates: dict[str, float]
    ann_accuracy: float | None
    ann_macs: float
    bias_ops_per_step: float = 0.0
    spike_counts: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Accuracy after all ``T`` steps (fraction)."""
        return float(self.accuracy_by_step[-1])

    @property
    def synops_cumulative(self) -> Tensor:
        """``[T]`` synaptic operations per input up to and including each step."""
        return self.synops_by_step.cumsum(0)

    @property
    def spikes_per_input(self) -> float:
        """Spikes of all IF layers per input over the whole simulation."""
        return float(sum(self.spike_counts.values()))

    @property
    def synops_per_input(self) -> float:
        """Synaptic operations per input over the whole simulation."""
        return float(self.synops_by_step.sum())

    def steps_to_accuracy(self, target: float) -> int | None:
        """First number of steps ``t`` (1-based) with ``accuracy_by_step[t - 1] >= target``, else None."""
        hit = (self.accuracy_by_step >= target - 1e-12).nonzero()
        return int(hit[0, 0]) + 1 if len(hit) else None

    def steps_within(self, tol: float) -> int | None:
        """Steps until the SNN first comes within ``tol`` (fraction, 0.005 = 0.5 points) of the ANN."""
        if self.ann_accuracy is None:
            raise ValueError("steps_within: the ANN accuracy is unknown; pass ann= to simulate()")
        return self.steps_to_accuracy(self.ann_accuracy - tol)


def _labelled(data, max_inputs: int | None):
    seen = 0
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise TypeError("simulate: data must yield (x, y) batches (e.g. a DataLoader)")
        x, y = batch[0], batch[1]
        if max_inputs is not None:
            x, y = x[: max_inputs - seen], y[: max_inputs - seen]
        if len(x):
            yield x, y
            seen += len(x)
        if max_inputs is not None and seen >= max_inputs:
            return


def evaluate_ann(model: nn.Module, data, device: torch.device | str | None = None,
                 max_inputs: int | None = None) -> float:
    """Accuracy (fraction) of ``model`` on ``(x, y)`` batches, in eval mode (flags restored after)."""
    device = device or next(model.parameters()).device
    correct = n = 0
    with eval_mode(model), torch.no_grad():
        for x, y in _labelled(data, max_inputs):
            correct += int((model(x.to(device)).argmax(-1) == y.to(device)).sum())
            n += len(y)
    if n == 0:
        raise ValueError("evaluate_ann: data yielded no samples")
    return correct / n


def simulate(snn: SpikingNetwork, data, T: int, *, ann: nn.Module | None = None,
             generator: torch.Generator | None = None, device: torch.device | str | None = None,
             max_inputs: int | None = None, count_bias: bool = False, progress: bool = False) -> SimulationResult:
    """Simulates the SNN on labelled data for ``T`` steps; accuracy and operations versus time.

    Only per-step sums are kept (readout ``[T, B, C]`` of one batch at a time, counts ``[B, ...]``).

    Args:
        snn: from :func:`spikegrad.conversion.convert`.
        data: iterable of ``(x, y)`` batches (images as the ANN takes them, int64 labels).
        T: number of steps.
        ann: if given, its accuracy on the same inputs is reported (``ann_accuracy``).
        generator: for Poisson input / spiking softmax (reproducible runs).
        device: where to simulate (default: the SNN's device; the SNN is not moved).
        max_inputs: stop after this many inputs.
        count_bias: add one operation per biased neuron and step to ``synops_by_step``.
        progress: show a tqdm bar over batches.
    Returns:
        :class:`SimulationResult`.
    """
    buf = next(iter(snn.buffers()), None)
    device = torch.device(device) if device is not None else (buf.device if buf is not None else torch.device("cpu"))
    if buf is not None and buf.device != device:
        raise ValueError(f"simulate: the SNN lives on {buf.device} but device={device}; call snn.to({str(device)!r})")
    correct = torch.zeros(T, dtype=torch.float64, device=device)
    synops = torch.zeros(T, len(snn.synaptic), dtype=torch.float64, device=device)
    spikes = torch.zeros(len(snn.neurons), dtype=torch.float64, device=device)
    ann_correct, n = 0, 0
    batches = _labelled(data, max_inputs)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"SNN T={T}", leave=False)
    with eval_mode(ann), torch.no_grad():
        for x, y in batches:
            x, y = x.to(device, snn._dtype()), y.to(device)
            res = snn.run(x, T, generator=generator)
            correct += (res.readout.argmax(-1) == y).sum(1)
            synops += res.synops
            spikes += torch.stack([c.sum(dtype=torch.float64) for c in res.spike_counts]) if res.spike_counts \
                else 0
            if ann is not None:
                ann_correct += int((ann(x).argmax(-1) == y).sum())
            n += len(y)
    if n == 0:
        raise ValueError("simulate: data yielded no samples")
    neurons = torch.tensor([_numel(snn.shapes[i]) for i in snn.neurons], dtype=torch.float64, device=device)
    nodes = snn.nodes()
    bias_ops = float(sum(_numel(snn.shapes[i]) for i in snn.synaptic if nodes[i].params.get("bias") is not None))
    by_step = (synops.sum(1) / n).cpu()
    if count_bias:
        by_step = by_step + bias_ops
    rates = (spikes / (n * T * neurons)).cpu() if len(snn.neurons) else torch.zeros(0)
    return SimulationResult(
        T=T, n_inputs=n, accuracy_by_step=(correct / n).cpu(), synops_by_step=by_step,
        synops_by_layer={k: float(v) for k, v in zip(snn.synaptic_names, (synops.sum(0) / n).cpu())},
        firing_rates={k: float(v) for k, v in zip(snn.layer_names, rates)},
        ann_accuracy=None if ann is None else ann_correct / n, ann_macs=float(sum(snn.macs.values())),
        bias_ops_per_step=bias_ops,
        spike_counts={k: float(v) for k, v in zip(snn.layer_names, (spikes / n).cpu())})
