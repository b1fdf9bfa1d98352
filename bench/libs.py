"""The benchmark workloads, built for each library with matched settings.

Every library runs the same current-based LIF, per step::

    i = ds * i + x;   v = dm * v + i;   s = H(v - 1);   v = 0 where s (zero reset)

with ``dm = exp(-1/tau_mem)``, ``ds = exp(-1/tau_syn)`` and a SuperSpike / fast-sigmoid surrogate
(SpikingJelly's ``SuperSpike`` has no slope inside ``|x|``; its shape differs, its cost does not).
Zero reset is the one reset all four libraries offer. Matching notes:

* snnTorch ``Synaptic`` applies the reset one step late by default: ``reset_delay=False``.
* norse integrates ``v += dt/tau_mem (i - v)`` *after* adding the input to ``i``: with
  ``dt * tau_mem_inv = 1 - dm`` and ``dt * tau_syn_inv = 1 - ds`` this is the same recurrence when
  the input is divided by ``1 - dm`` (done once, outside the timed region, or folded into the
  weights). Its reset passes gradient; spikegrad is also run that way (``detach_reset=False``).
* Loops go over ``x.unbind(0)``; snnTorch's tutorial idiom ``x[t]`` is timed as a separate row.

The ``recurrent lif`` / ``recurrent alif`` workloads of ``bench/run.py`` use the peers' recurrent
layers (:data:`RECURRENT_PEERS`), with spikegrad's recurrent weights copied in; what differs from
spikegrad's recurrent LIF / ALIF (reset by subtraction, detached) is in each class's docstring.

A *row* is ``(workload, library, variant)``; :func:`build` returns a callable doing one
measured iteration plus metadata. Rows of libraries that are not installed raise ImportError.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

THRESHOLD = 1.0


def decays(tau_mem: float, tau_syn: float) -> tuple[float, float]:
    return math.exp(-1.0 / tau_mem), math.exp(-1.0 / tau_syn)


# ----------------------------------------------------------------------------- neuron layers
# each: module mapping x [T, B, N] -> spikes [T, B, N] (and for readouts, the membrane trace)

def spikegrad_lif(tau_mem, tau_syn, backend, detach_reset=True, record=False, learn_tau=False, learn_threshold=False):
    from spikegrad.neurons import LIF

    lif = LIF(tau_mem=tau_mem, tau_syn=tau_syn, reset="zero", detach_reset=detach_reset,
              surrogate="fast_sigmoid", backend=backend, learn_tau=learn_tau, learn_threshold=learn_threshold)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = lif

        def forward(self, x):
            return self.lif(x, record=record)[0]

    return Layer()


class SnnTorchLIF(nn.Module):
    def __init__(self, tau_mem, tau_syn, index_loop=False, readout=False):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        dm, ds = decays(tau_mem, tau_syn)
        self.index_loop = index_loop
        self.readout = readout
        self.cell = snn.Synaptic(alpha=ds, beta=dm, threshold=1e9 if readout else THRESHOLD,
                                 spike_grad=surrogate.fast_sigmoid(slope=25),
                                 reset_mechanism="none" if readout else "zero", reset_delay=False)

    def forward(self, x):
        syn, mem = self.cell.reset_mem()
        outs = []
        steps = (x[t] for t in range(x.shape[0])) if self.index_loop else x.unbind(0)
        for x_t in steps:
            spk, syn, mem = self.cell(x_t, syn, mem)
            outs.append(mem if self.readout else spk)
        return torch.stack(outs)


class SpikingJellyCUBA(nn.Module):
    def __init__(self, tau_mem, tau_syn, readout=False):
        super().__init__()
        from spikingjelly.activation_based import functional, neuron, surrogate

        dm, ds = decays(tau_mem, tau_syn)
        self.functional = functional
        self.readout = readout
        self.node = neuron.CUBALIFNode(c_decay=ds, v_decay=dm, v_threshold=float("inf") if readout else THRESHOLD,
                                       v_reset=0.0, surrogate_function=surrogate.SuperSpike())
        self.node.detach_reset = True
        self.node.step_mode = "m"
        if readout:
            self.node.store_v_seq = True

    def forward(self, x):
        self.functional.reset_net(self)
        s = self.node(x)
        return self.node.v_seq if self.readout else s


class SpikingJellyLIF(nn.Module):
    """SpikingJelly's fused multi-step ``LIFNode``: no synaptic current (a different, cheaper model)."""

    def __init__(self, tau_mem):
        super().__init__()
        from spikingjelly.activation_based import functional, neuron, surrogate

        self.functional = functional
        self.node = neuron.LIFNode(tau=tau_mem, decay_input=False, v_threshold=THRESHOLD, v_reset=0.0,
                                   surrogate_function=surrogate.SuperSpike(), detach_reset=True, step_mode="m")

    def forward(self, x):
        self.functional.reset_net(self)
        return self.node(x)


class NorseLIF(nn.Module):
    """norse LIF; ``scale_input`` divides the input by ``1 - dm`` (see the module docstring)."""

    def __init__(self, tau_mem, tau_syn, unbind_loop=False, readout=False, scale_input=True):
        super().__init__()
        import norse.torch as nt

        dm, ds = decays(tau_mem, tau_syn)
        self.a = 1.0 - dm
        self.scale = 1.0 / self.a if scale_input else 1.0
        self.readout, self.unbind_loop = readout, unbind_loop
        if readout:
            self.p = nt.LIParameters(tau_syn_inv=torch.tensor(1.0 - ds), tau_mem_inv=torch.tensor(self.a))
            self.module = nt.LI(p=self.p, dt=1.0)
        else:
            self.p = nt.LIFParameters(tau_syn_inv=torch.tensor(1.0 - ds), tau_mem_inv=torch.tensor(self.a),
                                      v_th=torch.tensor(THRESHOLD), v_reset=torch.tensor(0.0), method="super",
                                      alpha=torch.tensor(25.0))
            self.module = nt.LIF(p=self.p, dt=1.0)

    def forward(self, x):
        x = x * self.scale if self.scale != 1.0 else x
        if not self.unbind_loop:
            return self.module(x)[0]
        from norse.torch.functional.lif import LIFFeedForwardState, lif_feed_forward_step

        p = self.p
        state = LIFFeedForwardState(torch.zeros_like(x[0]), torch.zeros_like(x[0]))
        outs = []
        for x_t in x.unbind(0):
            z, state = lif_feed_forward_step(x_t, state, p, dt=1.0)
            outs.append(z)
        return torch.stack(outs)


NEURONS = {
    # variant -> (library, factory(tau_mem, tau_syn, readout) -> module, note)
    "spikegrad/torch": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "torch"), "reference scan"),
    "spikegrad/native": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "native"), "C kernels, CPU default"),
    "spikegrad/native nodetach": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "native", detach_reset=False),
                                  "reset passes grad (as norse)"),
    "spikegrad/native learn_tau": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "native", learn_tau=True),
                                   "learnable tau_mem, tau_syn (their gradients in C)"),
    "spikegrad/native learn_tau+v_th": ("spikegrad",
                                        lambda tm, ts: spikegrad_lif(tm, ts, "native", learn_tau=True,
                                                                     learn_threshold=True),
                                        "learnable tau_mem, tau_syn, v_th"),
    "spikegrad/torch learn_tau": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "torch", learn_tau=True),
                                  "learnable tau, reference scan (the path before)"),
    "spikegrad/fused": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "fused"), "PyTorch ops, any device"),
    "spikegrad/fused_lowmem": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "fused_lowmem"), "bf16 state"),
    "spikegrad/fused nodetach": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "fused", detach_reset=False),
                                 "reset passes grad (as norse)"),
    "spikegrad/triton": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "triton"), "GPU default"),
    "spikegrad/triton_lowmem": ("spikegrad", lambda tm, ts: spikegrad_lif(tm, ts, "triton_lowmem"), "bf16 state"),
    "snntorch/unbind": ("snntorch", lambda tm, ts: SnnTorchLIF(tm, ts), "Synaptic, reset_delay=False"),
    "snntorch/x[t]": ("snntorch", lambda tm, ts: SnnTorchLIF(tm, ts, index_loop=True), "tutorial loop"),
    "spikingjelly/CUBALIFNode": ("spikingjelly", lambda tm, ts: SpikingJellyCUBA(tm, ts), "step loop (no fused CUBA)"),
    "spikingjelly/LIFNode": ("spikingjelly", lambda tm, ts: SpikingJellyLIF(tm), "fused, NO tau_syn (other model)"),
    "norse/LIF": ("norse", lambda tm, ts: NorseLIF(tm, ts), "module (x[t] loop)"),
    "norse/unbind": ("norse", lambda tm, ts: NorseLIF(tm, ts, unbind_loop=True), "functional step, unbind"),
}

READOUTS = {
    "spikegrad": lambda tm, ts: None,  # built inside the spikegrad model
    "snntorch": lambda tm, ts: SnnTorchLIF(tm, ts, readout=True),
    "spikingjelly": lambda tm, ts: SpikingJellyCUBA(tm, ts, readout=True),
    "norse": lambda tm, ts: NorseLIF(tm, ts, readout=True),
}


# ----------------------------------------------------------------------------- recurrent layers
# each: module mapping x [T, B, N] (``input_scale`` applied once, outside the timing) -> spikes
# [T, B, N], with all-to-all recurrent weights ``weight`` [N, N] (row = target neuron) copied from
# spikegrad's ``w_rec``; taus in steps

class SnnTorchRecurrentLIF(nn.Module):
    """snnTorch ``RSynaptic`` (all-to-all ``Linear(N, N)``, its bias removed), stepped over ``x.unbind(0)``.

    ``alpha = ds``, ``beta = dm``, threshold 1, reset by subtraction, fast-sigmoid surrogate of slope 25:
    spikegrad's recurrent LIF except that the reset comes one step late, after the decay, so it
    subtracts 1 where spikegrad subtracts ``dm``. (``reset_delay=False`` does not help: in RSynaptic
    1.0 it fails on the empty initial state and otherwise changes only a local copy of the membrane.)
    """

    input_scale = 1.0

    def __init__(self, w_rec: torch.Tensor, tau_mem: float, tau_syn: float):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        dm, ds = decays(tau_mem, tau_syn)
        self.cell = snn.RSynaptic(alpha=ds, beta=dm, all_to_all=True, linear_features=w_rec.shape[0],
                                  threshold=THRESHOLD, spike_grad=surrogate.fast_sigmoid(slope=25),
                                  reset_mechanism="subtract")
        self.cell.recurrent.bias = None
        with torch.no_grad():
            self.cell.recurrent.weight.copy_(w_rec)

    @property
    def weight(self) -> nn.Parameter:
        return self.cell.recurrent.weight

    def forward(self, x):
        spk, syn, mem = self.cell.reset_mem()
        outs = []
        for x_t in x.unbind(0):
            spk, syn, mem = self.cell(x_t, spk, syn, mem)
            outs.append(spk)
        return torch.stack(outs)


class NorseRecurrent(nn.Module):
    """norse ``LIFRecurrentCell``, or ``LSNNRecurrentCell`` (``adaptive``), stepped over ``x.unbind(0)``, ``dt = 1``.

    norse integrates forward Euler, ``v += tau_mem_inv (v_leak - v + i)``: with ``tau_mem_inv = 1 - dm``,
    ``tau_syn_inv = 1 - ds`` and the input and recurrent weights divided by ``1 - dm`` (the input
    through ``input_scale``) its LIF is spikegrad's recurrence (see the module docstring), except
    the reset: to ``v_reset = 0``, where spikegrad subtracts the threshold. The LSNN, with
    ``tau_adapt_inv = 1 - exp(-1/tau_ada)`` and ``beta (1 - exp(-1/tau_ada))`` per spike (spikegrad's
    threshold raise per spike), also resets to zero, adds the input and the recurrent spikes to
    ``i`` after updating ``v`` (they reach ``v`` one step later than in spikegrad, the recurrence
    two steps after the spike) and decays the raise once before it first acts. The cells always
    multiply the input by input weights: here the identity, frozen (one more ``[B, N] x [N, N]``
    product per step, and one for the input gradient). ``autapses=True`` keeps ``w_rec``'s diagonal
    (norse zeroes it by default). Surrogate: ``method="super"``, ``alpha=25``, but norse 1.1's
    SuperSpike ignores ``alpha`` (``1 / (1 + |x|)^2``, slope 1); the forward pass does not depend on it.
    """

    def __init__(self, w_rec: torch.Tensor, tau_mem: float, tau_syn: float, adaptive: bool = False,
                 tau_ada: float = 200.0, beta: float = 1.8):
        super().__init__()
        import norse.torch as nt

        dm, ds = decays(tau_mem, tau_syn)
        a = 1.0 - dm
        self.input_scale = 1.0 / a
        n = w_rec.shape[0]
        common = dict(tau_syn_inv=torch.tensor(1.0 - ds), tau_mem_inv=torch.tensor(a), v_leak=torch.tensor(0.0),
                      v_th=torch.tensor(THRESHOLD), v_reset=torch.tensor(0.0), method="super",
                      alpha=torch.tensor(25.0))
        if adaptive:
            ada = 1.0 - math.exp(-1.0 / tau_ada)
            p = nt.LSNNParameters(tau_adapt_inv=torch.tensor(ada), beta=torch.tensor(beta * ada), **common)
            cell = nt.LSNNRecurrentCell
        else:
            p = nt.LIFParameters(**common)
            cell = nt.LIFRecurrentCell
        eye = nn.Parameter(torch.eye(n, dtype=w_rec.dtype, device=w_rec.device), requires_grad=False)
        self.cell = cell(n, n, p=p, dt=1.0, autapses=True, input_weights=eye,
                         recurrent_weights=nn.Parameter(w_rec.detach() / a))

    @property
    def weight(self) -> nn.Parameter:
        return self.cell.recurrent_weights

    def forward(self, x):
        state = None
        outs = []
        for x_t in x.unbind(0):
            z, state = self.cell(x_t, state)
            outs.append(z)
        return torch.stack(outs)


RECURRENT_PEERS = {
    # variant -> (library, workload, factory(w_rec, tau_mem, tau_syn) -> module, note)
    "snntorch/RSynaptic": ("snntorch", "recurrent lif", lambda w, tm, ts: SnnTorchRecurrentLIF(w, tm, ts),
                           "x.unbind(0); reset 1 step late (subtracts 1, not dm)"),
    "norse/LIFRecurrentCell": ("norse", "recurrent lif", lambda w, tm, ts: NorseRecurrent(w, tm, ts),
                               "x.unbind(0); zero reset; + identity input weights"),
    "norse/LSNNRecurrentCell": ("norse", "recurrent alif",
                                lambda w, tm, ts: NorseRecurrent(w, tm, ts, adaptive=True),
                                "x.unbind(0); zero reset; input 1, recurrence 2 steps late; + identity input weights"),
}


# ----------------------------------------------------------------------------- mnist16 model

class PeerMLP(nn.Module):
    """256 -> hidden LIF -> 10 LI for a peer library; Linear layers run on all steps at once."""

    def __init__(self, hidden_neuron: nn.Module, readout: nn.Module, w1: torch.Tensor, w2: torch.Tensor,
                 scale_hidden: float = 1.0, scale_out: float = 1.0):
        super().__init__()
        self.fc1 = nn.Linear(w1.shape[1], w1.shape[0], bias=False)
        self.fc2 = nn.Linear(w2.shape[1], w2.shape[0], bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(w1 * scale_hidden)
            self.fc2.weight.copy_(w2 * scale_out)
        self.hidden, self.readout = hidden_neuron, readout

    def forward(self, x):
        s = self.hidden(self.fc1(x))
        return self.readout(self.fc2(s)), s


class SpikegradMLP(nn.Module):
    """spikegrad's model: :class:`spikegrad.models.SpikingMLP` (as ``experiment=mnist16`` builds it)."""

    def __init__(self, tau_mem, tau_syn, backend, sparse_input=False, w1=None, w2=None):
        super().__init__()
        from spikegrad.models import SpikingMLP
        from spikegrad.neurons import LI, LIF

        neuron = functools.partial(LIF, tau_mem=tau_mem, tau_syn=tau_syn, reset="zero", backend=backend)
        li_backend = "torch" if backend in ("torch", "fused", "triton") else backend  # "auto" stays "auto"
        readout = functools.partial(LI, tau_mem=tau_mem, tau_syn=tau_syn, backend=li_backend)
        # record_v=False: the peers' models return no membrane traces either
        self.net = SpikingMLP([256, 246, 10], neuron=neuron, readout=readout, bias=False, record_v=False,
                              sparse_input=sparse_input)
        with torch.no_grad():
            if w1 is not None:
                self.net.layers[0].module.weight.copy_(w1)
                self.net.layers[1].module.weight.copy_(w2)

    def forward(self, x):
        out = self.net(x)
        return out.readout, out.spikes[0]


MNIST_VARIANTS = {
    # variant -> (library, note)
    "spikegrad/torch": ("spikegrad", "reference scan"),
    "spikegrad/fused": ("spikegrad", "fused LIF"),
    "spikegrad/fused+sparse": ("spikegrad", "fused LIF + sparse-input Linear"),
    "spikegrad/native": ("spikegrad", "C LIF + LI"),
    "spikegrad/native+sparse": ("spikegrad", "C LIF + LI + sparse-input Linear"),
    "spikegrad/auto+sparse": ("spikegrad", "CPU default: native+sparse; no-grad: one event-driven kernel"),
    "spikegrad/triton": ("spikegrad", "Triton LIF"),
    "snntorch/unbind": ("snntorch", "Synaptic, reset_delay=False"),
    "spikingjelly/CUBALIFNode": ("spikingjelly", "step loop"),
    "norse/LIF": ("norse", "module"),
    "norse/unbind": ("norse", "functional step, unbind"),
}


def mnist_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(246, 256, generator=g) * (2.0 / math.sqrt(256))
    w2 = torch.randn(10, 246, generator=g) * (0.2 / math.sqrt(246))
    return w1, w2


def build_mnist_model(variant: str, tau_mem: float, tau_syn: float) -> nn.Module:
    lib, _ = MNIST_VARIANTS[variant]
    w1, w2 = mnist_weights()
    if lib == "spikegrad":
        backend = variant.split("/")[1].split("+")[0]
        return SpikegradMLP(tau_mem, tau_syn, backend, sparse_input=variant.endswith("+sparse"), w1=w1, w2=w2)
    hidden = NEURONS[variant][1](tau_mem, tau_syn)
    readout = READOUTS[lib](tau_mem, tau_syn)
    if lib == "norse":  # the input scaling folded into the weights
        a = 1.0 - math.exp(-1.0 / tau_mem)
        hidden.scale = readout.scale = 1.0
        return PeerMLP(hidden, readout, w1, w2, scale_hidden=1.0 / a, scale_out=1.0 / a)
    return PeerMLP(hidden, readout, w1, w2)


def latency_batch(B: int, T: int, seed: int = 0):
    """Latency-coded synthetic 16x16 'digits' ``[T, B, 256]`` (each pixel fires at most once) and labels."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(B, 256, generator=g)
    img = torch.where(torch.rand(B, 256, generator=g) < 0.35, img, torch.zeros_like(img))  # ~30 % lit
    try:
        from spikegrad.encoding import latency_encode

        x = latency_encode(img, T, method="linear", threshold=0.2)
    except ImportError:  # pragma: no cover
        t = ((1 - (img - 0.2) / 0.8) * (T - 1)).round().long().clamp(0, T - 1)
        x = torch.zeros(T, B, 256).scatter_(0, t[None], (img > 0.2).float()[None])
    y = torch.randint(0, 10, (B,), generator=g)
    return x, y


def readout_loss(v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Max-over-time cross-entropy on the readout membrane ``[T, B, 10]``."""
    return F.cross_entropy(v.amax(0), y)
