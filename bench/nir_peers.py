"""NIR between spikegrad, snnTorch, Norse and SpikingJelly on the MNIST test set; the peers' NIR bugs.

    pip install --no-index --no-deps --find-links ../shared/wheels/peers nir==1.0.8 nirtorch==2.6 \\
        snntorch==1.0.0 norse==1.1.0 spikingjelly==2.0.0 loguru==0.7.3        # plus h5py
    python bench/nir_peers.py [--run outputs/DATE/TIME] [--limit N]

1. spikegrad -> snnTorch / Norse / SpikingJelly: the trained mnist16 model exported with the
   forward-Euler contract (``to_nir(model, dt=1e-4, discretization="euler", lossy_reset=True)``;
   snnTorch's importer assumes dt = 1e-4 s, Norse's and SpikingJelly's are told the same) and
   imported by each peer's own importer. No peer imports ``LI``/``CubaLI`` nodes, so the readout
   goes to them as a CubaLIF with an infinite threshold (the same equations) and its membrane is
   read from the peer's state. Reference: the same weights resetting to zero in spikegrad (what
   the graph says).
2. snnTorch / Norse / SpikingJelly -> spikegrad: a network built in the peer with mnist16's
   weights (Norse: without synaptic filter, see ``norse_replica``), exported by
   the peer's exporter, imported by ``from_nir(graph, dt, discretization="euler")``. Norse's
   exporter writes wrong time constants (case N3 below), so its graph is corrected before import;
   the uncorrected graph is refused by spikegrad with an error.
3. Minimal cases of the peers' importer/exporter bugs, each printed with what NIR says and what
   the peer computes.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import numpy as np
import torch

import nir
import norse.torch as norse
import snntorch as snn
from norse.torch.utils.export_nir import to_nir as norse_to_nir
from norse.torch.utils.import_nir import from_nir as norse_from_nir
from snntorch.export_nir import export_to_nir as snntorch_to_nir
from snntorch.import_nir import import_from_nir as snntorch_from_nir
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import layer as sj_layer
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based.nir_exchange.from_nir import import_from_nir as sj_from_nir
from spikingjelly.activation_based.nir_exchange.to_nir import export_to_nir as sj_to_nir

from nir_roundtrip import load_run, max_over_time, zero_reset
from spikegrad.interop import from_nir, li_as_lif, to_nir

logging.getLogger().setLevel(logging.ERROR)  # Norse logs a warning per node whose r is not 1


def quiet(fn, *args, **kwargs):
    """Call a peer function without its prints and warnings."""
    import contextlib
    import io

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


class Capture:
    """Forward hook that keeps the spikes (and, for a readout, the membrane) of a peer module per step."""

    def __init__(self, module, membrane):
        self.out, self.membrane = [], membrane
        module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.out.append(self.membrane(module, output) if self.membrane else
                        (output[0] if isinstance(output, tuple) else output).detach().clone())

    def take(self) -> torch.Tensor:
        seq, self.out = torch.stack(self.out), []
        return seq


def run_peer(model, x_seq: torch.Tensor, reset=None) -> None:
    """Step a peer's imported graph over ``x_seq [T, B, ...]`` (hooks collect what is needed)."""
    if reset is not None:
        reset(model)
    state = None
    for x_t in x_seq:
        out = model(x_t, state) if state is not None else model(x_t)
        state = out[1] if isinstance(out, tuple) else None


def snntorch_reset(model):
    for m in model.modules():
        if isinstance(m, snn.SpikingNeuron) and getattr(m, "init_hidden", False):
            m.reset_hidden()


class Agreement:
    def __init__(self):
        self.n = self.steps = self.same_steps = self.same_pred = self.right_ref = self.right_peer = 0
        self.same_readout = 0

    def add(self, ref_spikes, peer_spikes, ref_readout, peer_readout, y):
        self.n += y.shape[0]
        self.steps += ref_spikes.numel()
        self.same_steps += int((ref_spikes == peer_spikes).sum())
        p_ref, p_peer = max_over_time(ref_readout), max_over_time(peer_readout)
        self.same_pred += int((p_ref == p_peer).sum())
        self.right_ref += int((p_ref == y).sum())
        self.right_peer += int((p_peer == y).sum())
        self.same_readout += int(torch.isclose(ref_readout, peer_readout, rtol=1e-5, atol=1e-5).all(-1).all(0).sum())

    def line(self, name):
        return (f"| {name} | {self.n} | {100 * self.same_steps / self.steps:.4f}% | {self.same_pred} "
                f"({100 * self.same_pred / self.n:.2f}%) | {self.same_readout} | "
                f"{100 * self.right_ref / self.n:.2f}% | {100 * self.right_peer / self.n:.2f}% |")


# ------------------------------------------------------------------------------------------------
# 1. spikegrad -> peers
# ------------------------------------------------------------------------------------------------

def export_for_peers(trained):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lossy reset: mnist16 trains with subtractive reset
        graph = to_nir(trained, dt=1e-4, discretization="euler", lossy_reset=True)
    return li_as_lif(graph, ["neurons.1"])


def snntorch_model(graph):
    model = quiet(snntorch_from_nir, graph)
    hidden = Capture(model.neurons_0, None)
    readout = Capture(model.neurons_1, lambda m, out: m.mem.detach().clone())
    return model, hidden, readout


def spikingjelly_model(graph):
    model = quiet(sj_from_nir, graph, dt=1e-4)
    hidden = Capture(model.neurons_0, None)
    readout = Capture(model.neurons_1, lambda m, out: out[1][0].detach().clone())  # CUBALIFNode state (v, c)
    return model, hidden, readout


def norse_model(graph):
    model = quiet(norse_from_nir, graph, dt=1e-4)
    hidden = Capture(model.neurons_0, None)
    readout = Capture(model.neurons_1, lambda m, out: out[1][1].v.detach().clone())
    return model, hidden, readout


# ------------------------------------------------------------------------------------------------
# 2. peers -> spikegrad
# ------------------------------------------------------------------------------------------------

def snntorch_replica(trained):
    """mnist16 in snnTorch: Linear -> Synaptic (reset to zero, no delay) -> Linear -> Synaptic readout."""
    l0, l1 = trained.layers[0].module, trained.layers[1].module
    h, r = trained.neurons
    n_h, n_o = l0.out_features, l1.out_features

    def syn(n, neuron, threshold):
        ds, dm = (float(torch.exp(-1 / neuron.tau_syn)), float(torch.exp(-1 / neuron.tau_mem)))
        return snn.Synaptic(alpha=torch.full((n,), ds), beta=torch.full((n,), dm),
                            threshold=torch.full((n,), threshold), reset_mechanism="zero", reset_delay=False,
                            init_hidden=True)

    lin0, lin1 = torch.nn.Linear(256, n_h, bias=False), torch.nn.Linear(n_h, n_o, bias=False)
    lin0.weight.data, lin1.weight.data = l0.weight.detach().clone(), l1.weight.detach().clone()
    return torch.nn.Sequential(lin0, syn(n_h, h, 1.0), lin1, syn(n_o, r, 1e30))


def norse_replica(trained):
    """A Norse network with mnist16's weights: Linear -> LIFBoxCell -> Linear -> LIBoxCell (no synaptic filter;
    the hidden weights times tau / dt = 8, since a LIFBoxCell step adds dt / tau of its input)."""
    l0, l1 = trained.layers[0].module, trained.layers[1].module
    lin0, lin1 = torch.nn.Linear(256, l0.out_features), torch.nn.Linear(l0.out_features, l1.out_features)
    with torch.no_grad():
        lin0.weight.copy_(8 * l0.weight), lin0.bias.zero_(), lin1.weight.copy_(l1.weight), lin1.bias.zero_()
    tau_inv = torch.tensor(1 / 8e-3)  # tau = 8 ms: 8 steps of 1 ms
    return norse.SequentialState(lin0, norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=tau_inv), dt=1e-3),
                                 lin1, norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=tau_inv), dt=1e-3))


def spikingjelly_replica(trained):
    """mnist16 in SpikingJelly: Linear -> CUBALIFNode (hard reset to 0) -> Linear -> CUBALIFNode readout."""
    l0, l1 = trained.layers[0].module, trained.layers[1].module

    def cuba(neuron, threshold):
        ds, dm = float(torch.exp(-1 / neuron.tau_syn)), float(torch.exp(-1 / neuron.tau_mem))
        return sj_neuron.CUBALIFNode(c_decay=ds, v_decay=dm, v_threshold=threshold, v_reset=0.0)

    lin0 = sj_layer.Linear(l0.in_features, l0.out_features, bias=False)
    lin1 = sj_layer.Linear(l1.in_features, l1.out_features, bias=False)
    lin0.weight.data, lin1.weight.data = l0.weight.detach().clone(), l1.weight.detach().clone()
    return torch.nn.Sequential(lin0, cuba(trained.neurons[0], 1.0), lin1, cuba(trained.neurons[1], 1e30))


def fix_norse_graph(graph: nir.NIRGraph) -> nir.NIRGraph:
    """Norse 1.1 writes tau = dt / tau_mem_inv (s^2) instead of 1 / tau_mem_inv (case N3) and a batch
    axis in the Input node; the right tau is the written one / dt (dt = 1 ms here)."""
    nodes = {}
    for k, node in graph.nodes.items():
        if isinstance(node, (nir.LIF, nir.LI)):
            kw = {a: getattr(node, a) for a in ("tau", "r", "v_leak", "v_threshold", "v_reset") if hasattr(node, a)}
            kw["tau"] = node.tau / 1e-3
            node = type(node)(**kw)
        nodes[k] = node
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata={}, type_check=False)


def run_norse_replica(model, x_seq):
    """Norse's own simulation: ``(hidden spikes [T, B, N], readout membrane [T, B, C])``."""
    state, zs, vs = None, [], []
    hidden = Capture(model[1], None)
    for x_t in x_seq:
        v, state = model(x_t, state)
        vs.append(v)
    zs = hidden.take()
    model[1]._forward_hooks.clear()
    return zs, torch.stack(vs)


# ------------------------------------------------------------------------------------------------
# 3. minimal cases
# ------------------------------------------------------------------------------------------------

def minimal_cases():
    out = []
    x = torch.tensor([[[0.6]]]).expand(6, 1, 1)  # constant input 0.6 per step, one neuron

    # S1: snnTorch exports scalar-constant neurons (its default) into graphs that fail NIR's type check.
    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), snn.Leaky(beta=0.5, init_hidden=True))
    try:
        quiet(snntorch_to_nir, net, torch.zeros(1, 1), ignore_dims=[0])
        out.append("S1 snnTorch scalar beta export: no error")
    except ValueError as e:
        out.append(f"S1 snnTorch export_to_nir(Sequential(Linear(1, 1), Leaky(beta=0.5))) raises: {str(e)[:90]}")

    # S2: snnTorch's default reset (subtract, one step late) is exported as reset to v_reset = 0, silently.
    lin = torch.nn.Linear(1, 1, bias=False)
    lin.weight.data.fill_(1.0)
    leaky = snn.Leaky(beta=torch.full((1,), 0.5), threshold=torch.ones(1), init_hidden=True)
    net = torch.nn.Sequential(lin, leaky)
    g = quiet(snntorch_to_nir, net, torch.zeros(1, 1), ignore_dims=[0])
    lif = [n for n in g.nodes.values() if isinstance(n, nir.LIF)][0]
    mems = []
    leaky.reset_hidden()
    for x_t in x:
        net(x_t)
        mems.append(round(float(leaky.mem), 4))
    back = quiet(snntorch_from_nir, g)
    cap = Capture(back.get_submodule("1"), lambda m, o: m.mem.detach().clone())
    run_peer(back, x, snntorch_reset)
    out.append(f"S2 snnTorch Leaky(beta=0.5) (reset_mechanism={leaky.reset_mechanism!r}, "
               f"reset_delay={leaky.reset_delay}) "
               f"exports LIF v_reset={lif.v_reset.tolist()}, no warning; input 0.6: membrane {mems} in snnTorch, "
               f"{[round(float(v), 4) for v in cap.take().flatten()]} after its own export + import")

    # S3: snnTorch imports nir.IF as a leaky neuron (beta = 0.9) with subtractive reset.
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((1, 1), np.float32)),
                               nir.IF(r=np.ones(1), v_threshold=np.ones(1), v_reset=np.zeros(1)))
    m = quiet(snntorch_from_nir, g)
    neuron = [mod for mod in m.modules() if isinstance(mod, snn.SpikingNeuron)][0]
    x15 = torch.full((12, 1, 1), 0.15)
    spk = Capture(neuron, None)
    run_peer(m, x15, snntorch_reset)
    first = int(spk.take().flatten().nonzero()[0]) + 1
    out.append(f"S3 snnTorch imports nir.IF(r=1, v_threshold=1) as {type(neuron).__name__}("
               f"beta={float(neuron.beta):g}, "
               f"reset_mechanism={neuron.reset_mechanism!r}); input 0.15/step: first spike at step {first} (an IF "
               "neuron spikes at step 7)")

    # N1: Norse ignores r of nir.LIF (warns only): one Euler step adds dt/tau * I instead of dt/tau * r * I.
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((1, 1), np.float32)),
                               nir.LIF(tau=np.full(1, 2e-3), r=np.full(1, 2.0), v_leak=np.zeros(1),
                                       v_threshold=np.ones(1), v_reset=np.zeros(1)))
    m = quiet(norse_from_nir, g, dt=1e-3)
    vs = Capture(m.lif, lambda mod, o: o[1].v.detach().clone())
    run_peer(m, x)
    ours = from_nir(g, dt=1e-3, discretization="euler")
    mine, _ = ours.layers[-1](ours.layers[-2](ours.layers[0](x)), record=True)
    out.append("N1 Norse nir.LIF(tau=2 ms, r=2, v_th=1), dt=1 ms, input 0.6: Norse membrane "
               f"{[round(float(v), 4) for v in vs.take().flatten()]} (never spikes); NIR's Euler step "
               "v += dt/tau (r I - v) gives 0.6, 0.9, 1.05 -> spike at step 3; spikegrad spikes "
               f"{ours(x).readout.flatten().tolist()}")

    # N2: Norse ignores v_reset of nir.LIF.
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((1, 1), np.float32)),
                               nir.LIF(tau=np.full(1, 2e-3), r=np.ones(1), v_leak=np.zeros(1),
                                       v_threshold=np.full(1, 0.25), v_reset=np.full(1, -1.0)))
    m = quiet(norse_from_nir, g, dt=1e-3)
    out.append(f"N2 Norse nir.LIF(v_reset=-1) -> LIFBoxCell with v_reset={float(m.lif.p.v_reset):g}")

    # N3: Norse's exporter writes tau = dt / tau_mem_inv (1e-5 s for a 10 ms neuron at dt = 1 ms).
    cell = norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(100.0)), dt=1e-3)
    g = quiet(norse_to_nir, norse.SequentialState(torch.nn.Linear(1, 1), cell), torch.zeros(1, 1))
    lif = [n for n in g.nodes.values() if isinstance(n, nir.LIF)][0]
    back = quiet(norse_from_nir, g, dt=1e-3)
    tau_inv = float(back.get_submodule("1").p.tau_mem_inv.flatten()[0])
    out.append(f"N3 Norse LIFBoxCell(tau_mem_inv=100/s) exports tau={lif.tau.tolist()} s (1 / tau_mem_inv = 0.01 s); "
               f"its own importer then sets tau_mem_inv={tau_inv:g}/s, a per-step decay of {1 - 1e-3 * tau_inv:g} "
               "instead of 0.9; the Input node also keeps the batch axis (shape [1, 1]), so nir's type check fails")

    # N4: Norse's LIFCell (current-based) exports w_in = 1 and r = 1 while it adds each input to the current
    # directly (NIR: w_in = tau_syn / dt) and feeds the membrane the previous step's current.
    cell = norse.LIFCell(norse.LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0)))
    g = quiet(norse_to_nir, norse.SequentialState(torch.nn.Linear(1, 1), cell), torch.zeros(1, 1))
    cuba = [n for n in g.nodes.values() if isinstance(n, nir.CubaLIF)][0]
    out.append(f"N4 Norse LIFCell(tau_syn=5 ms, tau_mem=10 ms) exports CubaLIF w_in={cuba.w_in.tolist()}, "
               f"r={cuba.r.tolist()}, tau_syn={cuba.tau_syn.tolist()}, tau_mem={cuba.tau_mem.tolist()}")

    # N5: Norse's IAFCell adds its whole input every step but exports IF(r=1) (NIR: dv/dt = r I, so r = 1/dt).
    iaf = norse.IAFCell(norse.IAFParameters(v_th=torch.tensor(1.0)))
    lin = torch.nn.Linear(1, 1, bias=False)
    lin.weight.data.fill_(1.0)
    model = norse.SequentialState(lin, iaf)
    g = quiet(norse_to_nir, model, torch.zeros(1, 1))
    node = [n for n in g.nodes.values() if isinstance(n, nir.IF)][0]
    x3 = torch.full((5, 1, 1), 0.3)
    state, zs = None, []
    for x_t in x3:
        z, state = model(x_t, state)
        zs.append(int(z))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = from_nir(g, dt=1e-3, discretization="euler")(x3).readout.flatten().int().tolist()
    out.append(f"N5 Norse IAFCell (v += input per step) exports IF r={node.r.tolist()}; input 0.3: Norse spikes {zs}; "
               f"the graph read as NIR says (dv/dt = r I, dt = 1 ms) spikes {ours}")

    # P1: neither peer imports LI (leaky-integrator readouts): snnTorch raises, Norse drops the node silently.
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((1, 1), np.float32)),
                               nir.LI(tau=np.full(1, 2e-3), r=np.ones(1), v_leak=np.zeros(1)))
    try:
        quiet(snntorch_from_nir, g)
        out.append("P1 snnTorch imports nir.LI")
    except Exception as e:  # noqa: BLE001 - report whatever the peer raises
        out.append(f"P1 snnTorch cannot import nir.LI: {type(e).__name__}: {str(e)[:80]}")
    m = quiet(norse_from_nir, g, dt=1e-3)
    state, vs = None, []
    for x_t in x[:3]:
        v, state = m(x_t, state)
        vs.append(round(float(v), 4))
    ours = from_nir(g, dt=1e-3, discretization="euler")(x[:3]).readout.flatten().tolist()
    out.append(f"P1 Norse builds {[type(mod).__name__ for mod in m.children()]} for Input -> Linear -> LI -> Output "
               f"(the LI node is dropped without a warning); input 0.6, tau = 2 ms, dt = 1 ms: Norse outputs {vs}, "
               f"NIR's Euler step {[0.3, 0.45, 0.525]}, spikegrad {[round(v, 4) for v in ours]}")
    return out


def readout_membrane(net, x_seq):
    """Membrane ``[T, B, C]`` of an imported network whose last module is a LIF that never spikes."""
    h = x_seq
    for layer in net.layers[:-1]:
        h = layer(h)
        h = h[0] if isinstance(h, tuple) else h
    return net.layers[-1](h, record=True)[1].v


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--data-root", default=os.environ.get("SPIKEGRAD_MNIST", "../shared/data/mnist"))
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    print("Minimal cases of peer NIR bugs:")
    for line in minimal_cases():
        print("-", line)
    run, trained, test_loader, encoder = load_run(args.run, args.data_root)
    reference = zero_reset(trained)
    graph = export_for_peers(trained)
    snt, snt_hidden, snt_readout = snntorch_model(graph)
    nrs, nrs_hidden, nrs_readout = norse_model(graph)
    sj, sj_hidden, sj_readout = spikingjelly_model(graph)
    # 2. peers -> spikegrad
    rep_snt = snntorch_replica(trained)
    g_snt = quiet(snntorch_to_nir, rep_snt, torch.zeros(1, 256), ignore_dims=[0])
    sg_from_snt = from_nir(g_snt, dt=1e-4, discretization="euler")
    snt_rep_hidden = Capture(rep_snt[1], None)
    snt_rep_readout = Capture(rep_snt[3], lambda m, out: m.mem.detach().clone())
    rep_sj = spikingjelly_replica(trained)
    g_sj = quiet(sj_to_nir, rep_sj, torch.zeros(1, 256), dt=1e-4)
    sg_from_sj = from_nir(g_sj, dt=1e-4, discretization="euler")
    sj_rep_hidden = Capture(rep_sj[1], None)
    sj_rep_readout = Capture(rep_sj[3], lambda m, out: m.v.detach().clone())
    rep_nrs = norse_replica(trained)
    g_nrs = quiet(norse_to_nir, rep_nrs, torch.zeros(1, 256))
    try:
        from_nir(g_nrs, dt=1e-3, discretization="euler")
        refused = "imported"
    except ValueError as e:
        refused = f"refused: {str(e)[:100]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sg_from_nrs = from_nir(fix_norse_graph(g_nrs), dt=1e-3, discretization="euler")
    tallies = {k: Agreement() for k in ("to_snntorch", "to_norse", "to_spikingjelly", "from_snntorch", "from_norse",
                                        "from_spikingjelly")}
    seen, t0 = 0, time.perf_counter()
    for x, y in test_loader:
        if args.limit is not None and seen >= args.limit:
            break
        x_seq = encoder(x).flatten(2)            # [T, B, 256]
        ref = reference(x_seq)
        run_peer(snt, x_seq, snntorch_reset)
        tallies["to_snntorch"].add(ref.spikes[0], snt_hidden.take(), ref.readout, snt_readout.take(), y)
        run_peer(nrs, x_seq)
        tallies["to_norse"].add(ref.spikes[0], nrs_hidden.take(), ref.readout, nrs_readout.take(), y)
        run_peer(sj, x_seq)
        tallies["to_spikingjelly"].add(ref.spikes[0], sj_hidden.take(), ref.readout, sj_readout.take(), y)
        snntorch_reset(rep_snt)
        for x_t in x_seq:
            rep_snt(x_t)
        out = sg_from_snt(x_seq)
        tallies["from_snntorch"].add(snt_rep_hidden.take(), out.spikes[0], snt_rep_readout.take(),
                                     readout_membrane(sg_from_snt, x_seq), y)
        sj_functional.reset_net(rep_sj)
        for x_t in x_seq:
            rep_sj(x_t)
        out = sg_from_sj(x_seq)
        tallies["from_spikingjelly"].add(sj_rep_hidden.take(), out.spikes[0], sj_rep_readout.take(),
                                         readout_membrane(sg_from_sj, x_seq), y)
        z, v = run_norse_replica(rep_nrs, x_seq)
        out = sg_from_nrs(x_seq)
        tallies["from_norse"].add(z, out.spikes[0], v, out.readout, y)
        seen += y.shape[0]
    print(f"\nrun {run}; {seen} test images; {time.perf_counter() - t0:.0f} s")
    print(f"Norse's exported graph as it is: {refused}\n")
    print("| direction | images | same hidden spikes (neuron-steps) | same prediction | readout equal (1e-5) | "
          "accuracy reference | accuracy other side |")
    print("|---|---|---|---|---|---|---|")
    names = {"to_snntorch": "spikegrad -> snnTorch (reference: spikegrad)",
             "to_norse": "spikegrad -> Norse (reference: spikegrad)",
             "to_spikingjelly": "spikegrad -> SpikingJelly (reference: spikegrad)",
             "from_spikingjelly": "SpikingJelly -> spikegrad (reference: SpikingJelly)",
             "from_snntorch": "snnTorch -> spikegrad (reference: snnTorch)",
             "from_norse": "Norse -> spikegrad, tau corrected (reference: Norse)"}
    for k, t in tallies.items():
        print(t.line(names[k]))


if __name__ == "__main__":
    main()
