"""Spiking networks built from the neurons of :mod:`spikegrad.neurons`.

Every model maps a time-first input ``[T, B, ...]`` to a :class:`SpikingOutput`: the readout trace
``[T, B, C]`` plus the spikes and membranes of every hidden layer (for losses, regularizers and
plots). Stateless layers (``Linear``, ``Conv2d``) run on all steps at once by folding ``T`` into
the batch axis (:class:`SeqWise`); only the neurons loop over time.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from . import checks
from .functional import LIFState, LIState, NetworkState, last, recompute_chunks
from .kernels import events
from .kernels._common import hooked
from .kernels.sparse import SparseInputLinear
from .neurons import IF, LI, LIF, DelayedState

__all__ = ["SpikingOutput", "SeqWise", "SpikingMLP", "SpikingConvNet", "spikes_per_input", "eval_mode",
           "layer_by_layer", "recording_v", "takes_state", "run_in_chunks"]

NeuronFactory = Callable[..., nn.Module]


class SpikingOutput(NamedTuple):
    """What a spiking model returns.

    readout: output trace ``[T, B, C]`` (membrane of an ``LI`` readout, or spikes of a ``LIF`` one).
    spikes: per hidden layer, spikes ``[T, B, ...]``.
    v: per hidden layer, membrane potentials ``[T, B, ...]`` (threshold units, after reset);
        empty when the model was built with ``record_v=False``.
    state: the final state of every neuron layer (hidden layers, then the readout), a
        :class:`~spikegrad.functional.NetworkState` of ``[B, ...]`` tensors; pass it as ``state=``
        to the next call to continue the run (streaming inference; truncated BPTT with
        ``state.detach()``).
    """

    readout: Tensor
    spikes: tuple[Tensor, ...]
    v: tuple[Tensor, ...]
    state: NetworkState | None = None


def takes_state(model: nn.Module) -> bool:
    """Whether ``model(x_seq, state=...)`` continues a run from a given state (and returns a
    :class:`SpikingOutput` with the final one), as :class:`SpikingMLP`, :class:`SpikingConvNet` and
    :class:`~spikegrad.interop.NIRNetwork` do."""
    try:
        return "state" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def run_in_chunks(model: nn.Module, x_seq: Tensor, chunk: int) -> SpikingOutput:
    """``model(x_seq)`` run in chunks of ``chunk`` steps, each under activation checkpointing
    (:func:`~spikegrad.functional.recompute_chunks`), the state carried from chunk to chunk.

    Between forward and backward only the input, the outputs and one network state per chunk are
    kept; backward runs each chunk's forward again. What the model keeps for backward (its layers'
    inputs, membranes, adaptation) then grows with ``chunk`` instead of ``T``, for about one more
    forward pass. Outputs and gradients are those of ``model(x_seq)`` up to float rounding (random
    operations such as dropout draw other numbers per chunk than on the whole sequence, and are
    replayed exactly in backward). ``model`` must take ``state=`` (:func:`takes_state`); without
    gradients it runs once.

    Args:
        model: a model ``(x_seq [T, B, ...], state) -> SpikingOutput``. x_seq: ``[T, B, ...]``.
        chunk: steps per chunk (int > 0).
    Returns:
        the :class:`SpikingOutput` of the whole sequence (outputs ``[T, B, ...]``, final state).
    """
    if not takes_state(model):
        raise ValueError(f"run_in_chunks: {type(model).__name__}.forward takes no state argument, so it cannot "
                         "continue a run chunk by chunk; chunk its neuron layers instead "
                         "(spikegrad.neurons.set_recompute(model, chunk))")

    def run(x: Tensor, state):
        out = model(x, state=state)
        return (out.readout, out.spikes, out.v), out.state

    (readout, spikes, v), state = recompute_chunks(run, x_seq, None, chunk)
    return SpikingOutput(readout, spikes, v, state)


def spikes_per_input(out: SpikingOutput) -> Tensor:
    """Mean number of hidden-layer spikes per sample (all hidden layers, all steps), a 0-dim tensor."""
    if not out.spikes:
        return out.readout.new_zeros(())
    batch = out.spikes[0].shape[1]
    return sum(s.detach().sum() for s in out.spikes) / batch


@contextlib.contextmanager
def layer_by_layer(model: nn.Module) -> Iterator[None]:
    """Run every :class:`SpikingMLP` in ``model`` layer by layer (``inference="layers"``), so that
    each neuron module is called (forward hooks see every layer); the settings are restored after."""
    mlps = [m for m in model.modules() if isinstance(m, SpikingMLP)]
    saved = [m.inference for m in mlps]
    for m in mlps:
        m.inference = "layers"
    try:
        yield
    finally:
        for m, mode in zip(mlps, saved):
            m.inference = mode


@contextlib.contextmanager
def eval_mode(*models: nn.Module | None) -> Iterator[None]:
    """Put ``models`` (None entries are skipped) in eval mode; restore every submodule's flag after."""
    flags = {m: m.training for model in models if model is not None for m in model.modules()}
    for model in models:
        if model is not None:
            model.eval()
    try:
        yield
    finally:
        for m, training in flags.items():
            m.training = training


@contextlib.contextmanager
def recording_v(model: nn.Module) -> Iterator[None]:
    """Make every submodule with a ``record_v`` flag record membrane potentials; restore after."""
    flags = {m: m.record_v for m in model.modules() if hasattr(m, "record_v")}
    for m in flags:
        m.record_v = True
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.record_v = flag


class SeqWise(nn.Module):
    """Apply a stateless module to every step at once: ``[T, B, ...] -> [T, B, ...']``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x_seq: Tensor) -> Tensor:
        T, B = x_seq.shape[:2]
        if type(self.module) is nn.Linear and x_seq.dim() == 3:  # narrow layers: faster input gradient
            from .kernels.linear import seq_linear

            return seq_linear(x_seq, self.module.weight, self.module.bias)
        y = self.module(x_seq.reshape(T * B, *x_seq.shape[2:]))  # [T*B, ...]
        return y.reshape(T, B, *y.shape[1:])


def _run_neuron(neuron: nn.Module, x_seq: Tensor, state, record_v: bool) -> tuple[Tensor, Tensor | None, object]:
    """``(output [T, B, ...], membranes [T, B, ...] or None, final state)`` of one neuron layer."""
    if not record_v:
        out, final = neuron(x_seq, state)
        return out, None, final
    out, states = neuron(x_seq, state, record=True)
    if isinstance(states, DelayedState):  # the neuron's states are recorded, its carried input is not
        return out, states.neuron.v, DelayedState(last(states.neuron), states.last_x)
    return out, states.v, last(states)


def _autocasting() -> bool:
    """Whether CPU autocast (e.g. bfloat16 training) is on: the event-driven kernel computes in the input's dtype."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _recurrent_neuron(neuron: NeuronFactory, n: int, gain: float) -> nn.Module:
    """``neuron(recurrent=n)`` with Gaussian recurrent weights of std ``gain / sqrt(n)``."""
    try:
        layer = neuron(recurrent=n)
    except TypeError as e:
        raise ValueError(f"SpikingMLP(recurrent=True): the hidden neuron factory does not take recurrent=N ({e}); "
                         "use LIF or ALIF (neuron=lif or neuron=alif)") from None
    if getattr(layer, "w_rec", None) is None:
        raise ValueError(f"SpikingMLP(recurrent=True): {type(layer).__name__} built with recurrent={n} has no "
                         "recurrent weights (w_rec); use LIF or ALIF")
    with torch.no_grad():
        layer.w_rec.normal_(0.0, gain / math.sqrt(n))
    return layer


def _hooked(model: nn.Module) -> bool:
    """Whether a forward hook (global, or on a submodule of ``model``) waits to see the layers run."""
    from torch.nn.modules import module as _module

    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    return any(hooked(m) for m in model.modules() if m is not model)


def _init_linear(layer: nn.Linear, gain: float) -> None:
    """Gaussian weights with std ``gain / sqrt(fan_in)``; zero bias."""
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(layer.in_features))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class SpikingMLP(nn.Module):
    """Feed-forward spiking MLP: ``Linear -> neuron`` per hidden layer, ``Linear -> readout``.

    The BrainScaleS-2 MNIST network is ``SpikingMLP(sizes=[256, 246, 10])`` with LIF hidden neurons
    and a leaky-integrator readout.

    Args:
        sizes: layer widths ``[n_in, n_hidden..., n_out]``; input ``[T, B, ...]`` is flattened to
            ``[T, B, n_in]``.
        neuron: factory of hidden neurons, called once per hidden layer (e.g. ``functools.partial(LIF,
            tau_mem=8.0)`` or a Hydra ``_partial_`` config).
        readout: factory of the output neurons (default ``LI``: the output is a membrane trace).
        bias: use biases in the linear layers.
        weight_gain: std of the initial hidden-layer weights times ``sqrt(fan_in)``.
        readout_gain: the same for the output layer.
        record_v: return the hidden membrane potentials in :attr:`SpikingOutput.v` (needed by
            voltage regularizers; costs memory traffic). Plots switch it on by :func:`recording_v`.
        sparse_input: compute the first layer on the non-zeros of its input
            (:class:`~spikegrad.kernels.SparseInputLinear`; same result up to rounding, much less
            work for latency codes; dense inputs fall back to the dense product).
        dropout: probability of dropping a hidden spike on its way to the next layer while training
            (``nn.Dropout``: kept spikes are scaled by ``1 / (1 - p)``; nothing is dropped in eval mode).
        recurrent: give every hidden layer all-to-all recurrent weights on its own previous step's
            spikes (the neuron factory is called with ``recurrent=N``; ``LIF`` and ``ALIF`` take it):
            the recurrent spiking classifier of temporal tasks (SHD, sequential MNIST, Randman).
        recurrent_gain: std of the initial recurrent weights times ``sqrt(N)`` (Gaussian, zero mean).
        inference: "auto" (default): without gradients (``torch.no_grad``), on CPU in float32 /
            float64 with the C kernels, a model of plain ``LIF`` / ``IF`` hidden layers and an ``LI``
            readout (``backend="auto"``, no refractory period or recurrence, no recorded membranes,
            no forward hooks on its submodules: hooks see every layer run) runs as one event-driven kernel, image by image
            (:func:`spikegrad.kernels.events.mlp_forward`): the same spikes and states as layer by
            layer (the first layer sums its inputs as ``sparse_input`` does), the later layers' sums
            in another order (float rounding). "layers": always layer by layer.
    """

    def __init__(self, sizes: Sequence[int], neuron: NeuronFactory = LIF, readout: NeuronFactory = LI,
                 bias: bool = False, weight_gain: float = 2.0, readout_gain: float = 0.2,
                 record_v: bool = True, sparse_input: bool = False, inference: str = "auto",
                 dropout: float = 0.0, recurrent: bool = False, recurrent_gain: float = 1.0):
        super().__init__()
        self.record_v = bool(record_v)
        self.dropout = nn.Dropout(checks.real("SpikingMLP", "dropout", dropout, lambda p: 0 <= p < 1,
                                              "a probability in [0, 1)"))
        self.inference = checks.one_of("SpikingMLP", "inference", inference, ("auto", "layers"))
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) <= 0:
            raise ValueError(f"SpikingMLP: sizes must list at least input and output widths (> 0), got {sizes}")
        if not (weight_gain > 0 and readout_gain > 0 and recurrent_gain >= 0):
            raise ValueError(f"SpikingMLP: weight_gain and readout_gain must be > 0 and recurrent_gain >= 0, got "
                             f"{weight_gain}, {readout_gain}, {recurrent_gain}")
        self.recurrent = bool(recurrent)
        self.sizes = sizes
        self.layers = nn.ModuleList()
        self.neurons = nn.ModuleList()
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if k == 0 and sparse_input:  # an nn.Linear subclass: same parameters, same initialization
                lin = SparseInputLinear(n_in, n_out, bias=bias)
            else:
                lin = nn.Linear(n_in, n_out, bias=bias)
            _init_linear(lin, weight_gain if k < len(sizes) - 2 else readout_gain)
            self.layers.append(SeqWise(lin))
            if k == len(sizes) - 2:
                self.neurons.append(readout())
            elif recurrent:
                self.neurons.append(_recurrent_neuron(neuron, n_out, recurrent_gain))
            else:
                self.neurons.append(neuron())

    def forward(self, x_seq: Tensor | events.SpikeTimes, state: NetworkState | None = None,
                record_spikes: bool = True) -> SpikingOutput:
        """``x_seq [T, B, ...]`` (trailing dims multiply to ``sizes[0]``), or one spike time per input
        (:class:`~spikegrad.kernels.events.SpikeTimes`, e.g. ``LatencyEncoder.times(images)``) ->
        :class:`SpikingOutput`.

        ``state``: None (every neuron at rest) or the ``state`` of the :class:`SpikingOutput` of a
        previous call (a :class:`~spikegrad.functional.NetworkState`, one ``[B, ...]`` state per
        neuron layer), to continue it: running a sequence in chunks gives the same outputs as one run.
        ``record_spikes=False``: leave :attr:`SpikingOutput.spikes` empty (saves writing them in the
        event-driven inference path, when only the readout is needed).
        """
        if isinstance(x_seq, events.SpikeTimes):  # one spike time per input (e.g. LatencyEncoder.times)
            if x_seq.times.dim() != 2 or x_seq.times.shape[1] != self.sizes[0]:
                raise ValueError(f"SpikingMLP: the model expects spike times [B, {self.sizes[0]}], got "
                                 f"{tuple(x_seq.times.shape)}")
            states = NetworkState.of("SpikingMLP", state, len(self.neurons))
            consts = self._event_constants(x_seq.dtype, states) if x_seq.times.device.type == "cpu" else None
            if consts is not None:
                return self._forward_events(x_seq, states, consts, record_spikes)
            x_seq = x_seq.dense()
        if x_seq.dim() < 3:
            raise ValueError(f"SpikingMLP: input must be [T, B, features...], got shape {tuple(x_seq.shape)}")
        h = x_seq.flatten(2)  # [T, B, n_in]
        if h.shape[-1] != self.sizes[0]:
            side = math.isqrt(h.shape[-1])
            hint = f" ({side}x{side} images)" if side * side == h.shape[-1] else ""
            raise ValueError(f"SpikingMLP: the model expects {self.sizes[0]} input features but got "
                             f"{h.shape[-1]}{hint}; match the data's image size (data.size) to model.sizes[0]")
        states = NetworkState.of("SpikingMLP", state, len(self.neurons))
        consts = self._event_constants(h.dtype, states) if h.device.type == "cpu" else None
        if consts is not None:
            return self._forward_events(h, states, consts, record_spikes)
        spikes, vs, finals = [], [], []
        for k, (layer, neuron) in enumerate(zip(self.layers, self.neurons)):
            h = layer(h)
            if k < len(self.layers) - 1:
                h, v, final = _run_neuron(neuron, h, states[k], self.record_v)
                spikes.append(h)
                h = self.dropout(h)
                if v is not None:
                    vs.append(v)
            else:
                h, final = neuron(h, states[k])
            finals.append(final)
        return SpikingOutput(h, tuple(spikes) if record_spikes else (), tuple(vs), NetworkState(finals))

    def _event_constants(self, dtype: torch.dtype, states: tuple) -> list[tuple[Tensor, ...]] | None:
        """The neurons' constants for the event-driven kernel on CPU input of ``dtype`` (per hidden
        layer ``(decay_mem, decay_syn, v_th, v_reset)``, for the readout ``(decay_mem, decay_syn)``),
        or None when :meth:`forward` runs layer by layer (see ``inference``)."""
        if (self.inference != "auto" or self.record_v or torch.is_grad_enabled() or torch.compiler.is_compiling()
                or _hooked(self)
                or (self.training and self.dropout.p > 0) or _autocasting()
                or dtype not in (torch.float32, torch.float64) or not events.available()
                or any(p.device.type != "cpu" for p in self.parameters())):
            return None
        hidden, readout = self.neurons[:-1], self.neurons[-1]
        if type(readout) is not LI or any(type(n) not in (LIF, IF) or n.refractory or n.w_rec is not None
                                          for n in hidden) or any(n.backend != "auto" for n in self.neurons):
            return None  # other neurons, or a backend the user chose
        if not all(type(layer.module) in (nn.Linear, SparseInputLinear) for layer in self.layers):
            return None
        consts = []
        for n, size, st in zip(self.neurons, self.sizes[1:], states):
            p = n.params(dtype)
            c = (p.decay_mem, p.decay_syn) if n is readout else (p.decay_mem, p.decay_syn, p.v_th, p.v_reset)
            c = tuple(torch.as_tensor(t) for t in c)
            if any(t.numel() not in (1, size) for t in c):
                return None
            if st is not None and (type(st) is not (LIState if n is readout else LIFState)
                                   or any(f is not None for f in st[2:])):
                return None
            consts.append(c)
        return consts

    def _forward_events(self, x: Tensor | events.SpikeTimes, states: tuple, consts: list[tuple[Tensor, ...]],
                        record_spikes: bool) -> SpikingOutput:
        """:meth:`forward` as one event-driven kernel on ``x [T, B, n_in]`` or spike times, with the
        neurons' ``consts`` from :meth:`_event_constants`."""
        dtype = x.dtype
        B = x.times.shape[0] if isinstance(x, events.SpikeTimes) else x.shape[1]
        init = [tuple(torch.zeros((B, size), dtype=dtype) for _ in range(2)) if st is None else
                tuple(f.reshape(B, size).to(dtype).clone(memory_format=torch.contiguous_format) for f in st[:2])
                for size, st in zip(self.sizes[1:], states)]  # (v, i) per layer, updated in place by the kernel
        resets = [n.reset for n in self.neurons[:-1]]
        weights = [layer.module.weight for layer in self.layers]
        biases = [layer.module.bias for layer in self.layers]
        readout, spikes = events.mlp_forward(x, weights, biases, consts, resets, init, record_spikes)
        finals = NetworkState(LIState(*vi) if type(n) is LI else LIFState(*vi) for n, vi in zip(self.neurons, init))
        return SpikingOutput(readout, tuple(spikes) if record_spikes else (), (), finals)


class SpikingConvNet(nn.Module):
    """Small spiking CNN: ``[Conv3x3 -> neuron -> MaxPool2]`` per channel entry, then an MLP head.

    Args:
        in_shape: ``(C, H, W)`` of one input frame.
        channels: output channels of each conv block, e.g. ``[16, 32]``.
        hidden: widths of the spiking fully connected layers after flattening, e.g. ``[128]``.
        n_classes: output width.
        neuron, readout: neuron factories as in :class:`SpikingMLP`.
        kernel_size: conv kernel size (odd; "same" padding).
        weight_gain, readout_gain: std of the initial hidden / output weights times ``sqrt(fan_in)``.
        record_v: return the hidden membrane potentials (see :class:`SpikingMLP`).
    Shapes: ``[T, B, C, H, W] -> SpikingOutput(readout [T, B, n_classes], ...)``.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 16, 16), channels: Sequence[int] = (16, 32),
                 hidden: Sequence[int] = (128,), n_classes: int = 10, neuron: NeuronFactory = LIF,
                 readout: NeuronFactory = LI, kernel_size: int = 3, weight_gain: float = 2.0,
                 readout_gain: float = 0.2, record_v: bool = True):
        super().__init__()
        self.record_v = bool(record_v)
        c, h, w = (int(s) for s in in_shape)
        if kernel_size % 2 != 1:
            raise ValueError(f"SpikingConvNet: kernel_size must be odd, got {kernel_size}")
        self.in_shape = (c, h, w)
        self.blocks = nn.ModuleList()
        self.neurons = nn.ModuleList()
        for ch in channels:
            conv = nn.Conv2d(c, ch, kernel_size, padding=kernel_size // 2, bias=False)
            nn.init.normal_(conv.weight, 0.0, weight_gain / math.sqrt(c * kernel_size**2))
            self.blocks.append(SeqWise(conv))
            self.neurons.append(neuron())
            c, h, w = ch, h // 2, w // 2
            if h == 0 or w == 0:
                raise ValueError(f"SpikingConvNet: {len(channels)} pooling stages are too many for input {in_shape}")
        self.pool = SeqWise(nn.MaxPool2d(2))
        self.head = SpikingMLP([c * h * w, *hidden, n_classes], neuron=neuron, readout=readout,
                               weight_gain=weight_gain, readout_gain=readout_gain, record_v=record_v)

    def forward(self, x_seq: Tensor, state: NetworkState | None = None) -> SpikingOutput:
        """``x_seq [T, B, C, H, W]`` -> :class:`SpikingOutput`; ``state`` as in :meth:`SpikingMLP.forward`:
        the state of every conv block's neurons ``[B, C, H, W]``, then the head's
        :class:`~spikegrad.functional.NetworkState`."""
        if x_seq.dim() != 5 or tuple(x_seq.shape[2:]) != self.in_shape:
            raise ValueError(f"SpikingConvNet: input must be [T, B, {', '.join(map(str, self.in_shape))}], got "
                             f"{tuple(x_seq.shape)}; match data.size / the encoder output to model.in_shape")
        states = NetworkState.of("SpikingConvNet", state, len(self.neurons) + 1)
        spikes, vs, finals = [], [], []
        h = x_seq
        for conv, neuron, st in zip(self.blocks, self.neurons, states):
            h, v, final = _run_neuron(neuron, conv(h), st, self.record_v)  # [T, B, C, H, W]
            spikes.append(h)
            finals.append(final)
            if v is not None:
                vs.append(v)
            h = self.pool(h)
        out = self.head(h, states[-1])
        return SpikingOutput(out.readout, tuple(spikes) + out.spikes, tuple(vs) + out.v,
                             NetworkState((*finals, out.state)))
