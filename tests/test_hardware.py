import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from spikegrad.functional import NetworkState
from spikegrad.hardware import (SURROGATE_AT, AnalogSubstrate, DelayedInput, InTheLoop, Substrate, cadc_read,
                                in_the_loop, layer_specs, quantize_weights)
from spikegrad.hardware.analysis import (FIGURE_NAME, mismatch_figure, mismatch_points, substrate_analysis,
                                         write_mismatch_figure)
from spikegrad.losses import MaxOverTime
from spikegrad.models import SpikingConvNet, SpikingMLP
from spikegrad.neurons import ALIF, LI, LIF
from spikegrad.training import fit

NOISY = dict(mismatch=0.2, noise=0.05, cadc_gain=0.02, cadc_offset=2.0, readout_noise=1.0, row_gain=0.1,
             weight_max=[1.0, 0.5])


def mlp(sizes=(32, 24, 5), sparse=False, record_v=False, seed=0, **kw):
    torch.manual_seed(seed)
    return SpikingMLP(list(sizes), neuron=partial(LIF, tau_mem=8.0, tau_syn=4.0, **kw),
                      readout=partial(LI, tau_mem=8.0, tau_syn=4.0), sparse_input=sparse, record_v=record_v,
                      weight_gain=4.0, readout_gain=0.5)


def spikes_in(T=20, B=6, n=32, p=0.08, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n, generator=g) < p).float()


def objective(out):
    return out.readout.amax(0).logsumexp(1).sum() + 0.1 * out.spikes[0].sum() + sum(v.pow(2).mean() for v in out.v)


def grads(model, out):
    model.zero_grad()
    objective(out).backward()
    return [p.grad.clone() for p in model.parameters()]


# ------------------------------------------------------------------------- ideal substrate == software
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("record_v", [False, True])
def test_ideal_substrate_reproduces_the_software_model(sparse, record_v):
    model, x = mlp(sparse=sparse, record_v=record_v), spikes_in()
    hil = InTheLoop(model, AnalogSubstrate.ideal()).eval()
    with torch.no_grad():
        hw, fast = hil(x), model(x)
        model.inference = "layers"  # the software model's arithmetic, layer by layer (dense readout sums)
        sw = model(x)
        model.inference = "auto"
    assert sw.spikes[0].sum() > 0
    assert torch.equal(sw.spikes[0], hw.spikes[0])
    assert torch.equal(sw.readout, hw.readout)
    assert torch.equal(fast.spikes[0], hw.spikes[0])  # the event-driven inference path: sums in another order
    torch.testing.assert_close(fast.readout, hw.readout)
    assert len(sw.v) == len(hw.v) and all(torch.equal(a, b) for a, b in zip(sw.v, hw.v))
    g_sw = grads(model, model(x))
    g_hil = grads(model, hil.train()(x))
    for a, b in zip(g_sw, g_hil):
        assert a.abs().sum() > 0
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("record_v", [False, True])
def test_surrogate_at_the_recorded_membrane_equals_software_on_an_ideal_chip(record_v):
    model, x = mlp(record_v=record_v), spikes_in()
    g_sw = grads(model, model(x))
    out = InTheLoop(model, AnalogSubstrate.ideal(), surrogate_at="membrane")(x)
    for a, b in zip(g_sw, grads(model, out)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    noisy = InTheLoop(model, AnalogSubstrate(**NOISY), surrogate_at="membrane")(x)
    at_software = in_the_loop(model, x, AnalogSubstrate(**NOISY).run(x, layer_specs(model)))
    assert torch.equal(noisy.spikes[0], at_software.spikes[0])  # same chip, same noise seed: same values
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(grads(model, noisy), grads(model, at_software)))
    with pytest.raises(ValueError, match="reset"):
        InTheLoop(mlp(reset="zero"), AnalogSubstrate(), surrogate_at="membrane")


def test_in_the_loop_gradient_differs_on_a_mismatched_chip_and_values_are_the_chips():
    model, x = mlp(), spikes_in()
    sub = AnalogSubstrate(**NOISY)
    g_sw = grads(model, model(x))
    obs = sub.run(x, layer_specs(model))
    out = in_the_loop(model, x, obs)
    assert torch.equal(out.spikes[0], obs.spikes[0])
    torch.testing.assert_close(out.readout, obs.readout)
    g_hil = grads(model, out)
    assert all(torch.isfinite(g).all() for g in g_hil)
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(g_sw, g_hil))


def test_gradient_is_the_software_graph_at_the_recorded_spikes():
    """Independent reference: feed the chip's hidden spikes into the software readout by hand."""
    model, x = mlp(), spikes_in()
    obs = AnalogSubstrate(**NOISY).run(x, layer_specs(model))
    out = in_the_loop(model, x, obs)
    model.zero_grad()
    out.readout.amax(0).logsumexp(1).sum().backward()
    g_out = model.layers[1].module.weight.grad.clone()
    w = model.layers[1].module.weight.detach().clone().requires_grad_(True)
    r, _ = model.neurons[1](torch.nn.functional.linear(obs.spikes[0], w))
    (r + (obs.readout - r).detach()).amax(0).logsumexp(1).sum().backward()
    torch.testing.assert_close(g_out, w.grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ the chip model
def test_quantization_and_saturation_by_hand():
    w = torch.tensor([0.1, -0.26, 5.0, -5.0, 0.024, 0.125])
    q = quantize_weights(w, bits=6, scale=0.05)  # integers 2, -5, 63, -63, 0, 2 (half to even)
    torch.testing.assert_close(q, torch.tensor([2, -5, 63, -63, 0, 2]) * 0.05)
    torch.testing.assert_close(quantize_weights(torch.tensor([0.7, -0.2]), bits=2, scale=0.1), torch.tensor([0.3, -0.2]))
    v = torch.tensor([0.123, -0.5, 3.0, 1.0])
    torch.testing.assert_close(cadc_read(v, 0.0, 2.55, 8), torch.tensor([0.12, 0.0, 2.55, 1.0]))
    # gain 2 and offset 0.1: 0.346 -> code 35, 0.9 -> 90
    torch.testing.assert_close(cadc_read(torch.tensor([0.123, 0.4]), 0.0, 2.55, 8, gain=2.0, offset=0.1),
                               torch.tensor([0.35, 0.90]))


def test_chip_weights_saturate_at_weight_max():
    sub = AnalogSubstrate(weight_max=[0.63, 0.063])
    w = torch.tensor([[0.0149, 0.5, 2.0, -9.0]])
    got = sub.chip_weights(0, w, slice(0, 1))
    torch.testing.assert_close(got, torch.tensor([[0.01, 0.5, 0.63, -0.63]]))
    auto = AnalogSubstrate(weight_max=None).chip_weights(0, torch.tensor([[0.63, 0.3, -0.01]]), slice(0, 1))
    torch.testing.assert_close(auto, torch.tensor([[0.63, 0.3, -0.01]]))


def test_requested_spread_shows_up_in_the_measured_time_constants():
    """Measure each neuron's membrane decay from its recorded trace after one input spike."""
    T, n = 12, 480
    torch.manual_seed(0)
    model = SpikingMLP([1, n, 2], neuron=partial(LIF, tau_mem=10.0, tau_syn=0.0), readout=LI, record_v=True)
    with torch.no_grad():
        model.layers[0].module.weight.fill_(0.5)
    x = torch.zeros(T, 1, 1)
    x[0] = 1
    sub = AnalogSubstrate(mismatch=0.2, weight_bits=None, cadc_bits=None, rows=n, spreads={"v_leak": 0.0, "synapse": 0.0})
    v = sub.run(x, layer_specs(model), record_v=True).v[0][:, 0]  # [T, n]
    tau = -1 / torch.log(v[2] / v[1])
    rel = tau / 10.0 - 1
    assert abs(rel.std().item() - 0.2) < 0.03 and abs(rel.mean().item()) < 0.03
    c = sub.neuron_constants(layer_specs(model)[0], slice(0, n))
    assert abs((c.v_th - 1).std().item() - 0.2) < 0.03
    leak = AnalogSubstrate(mismatch=0.3, rows=n).neuron_constants(layer_specs(model)[0], slice(0, n)).v_leak
    assert abs(leak.std().item() - 0.3) < 0.04
    syn = AnalogSubstrate(mismatch=0.0, weight_bits=None, spreads={"synapse": 0.1}).chip_weights(
        0, torch.ones(n, 200), slice(0, n))
    assert abs(syn.std().item() - 0.1) < 0.01
    assert AnalogSubstrate(mismatch=0.2, spreads={"tau_mem": 0.05}).spreads == {
        "tau_mem": 0.05, "tau_syn": 0.2, "v_th": 0.2, "v_leak": 0.2, "synapse": 0.2}


def _slow_reference(model, sub, x):
    """The hidden layer of the chip by the defining equations, one step and one neuron-vector at a time:
    its spikes ``[T, B, N]`` and the circuits' final membrane and synaptic current ``[B, N]``."""
    spec = layer_specs(model)[0]
    n = spec.weight.shape[0]
    c = sub.neuron_constants(spec, slice(0, n))
    w = sub.chip_weights(0, spec.weight.detach(), slice(0, n))
    h = torch.cat([torch.zeros_like(x[:sub.delay]), x[:x.shape[0] - sub.delay]]) if sub.delay else x
    v_leak = torch.zeros(n) if c.v_leak is None else c.v_leak
    i = v = torch.zeros(x.shape[1], n)
    out = []
    for t in range(x.shape[0]):
        i = c.decay_syn * i + h[t] @ w.t()
        v = c.decay_mem * (v - v_leak) + v_leak + i
        s = (v - c.v_th > 0).float()
        v = v - s * c.v_th
        out.append(s)
    return torch.stack(out), (v, i)


@pytest.mark.parametrize("kw", [dict(mismatch=0.3), dict(mismatch=0.2, delay=1, dead=0.2, hot=0.2, row_gain=0.2)])
def test_chip_spikes_match_a_slow_reference(kw):
    model, x = mlp(), spikes_in()
    sub = AnalogSubstrate(**kw)
    got = sub.run(x, layer_specs(model)).spikes[0]
    ref, _ = _slow_reference(model, sub, x)
    assert got.sum() > 0
    assert (got != ref).float().mean() < 0.002  # the kernels' float sums may flip a spike at threshold


def test_dead_and_hot_circuits():
    model = mlp()
    sub = AnalogSubstrate(mismatch=0.0, dead=0.25, hot=0.25)
    n = 24
    dead = sub.fault[:n] < 0.25
    hot = sub.fault[:n] >= 0.75
    assert dead.any() and hot.any()
    s = sub.run(torch.zeros(30, 2, 32), layer_specs(model)).spikes[0]
    assert (s.sum((0, 1))[hot] > 0).all() and s.sum((0, 1))[~hot].sum() == 0
    s = sub.run(torch.ones(30, 2, 32), layer_specs(model)).spikes[0]
    assert s[:, :, dead].sum() == 0


def test_same_chip_seed_same_chip_other_seed_other_chip():
    model, x = mlp(), spikes_in()
    a, b, c = (AnalogSubstrate(mismatch=0.2, chip=s) for s in (7, 7, 8))
    assert torch.equal(a.e_tau_mem, b.e_tau_mem) and not torch.equal(a.e_tau_mem, c.e_tau_mem)
    ra, rb, rc = (s.run(x, layer_specs(model)) for s in (a, b, c))
    assert torch.equal(ra.spikes[0], rb.spikes[0]) and torch.equal(ra.readout, rb.readout)
    assert not torch.equal(ra.readout, rc.readout)
    assert torch.equal(a.replace(chip=8).e_synapse, c.e_synapse)


def test_temporal_noise_differs_trial_to_trial_but_is_seeded():
    model, x = mlp(), spikes_in()
    a, b = AnalogSubstrate(noise=0.1, readout_noise=1.0), AnalogSubstrate(noise=0.1, readout_noise=1.0)
    first, second = a.run(x, layer_specs(model)), a.run(x, layer_specs(model))
    assert not torch.equal(first.readout, second.readout)
    assert torch.equal(first.readout, b.run(x, layer_specs(model)).readout)


def test_delay_shifts_the_activity_by_one_step():
    model, x = mlp(), spikes_in()
    plain = AnalogSubstrate.ideal().run(x, layer_specs(model))
    late = AnalogSubstrate.ideal(delay=1).run(x, layer_specs(model))
    assert torch.equal(late.spikes[0][1:], plain.spikes[0][:-1]) and late.spikes[0][0].sum() == 0


# ------------------------------------------------------------------------------------ continuing a run
def _leaves(state):
    """Every tensor of a (nested) state, in order, None entries kept."""
    return [t for item in state for t in _leaves(item)] if isinstance(state, tuple) else [state]


def _same_state(got, want):
    assert type(got) is type(want) and [type(st) for st in got] == [type(st) for st in want]
    a, b = _leaves(got), _leaves(want)
    assert len(a) == len(b)
    for u, w in zip(a, b):
        assert (u is None) == (w is None)
        if w is not None:
            torch.testing.assert_close(u, w)


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("record_v", [False, True])
@pytest.mark.parametrize("kw", [
    dict(mismatch=0.0, weight_bits=None, cadc_bits=None),                # the ideal chip
    dict(mismatch=0.2, spreads={"v_leak": 0.0}, row_gain=0.1, delay=1),  # fixed pattern, 6-bit weights, 8-bit reads
    dict(mismatch=0.2, delay=2, hot=0.1),                                # leak potentials: a membrane drive
])
def test_a_chip_run_continued_from_its_state_equals_one_run(kw, record_v, recurrent):
    torch.manual_seed(0)
    model = SpikingMLP([32, 24, 5], neuron=partial(LIF, tau_mem=8.0, tau_syn=4.0), readout=partial(LI, tau_mem=8.0),
                       weight_gain=4.0, readout_gain=0.5, recurrent=recurrent)
    x, sub, specs = spikes_in(T=30), AnalogSubstrate(**kw), layer_specs(model)
    whole = sub.run(x, specs, record_v=record_v)
    first = sub.run(x[:11], specs, record_v=record_v)
    rest = sub.run(x[11:], specs, record_v=record_v, state=first.state)
    assert whole.spikes[0].sum() > 0 and isinstance(whole.state, NetworkState) and len(whole.state) == 2
    assert all(isinstance(st, DelayedInput) == (sub.delay > 0) for st in whole.state)
    assert torch.equal(torch.cat([first.spikes[0], rest.spikes[0]]), whole.spikes[0])
    torch.testing.assert_close(torch.cat([first.readout, rest.readout]), whole.readout)
    if record_v:
        torch.testing.assert_close(torch.cat([first.v[0], rest.v[0]]), whole.v[0])
    _same_state(rest.state, whole.state)
    hidden = whole.state[0].neuron if sub.delay else whole.state[0]
    assert (hidden.z is not None) == recurrent  # the last spikes, for the recurrent synapses


def test_the_chips_state_is_the_software_models_and_the_circuits_physical_state():
    model, x = mlp(), spikes_in()
    with torch.no_grad():
        model.inference = "layers"
        sw = model(x)
    _same_state(AnalogSubstrate.ideal().run(x, layer_specs(model)).state, sw.state)  # ideal chip == software
    sub = AnalogSubstrate(mismatch=0.3)  # leak potentials: the kernels run them as an extra input current
    assert sub.neuron_constants(layer_specs(model)[0], slice(0, 24)).v_leak is not None
    obs = sub.run(x, layer_specs(model))
    ref, (v, i) = _slow_reference(model, sub, x)
    same = (obs.spikes[0] == ref).all(0)  # [B, N]: neurons whose every spike agrees (float sums may flip one)
    assert same.float().mean() > 0.9
    torch.testing.assert_close(obs.state[0].v[same], v[same])
    torch.testing.assert_close(obs.state[0].i[same], i[same])  # the circuit's current, without the drive


def test_in_the_loop_continues_from_the_chips_state():
    model, x = mlp(record_v=True), spikes_in(T=30)
    hil = InTheLoop(model, AnalogSubstrate.ideal())
    for surrogate_at in SURROGATE_AT:
        hil.surrogate_at = surrogate_at
        whole = hil(x)
        first = hil(x[:12])
        rest = hil(x[12:], first.state)
        assert isinstance(rest.state, NetworkState)
        assert not any(t.requires_grad for t in _leaves(rest.state) if t is not None)  # measured, not differentiable
        assert torch.equal(torch.cat([first.spikes[0], rest.spikes[0]]), whole.spikes[0])
        torch.testing.assert_close(torch.cat([first.readout, rest.readout]), whole.readout)
        torch.testing.assert_close(torch.cat([first.v[0], rest.v[0]]), whole.v[0])
        _same_state(rest.state, whole.state)
        # on an ideal chip the second half's gradient is the software model's from the same state
        for a, b in zip(grads(model, hil(x[12:], first.state)), grads(model, model(x[12:], first.state))):
            assert a.abs().sum() > 0
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        hil.eval()
        first = hil(x[:12])
        rest = hil(x[12:], first.state)
        torch.testing.assert_close(torch.cat([first.readout, rest.readout]), hil(x).readout)
    soft = InTheLoop(model, AnalogSubstrate.ideal(), train_on="software")
    _same_state(soft(x[12:], first.state).state, model(x[12:], first.state).state)


# ------------------------------------------------------------------------------------ clear errors
@pytest.mark.parametrize("kw, match", [
    (dict(mismatch=-0.1), "mismatch"), (dict(weight_bits=0), "weight_bits"), (dict(cadc_bits=0), "cadc_bits"),
    (dict(spreads={"tau": 0.1}), "unknown names"), (dict(cadc_range=[1.0, -1.0]), "cadc_range"),
    (dict(dead=0.6, hot=0.6), "dead \\+ hot"), (dict(delay=-1), "delay"), (dict(noise=-1.0), "noise"),
])
def test_bad_settings_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        AnalogSubstrate(**kw)


def test_models_the_substrate_cannot_run_are_rejected():
    sub = AnalogSubstrate()
    with pytest.raises(ValueError, match="SpikingMLP"):
        InTheLoop(SpikingConvNet(in_shape=(1, 8, 8), channels=[2], hidden=[4]), sub)
    with pytest.raises(ValueError, match="bias"):
        InTheLoop(SpikingMLP([8, 4, 2], bias=True), sub)
    with pytest.raises(ValueError, match="LI"):
        InTheLoop(SpikingMLP([8, 4, 2], readout=LIF), sub)
    with pytest.raises(ValueError, match="LIF neurons"):
        InTheLoop(SpikingMLP([8, 4, 2], neuron=ALIF), sub)
    with pytest.raises(ValueError, match="neuron circuits"):
        InTheLoop(SpikingMLP([8, 40, 2]), AnalogSubstrate(neurons=32))
    with pytest.raises(ValueError, match="synapse rows"):
        InTheLoop(SpikingMLP([300, 4, 2]), sub)
    with pytest.raises(ValueError, match="one per layer"):
        InTheLoop(SpikingMLP([8, 4, 4, 2]), AnalogSubstrate(weight_max=[1.0, 0.5]))
    with pytest.raises(ValueError, match="train_on"):
        InTheLoop(SpikingMLP([8, 4, 2]), sub, train_on="chip")
    with pytest.raises(ValueError, match="surrogate_at"):
        InTheLoop(SpikingMLP([8, 4, 2]), sub, surrogate_at="chip")
    with pytest.raises(ValueError, match="inputs per step"):
        InTheLoop(SpikingMLP([8, 4, 2]), sub)(torch.zeros(3, 2, 9))
    with pytest.raises(NotImplementedError):
        Substrate().run(torch.zeros(3, 2, 8), layer_specs(SpikingMLP([8, 4, 2])))


def test_bad_chip_states_are_clear_errors():
    model, x = mlp(), spikes_in()
    specs = layer_specs(model)
    state = AnalogSubstrate(delay=1).run(x, specs).state
    with pytest.raises(ValueError, match=r"AnalogSubstrate.run: state must be None .*NetworkState of 2 layer states.*"
                                         r"got a tuple of 1; pass state=None"):
        AnalogSubstrate(delay=1).run(x, specs, state=state[:1])
    with pytest.raises(ValueError, match=r"the state of layer 0 \(a DelayedInput of 1 steps\) is not from a chip "
                                         r"with delay=0"):
        AnalogSubstrate().run(x, specs, state=state)
    with pytest.raises(ValueError, match=r"the state of layer 0 \(LIFState\) is not from a chip with delay=2"):
        AnalogSubstrate(delay=2).run(x, specs, state=AnalogSubstrate().run(x, specs).state)
    with pytest.raises(ValueError, match=r"AnalogSubstrate.run: .*got a LIFState \(the state of one layer\)"):
        InTheLoop(model, AnalogSubstrate()).eval()(x, state[0].neuron)


# ------------------------------------------------------------------- training, analysis, the figure
def _loader(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 16, 32, generator=g) < 0.1).float().transpose(0, 1)  # [T, n, 32] spikes
    y = torch.randint(0, 5, (n,), generator=g)
    return [(x[:, k:k + 8].transpose(0, 1), y[k:k + 8]) for k in range(0, n, 8)]  # batches of [8, T, 32]


def _time_first(x, generator=None):
    return x.transpose(0, 1)


def test_fit_trains_in_the_loop_and_the_analysis_reports_the_substrate(tmp_path):
    model = mlp()
    hil = InTheLoop(model, AnalogSubstrate(**NOISY))
    before = model.layers[0].module.weight.detach().clone()
    loss = MaxOverTime()
    metrics = fit(hil, _loader(), _loader(seed=1), _loader(seed=2), torch.optim.Adam(hil.parameters(), 1e-2), loss,
                  epochs=1, encoder=_time_first, progress=False, log_samples=0)
    assert math.isfinite(metrics["test_loss"]) and not torch.equal(before, model.layers[0].module.weight)
    out = substrate_analysis(hil, _loader(), None, _loader(seed=2), substrate=None, loss=loss, encoder=_time_first,
                             other_chips=[1], mismatches=[0.0, 0.3], timing_batches=2, progress=False)
    for key in ("software_test_accuracy", "substrate_test_accuracy", "substrate_spikes_per_input",
                "substrate_chip1_test_accuracy", "epoch_time_ratio", "epoch_cpu_time_ratio"):
        assert math.isfinite(out[key]), key
    assert list(out["substrate_accuracy_by_mismatch"]) == ["0", "0.2", "0.3"]
    assert out["substrate"]["mismatch"] == 0.2 and out["substrate_train_on"] == "substrate"
    json.dumps(out)


def test_software_mode_is_transparent():
    model, x = mlp(), spikes_in()
    out = InTheLoop(model, AnalogSubstrate(**NOISY), train_on="software")(x)
    assert torch.equal(out.readout, model(x).readout)


def test_mismatch_figure_from_a_sweep(tmp_path):
    runs = [{"substrate_train_on": "substrate", "substrate_mismatch": m, "substrate_test_accuracy": a}
            for m, a in ((0.0, 0.97), (0.3, 0.965), (0.3, 0.96))]
    runs.append({"substrate_train_on": "software", "substrate_mismatch": 0.2, "substrate_test_accuracy": 0.9,
                 "substrate_accuracy_by_mismatch": {"0": 0.97, "0.2": 0.9, "0.3": 0.8}})
    runs.append({"test_accuracy": 0.5})
    curves = mismatch_points(runs)
    assert curves == {"in the loop": {0.0: [0.97], 0.3: [0.965, 0.96]},
                      "weight transfer": {0.2: [0.9], 0.0: [0.97], 0.3: [0.8]}}
    assert len(mismatch_figure(curves).axes[0].lines) == 2
    for k, r in enumerate(runs):
        (tmp_path / str(k)).mkdir()
        (tmp_path / str(k) / "metrics.json").write_text(json.dumps(r))
    path = write_mismatch_figure(tmp_path)
    assert path == tmp_path / FIGURE_NAME and path.stat().st_size > 1000
    assert write_mismatch_figure(tmp_path / "4") is None
    assert write_mismatch_figure(tmp_path / "4", extra=[tmp_path / "3"]) == tmp_path / "4" / FIGURE_NAME


def test_hil_experiment_registers_the_figure_callback(tmp_path):
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mnist16_hil", "substrate.mismatch=0.3", "model.model.sizes=[256,16,10]"],
                      return_hydra_config=True)
    model = instantiate(cfg.model)
    assert isinstance(model, InTheLoop) and model.substrate.mismatch == 0.3
    analysis = instantiate(cfg.analysis)
    assert analysis.keywords["substrate"].mismatch == 0.3
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(
        {"substrate_train_on": "substrate", "substrate_mismatch": 0.3, "substrate_test_accuracy": 0.9}))
    callback = instantiate(cfg.hydra.callbacks.mismatch_figure)
    cfg.hydra.sweep.dir = str(tmp_path)
    callback.on_multirun_end(cfg)
    assert (tmp_path / FIGURE_NAME).exists()
