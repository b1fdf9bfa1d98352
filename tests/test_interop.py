"""NIR export/import: the discretization contract by hand numbers, exact round trips of every
supported node and neuron, metadata, and every refused case."""

import functools
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")

from spikegrad import kernels  # noqa: E402
from spikegrad.functional import NetworkState  # noqa: E402
from spikegrad.interop import (NIRNetwork, Scale, Threshold, check_nir_export, export_constants,  # noqa: E402
                               from_nir, import_decay, li_as_lif, load_nir, save_nir, to_nir)
from spikegrad.models import SeqWise, SpikingConvNet, SpikingMLP  # noqa: E402
from spikegrad.neurons import ALIF, IF, LI, LIF  # noqa: E402
from spikegrad.sharpening import WhetstoneConvNet, WhetstoneMLP, export_binary, sharpenable_layers  # noqa: E402
from spikegrad.surrogates import make_surrogate  # noqa: E402

DT = 1e-3


def spikes(*shape, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).float()


def mlp(neuron, readout=LI, sizes=(12, 16, 5), seed=0, **kw):
    torch.manual_seed(seed)
    return SpikingMLP(list(sizes), neuron=neuron, readout=readout, record_v=False, **kw)


def same_output(a, b):
    assert torch.equal(a.readout, b.readout)
    assert len(a.spikes) == len(b.spikes)
    for s, t in zip(a.spikes, b.spikes):
        assert torch.equal(s, t)


# --- the contract, by hand -----------------------------------------------------------------

TAU_HALF = 1 / math.log(2)  # steps: per-step decay exactly 0.5


def test_exact_contract_hand_numbers():
    tau, r = export_constants(np.array([TAU_HALF]), DT, "exact")
    assert tau[0] == pytest.approx(1e-3 / math.log(2), rel=1e-12)   # 1.4427 ms
    assert r[0] == pytest.approx(2.0, rel=1e-12)                    # 1 / (1 - 0.5)
    d, f = import_decay(tau, DT, "exact")
    assert d[0] == pytest.approx(0.5, rel=1e-12)
    assert (r * f)[0] == pytest.approx(1.0, rel=1e-12)
    # a forward-Euler importer (snnTorch beta = 1 - dt/tau; Norse LIFBox 1 - dt * tau_mem_inv)
    assert 1 - DT / tau[0] == pytest.approx(1 - math.log(2), rel=1e-12)  # 0.3069: the decay changes


def test_euler_contract_hand_numbers():
    tau, r = export_constants(np.array([TAU_HALF]), DT, "euler")
    assert tau[0] == pytest.approx(2e-3, rel=1e-12)                 # dt / (1 - 0.5)
    assert r[0] == pytest.approx(2.0, rel=1e-12)                    # tau / dt
    # snnTorch's importer: beta = 1 - dt/tau, input gain r dt/tau; Norse's LIFBox the same
    assert 1 - DT / tau[0] == pytest.approx(0.5, rel=1e-12)
    assert r[0] * DT / tau[0] == pytest.approx(1.0, rel=1e-12)
    # SpikingJelly's LIFNode: v += (x - v) / tau_sj with tau_sj = tau / dt steps
    assert 1 - 1 / (tau[0] / DT) == pytest.approx(0.5, rel=1e-12)
    d, f = import_decay(tau, DT, "euler")
    assert (d[0], (r * f)[0]) == (pytest.approx(0.5, rel=1e-12), pytest.approx(1.0, rel=1e-12))
    # the same graph integrated exactly: exp(-0.5)
    assert import_decay(tau, DT, "exact")[0][0] == pytest.approx(math.exp(-0.5), rel=1e-12)


@pytest.mark.parametrize("d, euler_of_exact, exact_of_euler", [
    (0.5, 0.306853, 0.606531),    # 1 + ln d, exp(-(1 - d))
    (0.9, 0.894639, 0.904837),
    (0.99, 0.989950, 0.990050),
])
def test_decay_error_of_the_wrong_importer(d, euler_of_exact, exact_of_euler):
    tau_steps = np.array([-1 / math.log(d)])
    tau_exact, _ = export_constants(tau_steps, DT, "exact")
    tau_euler, _ = export_constants(tau_steps, DT, "euler")
    assert import_decay(tau_exact, DT, "exact")[0][0] == pytest.approx(d, rel=1e-12)
    assert import_decay(tau_euler, DT, "euler")[0][0] == pytest.approx(d, rel=1e-12)
    assert import_decay(tau_exact, DT, "euler")[0][0] == pytest.approx(euler_of_exact, abs=1e-6)
    assert import_decay(tau_euler, DT, "exact")[0][0] == pytest.approx(exact_of_euler, abs=1e-6)


def test_euler_refuses_tau_shorter_than_dt():
    with pytest.raises(ValueError, match="shorter than dt"):
        import_decay(np.array([0.5e-3]), DT, "euler")


@pytest.mark.parametrize("disc", ["exact", "euler"])
def test_exported_constants_of_a_lif_layer(disc):
    m = mlp(functools.partial(LIF, tau_mem=TAU_HALF, tau_syn=0.0, v_th=0.7, reset="zero"))
    g = to_nir(m, dt=DT, discretization=disc)
    node = g.nodes["neurons.0"]
    assert isinstance(node, nir.LIF)
    np.testing.assert_allclose(node.tau, 2e-3 if disc == "euler" else 1e-3 / math.log(2), rtol=1e-6)
    np.testing.assert_allclose(node.r, 2.0, rtol=1e-6)
    np.testing.assert_array_equal(node.v_threshold, np.float32(0.7))
    np.testing.assert_array_equal(node.v_leak, 0.0)
    assert node.tau.dtype == np.float64 and node.v_threshold.dtype == np.float32


def test_if_resistance_is_per_second():
    m = mlp(functools.partial(IF, v_th=1.0, reset="zero"))
    for disc in ("exact", "euler"):
        node = to_nir(m, dt=DT, discretization=disc).nodes["neurons.0"]
        assert isinstance(node, nir.IF)
        np.testing.assert_allclose(node.r, 1000.0)  # dv/dt = r I over dt: r = 1 / dt


# --- exact round trips -------------------------------------------------------------------------

NEURONS = {
    "LIF": (functools.partial(LIF, tau_mem=6.0, tau_syn=0.0, reset="zero"), nir.LIF),
    "CubaLIF": (functools.partial(LIF, tau_mem=6.0, tau_syn=3.0, reset="zero", v_reset=-0.2), nir.CubaLIF),
    "IF": (functools.partial(IF, v_th=1.5, reset="zero"), nir.IF),
    "LIF_no_reset": (functools.partial(LIF, tau_mem=6.0, tau_syn=0.0, reset="none"), nir.LI),
    "CubaLIF_no_reset": (functools.partial(LIF, tau_mem=6.0, tau_syn=2.0, reset="none"), nir.CubaLI),
    "IF_no_reset": (functools.partial(IF, reset="none"), nir.I),
    "per_neuron": (functools.partial(LIF, tau_mem=torch.linspace(2, 30, 16), tau_syn=torch.linspace(1, 5, 16),
                                     v_th=torch.linspace(0.5, 1.5, 16), reset="zero"), nir.CubaLIF),
}
READOUTS = {"LI": (functools.partial(LI, tau_mem=6.0, tau_syn=0.0), nir.LI),
            "CubaLI": (functools.partial(LI, tau_mem=8.0, tau_syn=4.0), nir.CubaLI),
            "I": (functools.partial(LI, tau_mem=math.inf, tau_syn=0.0), nir.I)}


@pytest.mark.parametrize("disc", ["exact", "euler"])
@pytest.mark.parametrize("kind", list(NEURONS))
def test_round_trip_neurons(kind, disc, tmp_path):
    neuron, node_type = NEURONS[kind]
    m = mlp(neuron, readout=READOUTS["CubaLI"][0])
    path = tmp_path / "m.nir"
    g = save_nir(m, path, dt=DT, discretization=disc)
    assert isinstance(g.nodes["neurons.0"], node_type)
    if "no_reset" in kind:
        assert isinstance(g.nodes["neurons.0.threshold"], nir.Threshold)
    net = load_nir(path)
    assert type(net.layers[1]) is type(m.neurons[0]) and net.layers[1].reset == m.neurons[0].reset  # LIF/IF again
    x = spikes(30, 4, 12)
    out = m(x)
    assert out.spikes[0].sum() > 0
    same_output(out, net(x))


@pytest.mark.parametrize("kind", list(READOUTS))
def test_round_trip_readouts(kind):
    readout, node_type = READOUTS[kind]
    m = mlp(functools.partial(LIF, reset="zero"), readout=readout)
    g = to_nir(m, dt=DT)
    assert isinstance(g.nodes["neurons.1"], node_type)
    x = spikes(20, 3, 12)
    same_output(m(x), from_nir(g)(x))


def test_round_trip_affine_sparse_input_and_twice():
    m = mlp(functools.partial(LIF, reset="zero"), bias=True, sparse_input=True, sizes=(12, 16, 8, 5))
    g = to_nir(m, dt=DT, discretization="euler")
    assert isinstance(g.nodes["layers.0"], nir.Affine)
    net = from_nir(g)
    assert type(net.layers[0].module).__name__ == "SparseInputLinear"
    again = from_nir(to_nir(net, dt=DT, discretization="euler"))
    x = spikes(25, 3, 12)
    same_output(m(x), net(x))
    same_output(m(x), again(x))


def test_round_trip_conv_net(tmp_path):
    torch.manual_seed(1)
    m = SpikingConvNet(in_shape=(1, 8, 8), channels=(4, 6), hidden=(10,), n_classes=3,
                       neuron=functools.partial(LIF, reset="zero"), record_v=False)
    g = save_nir(m, tmp_path / "c.nir", dt=DT)
    kinds = [type(g.nodes[n]).__name__ for n in ("blocks.0", "neurons.0", "pool.0", "pool.0.max", "head.flatten")]
    assert kinds == ["Conv2d", "CubaLIF", "SumPool2d", "Threshold", "Flatten"]
    net = load_nir(tmp_path / "c.nir")
    x = spikes(12, 2, 1, 8, 8, p=0.4)
    out = m(x)
    assert out.spikes[0].sum() > 0 and out.spikes[-1].sum() > 0
    same_output(out, net(x))


def test_round_trip_sequential_of_stateless_nodes():
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, stride=1, padding=1, bias=True)
    seq = nn.Sequential(SeqWise(conv), IF(reset="zero"), SeqWise(nn.AvgPool2d(2)), Scale(torch.full((3, 2, 2), 0.5)),
                        Threshold(torch.full((3, 2, 2), 0.2)), SeqWise(nn.Flatten(1)), SeqWise(nn.Linear(12, 4)),
                        LIF(reset="zero"))
    g = to_nir(seq, dt=DT, input_shape=(2, 4, 4))
    assert [type(n).__name__ for n in list(g.nodes.values())[1:-1]] == [
        "Conv2d", "IF", "AvgPool2d", "Scale", "Threshold", "Flatten", "Affine", "CubaLIF"]
    x = spikes(10, 2, 2, 4, 4, p=0.5)
    h = x
    for layer in seq:
        h = layer(h)
        h = h[0] if isinstance(h, tuple) else h
    assert torch.equal(from_nir(g)(x).readout, h)


def test_metadata_written_and_read_back(tmp_path):
    m = mlp(functools.partial(LIF, reset="zero", surrogate=make_surrogate("atan", slope=3.0), detach_reset=False))
    save_nir(m, tmp_path / "m.nir", dt=2e-4, discretization="euler")
    g = nir.read(str(tmp_path / "m.nir"))
    assert float(g.metadata["dt"]) == 2e-4 and g.metadata["discretization"] == "euler"
    assert g.metadata["reset"] == "zero" and g.metadata["producer"].startswith("spikegrad")
    net = from_nir(g)
    assert net.metadata["dt"] == 2e-4 and net.metadata["discretization"] == "euler"
    lif = net.layers[1]
    assert type(lif.surrogate).__name__ == "ATan" and float(lif.surrogate.slope) == 3.0
    assert lif.detach_reset is False
    assert torch.equal(lif.tau_mem, m.neurons[0].tau_mem) and torch.equal(lif.tau_syn, m.neurons[0].tau_syn)


def test_explicit_arguments_override_metadata_with_a_warning():
    g = to_nir(mlp(functools.partial(LIF, reset="zero")), dt=DT, discretization="exact")
    with pytest.warns(UserWarning, match="overrides"):
        net = from_nir(g, discretization="euler")
    assert net.metadata["discretization"] == "euler"


def test_export_from_any_device_and_dtype():
    m = mlp(functools.partial(LIF, reset="zero")).to(torch.float64)
    g = to_nir(m, dt=DT)
    assert g.nodes["layers.0"].weight.dtype == np.float32
    m16 = mlp(functools.partial(LIF, reset="zero")).to(torch.bfloat16)
    assert to_nir(m16, dt=DT).nodes["layers.0"].weight.dtype == np.float32
    assert to_nir(m, dt=DT, dtype=torch.float64).nodes["layers.0"].weight.dtype == np.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_from_cuda():
    m = mlp(functools.partial(LIF, reset="zero"))
    x = spikes(10, 2, 12)
    ref = m(x)
    g = to_nir(m.cuda(), dt=DT)
    same_output(ref, from_nir(g)(x))


def test_import_uses_fast_kernels():
    net = from_nir(to_nir(mlp(functools.partial(LIF, reset="zero")), dt=DT))
    lif = net.layers[1]
    x = torch.zeros(3, 2, 16)
    assert kernels.resolve_backend(lif.backend, x, lif.params(x.dtype), lif.surrogate) != "torch"


def test_foreign_gain_becomes_a_scale():
    # a Norse-style LIF node: r = 1, so one Euler step adds dt/tau * I
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.eye(3, dtype=np.float32)),
                               nir.LIF(tau=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3),
                                       v_threshold=np.full(3, 0.1), v_reset=np.zeros(3)))
    net = from_nir(g, dt=1e-3, discretization="euler")
    scale = [m for m in net.layers if isinstance(m, Scale)]
    assert len(scale) == 1 and torch.allclose(scale[0].scale, torch.tensor(0.5))
    out = net(torch.tensor([[[1.0, 0.0, 0.0]]] * 2)).readout  # v = 0.5, then 0.5 * 0.5 + 0.5
    assert out[:, 0, 0].tolist() == [1.0, 1.0]


# --- refusals ---------------------------------------------------------------------------------

def test_subtract_reset_is_refused_with_the_options():
    m = mlp(functools.partial(LIF, reset="subtract"))
    with pytest.raises(ValueError, match=r"subtraction.*reset='zero'.*lossy_reset=True"):
        to_nir(m, dt=DT)


def test_lossy_reset_exports_reset_to_zero_with_a_warning():
    m = mlp(functools.partial(LIF, reset="subtract"))
    with pytest.warns(UserWarning, match="reset to zero"):
        g = to_nir(m, dt=DT, lossy_reset=True)
    assert "lossy" in g.metadata["reset"]
    with pytest.warns(UserWarning, match="lossy"):
        net = from_nir(g)
    assert net.layers[1].reset == "zero"
    ref = mlp(functools.partial(LIF, reset="zero"))
    x = spikes(30, 3, 12)
    same_output(ref(x), net(x))


@pytest.mark.parametrize("neuron, match", [
    (functools.partial(LIF, reset="zero", refractory=2), "refractory"),
    (functools.partial(ALIF, reset="zero"), "adaptive"),
    (functools.partial(LIF, reset="zero", surrogate=make_surrogate("fast_sigmoid", spiking=False)), "spiking"),
    (functools.partial(LIF, reset="zero", tau_mem=math.inf, tau_syn=3.0), "tau_mem=inf"),
    (functools.partial(LIF, reset="zero", tau_syn=torch.tensor([0.0] * 8 + [2.0] * 8)), "mixes tau_syn"),
])
def test_unrepresentable_neurons_are_refused(neuron, match):
    with pytest.raises(ValueError, match=match):
        to_nir(mlp(neuron), dt=DT)


@pytest.mark.parametrize("tau_syn", [0.0, 3.0])
def test_round_trip_recurrent_layer(tau_syn, tmp_path):
    torch.manual_seed(4)
    seq = nn.Sequential(SeqWise(nn.Linear(12, 16, bias=False)),
                        LIF(tau_mem=6.0, tau_syn=tau_syn, reset="zero", recurrent=16),
                        SeqWise(nn.Linear(16, 5, bias=False)), LI(tau_mem=8.0, tau_syn=4.0))
    with torch.no_grad():
        seq[1].w_rec.mul_(3.0)  # strong enough that the recurrence changes the spikes
    g = save_nir(seq, tmp_path / "r.nir", dt=DT, input_shape=(12,))
    sub = g.nodes["1"]
    assert isinstance(sub, nir.NIRGraph) and isinstance(sub.nodes["w_rec"], nir.Linear)
    assert ("w_rec", "lif") in sub.edges and ("lif", "w_rec") in sub.edges
    net = load_nir(tmp_path / "r.nir")
    assert torch.equal(net.layers[1].w_rec, seq[1].w_rec)
    x = spikes(30, 4, 12)
    h, _ = seq[1](seq[0](x))
    feed_forward = LIF(tau_mem=6.0, tau_syn=tau_syn, reset="zero")(seq[0](x))[0]
    assert not torch.equal(h, feed_forward)
    out = net(x)
    assert torch.equal(out.spikes[0], h)
    assert torch.equal(out.readout, seq[3](seq[2](h))[0])


def test_recurrent_layer_without_reset_is_refused():
    seq = nn.Sequential(SeqWise(nn.Linear(4, 6)), LIF(reset="none", recurrent=6))
    with pytest.raises(ValueError, match="recurrent"):
        to_nir(seq, dt=DT, input_shape=(4,))


@pytest.mark.parametrize("seq, match", [
    (nn.Sequential(SeqWise(nn.Linear(4, 4)), SeqWise(nn.BatchNorm1d(4))), "no NIR mapping"),
    (nn.Sequential(SeqWise(nn.Conv2d(1, 2, 3, padding=1)), SeqWise(nn.MaxPool2d(2))), "not spikes"),
    (nn.Sequential(SeqWise(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"))), "padding_mode"),
])
def test_unsupported_layers_are_refused(seq, match):
    with pytest.raises(ValueError, match=match):
        to_nir(seq, dt=DT, input_shape=(1, 4, 4) if isinstance(seq[0].module, nn.Conv2d) else (4,))


@pytest.mark.parametrize("kw, match", [({"dt": 0.0}, "dt must be"), ({"dt": DT, "discretization": "rk4"},
                                                                        "discretization must be")])
def test_bad_contract_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        to_nir(mlp(functools.partial(LIF, reset="zero")), **kw)


def test_input_shape_needed_for_sequential():
    with pytest.raises(ValueError, match="input_shape"):
        to_nir(nn.Sequential(SeqWise(nn.Linear(4, 4))), dt=DT)


def _lif_graph(**lif):
    kw = dict(tau=np.full(2, 5e-3), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2))
    return nir.NIRGraph.from_list(nir.Linear(weight=np.eye(2, dtype=np.float32)), nir.LIF(**{**kw, **lif}))


def test_import_needs_dt_and_discretization():
    with pytest.raises(ValueError, match=r"dt and discretization.*euler"):
        from_nir(_lif_graph())


def test_import_refuses_leak_potential():
    with pytest.raises(ValueError, match="v_leak"):
        from_nir(_lif_graph(v_leak=np.full(2, 0.1)), dt=DT, discretization="exact")


def test_import_refuses_branches_and_other_subgraphs():
    g = _lif_graph()
    g.edges.append(("input", "lif"))
    with pytest.raises(ValueError, match="feed-forward chains"):
        from_nir(g, dt=DT, discretization="exact")
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.eye(2, dtype=np.float32)), nir.Delay(delay=np.ones(2)))
    with pytest.raises(ValueError, match="Delay"):
        from_nir(g, dt=DT, discretization="exact")


def test_network_checks_its_input():
    net = from_nir(to_nir(mlp(functools.partial(LIF, reset="zero")), dt=DT))
    assert isinstance(net, NIRNetwork) and net.input_shape == (12,)
    with pytest.raises(ValueError, match=r"\[T, B, 12\]"):
        net(torch.zeros(3, 2, 13))


def test_input_node_with_a_batch_axis_is_read_with_a_warning():
    g = _lif_graph()
    g.nodes["input"] = nir.Input(input_type={"input": np.array([1, 2])})
    with pytest.warns(UserWarning, match="batch axis"):
        net = from_nir(g, dt=DT, discretization="exact")
    assert net.input_shape == (2,)


# --- Whetstone binary networks --------------------------------------------------------------

@pytest.mark.parametrize("build", [
    lambda: WhetstoneMLP([12, 9, 7], n_classes=3, n_hot=2),
    lambda: WhetstoneMLP([12, 9, 7], n_classes=3, n_hot=2, activation="sigmoid", decoder="nhot"),
    lambda: WhetstoneConvNet(in_shape=(2, 8, 8), channels=(3, 4), kernel_size=3, hidden=(6,), n_classes=2, n_hot=3),
])
def test_round_trip_whetstone_binary_net(build, tmp_path):
    g = torch.Generator().manual_seed(3)
    model = build()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.2)
    for a in sharpenable_layers(model):
        a.set_sharpness(1.0)
    model.eval()
    net = export_binary(model)
    graph = save_nir(model, tmp_path / "w.nir", dt=DT, dtype=torch.float64)
    assert any(isinstance(n, nir.Threshold) for n in graph.nodes.values())
    back = load_nir(tmp_path / "w.nir", dtype=torch.float64)
    x = torch.rand(200, *model.layers[0].shape, generator=g, dtype=torch.float64)
    scores, spikes_net = net.run(x)
    out = back(x[None])                                   # one step: [1, B, ...]
    assert torch.equal(out.readout[0], scores)
    assert len(out.spikes) == len(spikes_net)             # the output code included: the decoder is last
    for a, b in zip(out.spikes, spikes_net):
        assert torch.equal(a[0], b)
    assert any(0 < float(s.mean()) < 1 for s in spikes_net)


def test_soft_whetstone_model_is_refused_and_checked_as_sharp():
    model = WhetstoneMLP([4, 3], n_classes=2, n_hot=1)
    with pytest.raises(ValueError, match="sharpness"):
        to_nir(model, dt=DT)
    check_nir_export(model, dt=DT)  # what the exported model would be is representable


def test_imported_network_continues_from_a_state():
    net = from_nir(to_nir(mlp(functools.partial(LIF, reset="zero"), sizes=(12, 16, 10, 5)), dt=DT))
    x = spikes(30, 3, 12)
    whole = net(x)
    first = net(x[:13])
    rest = net(x[13:], state=first.state)
    # floats up to rounding: a Linear's product over 13 * 3 rows may group its sums unlike one over 30 * 3
    torch.testing.assert_close(torch.cat([first.readout, rest.readout]), whole.readout)
    assert len(whole.spikes) == 2 and whole.spikes[1].sum() > 0
    for a, b, w in zip(first.spikes, rest.spikes, whole.spikes):
        assert torch.equal(torch.cat([a, b]), w)
    assert isinstance(whole.state, NetworkState) and isinstance(rest.state, NetworkState) and len(whole.state) == 3
    for got, want in zip(rest.state, whole.state):  # LIF, LIF, LI: the final states of the one run
        assert type(got) is type(want)
        for a, b in zip(got, want):
            assert (a is None) == (b is None)
            if b is not None:
                torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"NIRNetwork: state must be None .*NetworkState of 3 layer states.*"
                                         r"got a tuple of 2; pass state=None"):
        net(x, state=first.state[:2])


# --- the Hydra option ------------------------------------------------------------------------

def _train(tmp_path, *overrides):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import SHARED_DATA

    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found")
    root = tmp_path / "mnist"
    if not root.exists():
        shutil.copytree(SHARED_DATA / "mnist", root, ignore=shutil.ignore_patterns("*.md", "cache_*"))
    repo = Path(__file__).resolve().parents[1]
    tiny = ["experiment=mnist16", f"data.root={root}", "data.download=false", "data.subset=200", "data.val_size=100",
            "data.batch_size=50", "data.eval_batch_size=2000", "T=8", "trainer.epochs=1", "trainer.progress=false",
            "trainer.log_samples=1", "model.sizes=[256,32,10]", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, str(repo / "train.py"), *tiny, *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_writes_model_nir(tmp_path):
    r = _train(tmp_path, "nir.export=true", "nir.discretization=euler", "neuron.reset=zero")
    assert r.returncode == 0, r.stderr[-3000:]
    net = load_nir(tmp_path / "run" / "model.nir")
    assert net.metadata["discretization"] == "euler" and net.metadata["dt"] == 1e-3
    model = SpikingMLP([256, 32, 10], neuron=functools.partial(LIF, tau_mem=8.0, tau_syn=4.0, reset="zero"),
                       readout=functools.partial(LI, tau_mem=8.0, tau_syn=4.0), record_v=False, sparse_input=True)
    state = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=False)["model"]
    model.load_state_dict(state)
    x = spikes(8, 5, 256, p=0.05)
    same_output(model(x), net(x))


@pytest.mark.slow
def test_train_refuses_subtract_reset_before_training(tmp_path):
    r = _train(tmp_path, "nir.export=true")
    assert r.returncode != 0 and "lossy_reset=True" in r.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


# --- converted networks (ANN-to-SNN conversion) -------------------------------------------------

def _lenet_snn(pool="avg", reset="zero"):
    from spikegrad.conversion import LeNet, ann_to_snn

    torch.manual_seed(0)
    ann = LeNet(in_channels=1, image_size=12, channels=[3, 4], kernel_size=3, hidden=16, num_classes=5,
                batch_norm=True, pool=pool).eval()
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(32, 1, 12, 12, generator=g), torch.zeros(32, dtype=torch.long))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ann_to_snn(ann, data, reset=reset)


def test_round_trip_converted_network(tmp_path):
    snn = _lenet_snn()
    g = save_nir(snn, tmp_path / "snn.nir", dt=DT)
    kinds = [type(n).__name__ for n in g.nodes.values()]
    assert kinds.count("IF") == 3 and kinds[-2] == "I" and "Flatten" in kinds and "AvgPool2d" in kinds
    net = load_nir(tmp_path / "snn.nir")
    x = torch.rand(20, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    x_seq = x[None].expand(40, *x.shape)                   # the analog image as a constant current
    fast, _ = snn(x_seq)
    snn.synapses = "dense"                                 # the imported graph runs dense products
    ref, _ = snn(x_seq)
    out = net(x_seq)
    assert torch.equal(out.readout, ref)
    torch.testing.assert_close(fast, ref)                  # event-driven sums: another order of additions
    assert all(s.sum() > 0 for s in out.spikes)


@pytest.mark.parametrize("pool, reset, match", [("max", "zero", "largest spike count"),
                                                 ("avg", "subtract", "lossy_reset=True")])
def test_converted_network_refusals(pool, reset, match):
    with pytest.raises(ValueError, match=match):
        to_nir(_lenet_snn(pool, reset), dt=DT)


# --- peers (skipped where they are not installed; bench/nir_peers.py runs the full comparison) ---

def _peer_spikes(model, hidden_name, x_seq):
    """Hidden spikes ``[T, B, N]`` of a peer's imported graph, stepped with its own state handling."""
    seen = []
    model.get_submodule(hidden_name).register_forward_hook(
        lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).detach().clone()))
    state = None
    for x_t in x_seq:
        out = model(x_t) if state is None and not isinstance(model, torch.fx.GraphModule) else model(x_t, state)
        state = out[1] if isinstance(out, tuple) else None
    return torch.stack(seen)


def _euler_hidden_graph(m):
    g = to_nir(m, dt=1e-4, discretization="euler")
    keep = ["input", "layers.0", "neurons.0"]
    out = nir.Output(output_type={"output": np.array([16])})
    return nir.NIRGraph(nodes={**{k: g.nodes[k] for k in keep}, "output": out},
                        edges=[("input", "layers.0"), ("layers.0", "neurons.0"), ("neurons.0", "output")])


@pytest.mark.parametrize("peer", ["snntorch", "norse", "spikingjelly"])
def test_peer_imports_the_euler_export(peer):
    pytest.importorskip(peer)
    pytest.importorskip("nirtorch")
    import contextlib
    import io

    m = mlp(functools.partial(LIF, tau_mem=8.0, tau_syn=4.0, reset="zero"))
    g = _euler_hidden_graph(m)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if peer == "snntorch":
            from snntorch.import_nir import import_from_nir
            net = import_from_nir(g)
        elif peer == "norse":
            from norse.torch.utils.import_nir import from_nir as norse_from_nir
            net = norse_from_nir(g, dt=1e-4)
        else:
            from spikingjelly.activation_based.nir_exchange.from_nir import import_from_nir
            net = import_from_nir(g, dt=1e-4)
    x = spikes(30, 4, 12)
    ref = m(x).spikes[0]
    assert ref.sum() > 0
    assert torch.equal(_peer_spikes(net, "neurons_0", x), ref)


@pytest.mark.parametrize("tau_syn", [0.0, 4.0])
def test_li_as_lif_makes_readouts_never_firing_neurons_with_the_same_constants(tau_syn):
    m = mlp(functools.partial(LIF, tau_mem=8.0, tau_syn=4.0, reset="zero"),
            readout=functools.partial(LI, tau_mem=10.0, tau_syn=tau_syn))
    g = to_nir(m, dt=1e-4, discretization="euler")
    li = g.nodes["neurons.1"]
    out = li_as_lif(g)
    lif = out.nodes["neurons.1"]
    assert type(li) is (nir.CubaLI if tau_syn else nir.LI) and g.nodes["neurons.1"] is li  # the input is unchanged
    assert type(lif) is (nir.CubaLIF if tau_syn else nir.LIF)
    for name in ("r", "v_leak", *(("tau_syn", "tau_mem", "w_in") if tau_syn else ("tau",))):
        assert np.array_equal(getattr(lif, name), getattr(li, name)), name
    assert lif.v_threshold.shape == (5,) and np.all(lif.v_threshold == np.inf) and np.all(lif.v_reset == 0)
    assert all(out.nodes[k] is g.nodes[k] for k in g.nodes if k != "neurons.1")
    assert out.edges == g.edges and out.metadata == g.metadata
    assert type(li_as_lif(g, ["neurons.1"]).nodes["neurons.1"]) is type(lif)
    with pytest.raises(ValueError, match="neurons.0"):
        li_as_lif(g, ["neurons.0"])  # a CubaLIF already


def test_snntorch_runs_the_readout_after_li_as_lif():
    pytest.importorskip("snntorch")
    import contextlib
    import io

    from snntorch.import_nir import import_from_nir

    m = mlp(functools.partial(LIF, tau_mem=8.0, tau_syn=4.0, reset="zero"),
            readout=functools.partial(LI, tau_mem=10.0, tau_syn=4.0))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        net = import_from_nir(li_as_lif(to_nir(m, dt=1e-4, discretization="euler")))
    x = spikes(30, 4, 12)
    with torch.no_grad():
        ref = m(x).readout
        readout = []
        for x_t in x:
            net(x_t)
            readout.append(net.neurons_1.mem.clone())
    assert ref.abs().max() > 0.1 and torch.allclose(torch.stack(readout), ref, atol=1e-5)


def test_snntorch_imports_the_recurrent_subgraph():
    pytest.importorskip("snntorch")
    import contextlib
    import io

    from snntorch.import_nir import import_from_nir

    torch.manual_seed(4)
    seq = nn.Sequential(SeqWise(nn.Linear(12, 16, bias=False)),
                        LIF(tau_mem=6.0, tau_syn=3.0, reset="zero", recurrent=16))
    with torch.no_grad():
        seq[1].w_rec.mul_(3.0)
    g = to_nir(seq, dt=1e-4, discretization="euler", input_shape=(12,))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        net = import_from_nir(g)
    x = spikes(30, 4, 12)
    ref, _ = seq[1](seq[0](x))
    state, outs = None, []
    for x_t in x:
        out, state = net(x_t, state)
        outs.append(out)
    assert ref.sum() > 0 and torch.equal(torch.stack(outs), ref)


def test_missing_nir_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)  # as if not installed: importing the module still works
    with pytest.raises(ImportError, match=r"spikegrad\[nir\]"):
        to_nir(mlp(functools.partial(LIF, reset="zero")), dt=DT)
