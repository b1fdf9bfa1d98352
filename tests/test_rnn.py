"""Recurrent spiking classifier: recurrent LIF / ALIF layers and SpikingMLP(recurrent=True) against a
slow reference written from the equations, the time readouts and the TimeFirst encoder."""

import functools
import math

import pytest
import torch

from spikegrad.encoding import TimeFirst
from spikegrad.losses import LastStep, MaxOverTime, MeanOverTime, SumOverTime
from spikegrad.models import SpikingMLP
from spikegrad.neurons import ALIF, BSS2LIF, IF, LI, LIF


def reference_layer(x, w_rec, tau_mem, tau_syn, v_th, spike, tau_ada=None, beta=0.0, reset="subtract"):
    """Slow recurrent (A)LIF layer: x [T, B, N] -> spikes [T, B, N], one explicit step at a time."""
    T, B, N = x.shape
    dm, ds = math.exp(-1 / tau_mem), (math.exp(-1 / tau_syn) if tau_syn > 0 else 0.0)
    da = math.exp(-1 / tau_ada) if tau_ada else 0.0
    v = torch.zeros(B, N, dtype=x.dtype)
    i = torch.zeros(B, N, dtype=x.dtype)
    a = torch.zeros(B, N, dtype=x.dtype)
    z = torch.zeros(B, N, dtype=x.dtype)
    out = []
    for t in range(T):
        rec = torch.stack([sum(z[b, k] * w_rec[n, k] for k in range(N)) for b in range(B) for n in range(N)])
        i = ds * i + x[t] + rec.reshape(B, N)
        v = dm * v + i
        th = v_th + beta * a
        s = spike(v - th)
        if reset == "subtract":
            v = v - s.detach() * th
        else:
            v = v * (1 - s.detach())
        a = da * a + (1 - da) * s.detach()
        z = s
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_recurrent_layer_equals_slow_reference(kind):
    torch.manual_seed(0)
    T, B, N = 12, 3, 5
    x = (torch.rand(T, B, N, dtype=torch.float64) * 1.2).requires_grad_()
    if kind == "lif":
        layer = LIF(tau_mem=6.0, tau_syn=3.0, recurrent=N, surrogate="atan").double()
        kw = {}
    else:
        layer = ALIF(tau_mem=6.0, tau_syn=3.0, tau_ada=15.0, beta=1.5, recurrent=N, surrogate="atan").double()
        kw = {"tau_ada": 15.0, "beta": 1.5}
    with torch.no_grad():
        layer.w_rec.normal_(0, 0.8)
    spikes, _ = layer(x)
    w = layer.w_rec.detach().clone().requires_grad_()
    ref = reference_layer(x, w, 6.0, 3.0, 1.0, layer.surrogate, **kw)
    assert torch.equal(spikes, ref)
    assert spikes.sum() > 0 and (spikes.sum(0) > 1).any()  # the recurrence is exercised
    g = torch.randn_like(spikes)
    gx, gw = torch.autograd.grad((spikes * g).sum(), (x, layer.w_rec))
    gx_ref, gw_ref = torch.autograd.grad((ref * g).sum(), (x, w))
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-10, atol=1e-12)
    assert gw.abs().sum() > 0


def test_recurrent_step_equals_sequence_and_chunks_continue():
    torch.manual_seed(1)
    layer = ALIF(tau_mem=5.0, tau_syn=2.0, recurrent=4)
    x = torch.rand(10, 2, 4) * 1.5
    full, st_full = layer(x)
    state, outs = None, []
    for x_t in x:
        s, state = layer.step(x_t, state)
        outs.append(s)
    assert torch.equal(torch.stack(outs), full)
    a, st = layer(x[:6])
    b, st2 = layer(x[6:], st)
    assert torch.equal(torch.cat([a, b]), full)
    assert torch.equal(st2.a, st_full.a) and torch.equal(st2.z, full[-1])


def test_recurrent_layer_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"recurrent layer of 4 neurons takes input \[T, B, 4\]"):
        ALIF(recurrent=4)(torch.zeros(3, 2, 5))
    with pytest.raises(ValueError, match="recurrent must be a positive int"):
        ALIF(recurrent=0)


def test_recurrent_classifier_equals_slow_reference():
    torch.manual_seed(2)
    neuron = functools.partial(ALIF, tau_mem=6.0, tau_syn=3.0, tau_ada=15.0, beta=1.5, surrogate="fast_sigmoid")
    readout = functools.partial(LI, tau_mem=10.0, tau_syn=3.0)
    model = SpikingMLP([7, 5, 3], neuron=neuron, readout=readout, recurrent=True, recurrent_gain=1.0,
                       weight_gain=3.0).double()
    assert model.neurons[0].w_rec.shape == (5, 5)
    x = (torch.rand(15, 2, 7, dtype=torch.float64) < 0.3).double()
    out = model(x)
    w_in = model.layers[0].module.weight
    hidden = reference_layer(x @ w_in.t(), model.neurons[0].w_rec, 6.0, 3.0, 1.0, model.neurons[0].surrogate,
                             tau_ada=15.0, beta=1.5)
    assert torch.equal(out.spikes[0], hidden) and hidden.sum() > 0
    # LI readout from the equations: i = ds i + W s, v = dm v + i
    dm, ds = math.exp(-1 / 10), math.exp(-1 / 3)
    cur = hidden @ model.layers[1].module.weight.t()
    v = i = torch.zeros(2, 3, dtype=torch.float64)
    trace = []
    for t in range(15):
        i = ds * i + cur[t]
        v = dm * v + i
        trace.append(v)
    torch.testing.assert_close(out.readout, torch.stack(trace), rtol=1e-12, atol=1e-12)


def test_recurrent_classifier_initial_recurrent_weights_and_errors():
    torch.manual_seed(3)
    model = SpikingMLP([4, 400, 2], recurrent=True, recurrent_gain=0.5)
    std = float(model.neurons[0].w_rec.detach().std())
    assert abs(std - 0.5 / math.sqrt(400)) < 0.05 * 0.5 / math.sqrt(400)
    assert SpikingMLP([4, 6, 2]).neurons[0].w_rec is None
    with pytest.raises(ValueError, match="neuron=lif or neuron=alif"):
        SpikingMLP([4, 6, 2], neuron=IF, recurrent=True)
    with pytest.raises(ValueError, match="neuron=lif or neuron=alif"):
        SpikingMLP([4, 6, 2], neuron=BSS2LIF, recurrent=True)


def test_recurrent_classifier_trains():
    """A few Adam steps on a timing task lower the loss (input and recurrent weights both learn)."""
    torch.manual_seed(4)
    T, B = 30, 64
    y = torch.randint(0, 2, (B,))
    x = torch.zeros(T, B, 2)
    x[5, torch.arange(B), y] = 1.0   # which channel fires tells the class
    model = SpikingMLP([2, 16, 2], neuron=functools.partial(LIF, tau_mem=10.0, tau_syn=3.0), recurrent=True,
                       weight_gain=8.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = MaxOverTime(scale=5.0)
    w_rec0 = model.neurons[0].w_rec.detach().clone()
    losses = []
    for _ in range(30):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model.neurons[0].w_rec, w_rec0)


def test_time_readouts_known_values():
    r = torch.tensor([[[1.0, -2.0]], [[3.0, 0.0]], [[-1.0, 4.0]]])  # [T=3, B=1, C=2]
    torch.testing.assert_close(MeanOverTime(2.0).logits(r), torch.tensor([[2.0, 4.0 / 3]]))
    torch.testing.assert_close(SumOverTime(0.5).logits(r), torch.tensor([[1.5, 1.0]]))
    torch.testing.assert_close(LastStep(1.0).logits(r), torch.tensor([[-1.0, 4.0]]))
    assert LastStep().predict(r).tolist() == [1] and MeanOverTime().predict(r).tolist() == [0]


def test_time_first():
    x = torch.arange(24.0).reshape(2, 3, 4)
    y = TimeFirst(T=3)(x)
    assert y.shape == (3, 2, 4) and y.is_contiguous() and torch.equal(y[1, 0], x[0, 1])
    with pytest.raises(ValueError, match="the sequences have 3 steps"):
        TimeFirst(T=5)(x)
    with pytest.raises(ValueError, match="floating-point batch of sequences"):
        TimeFirst()(torch.zeros(2, 3, dtype=torch.long))


# ----------------------------------------------------------------------- recurrent networks on the chip
def recurrent_mlp(seed=0, record_v=False):
    torch.manual_seed(seed)
    model = SpikingMLP([16, 12, 4], neuron=functools.partial(LIF, tau_mem=8.0, tau_syn=4.0),
                       readout=functools.partial(LI, tau_mem=8.0, tau_syn=4.0), recurrent=True, recurrent_gain=1.5,
                       weight_gain=4.0, readout_gain=0.5, record_v=record_v)
    return model


def spike_input(T=25, B=5, n=16, p=0.1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n, generator=g) < p).float()


def _grads(model, out):
    model.zero_grad()
    (out.readout.amax(0).logsumexp(1).sum() + 0.1 * out.spikes[0].sum()).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("record_v", [False, True])
def test_ideal_chip_runs_a_recurrent_network_and_trains_it_as_software(record_v):
    from spikegrad.hardware import AnalogSubstrate, InTheLoop

    model, x = recurrent_mlp(record_v=record_v), spike_input()
    hil = InTheLoop(model, AnalogSubstrate.ideal()).eval()
    with torch.no_grad():
        hw, sw = hil(x), model(x)
    assert sw.spikes[0].sum() > 0
    assert torch.equal(hw.spikes[0], sw.spikes[0])
    torch.testing.assert_close(hw.readout, sw.readout)
    g_sw = _grads(model, model(x))
    g_hil = _grads(model, hil.train()(x))
    names = [n for n, _ in model.named_parameters()]
    assert "neurons.0.w_rec" in names
    for name, a, b in zip(names, g_sw, g_hil):  # float32: the fused software path sums in another order
        assert a.abs().sum() > 0, name
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_recurrent_chip_matches_a_slow_reference_with_mismatch_and_quantization():
    """The chip's recurrent layer by its defining equations: quantized [W, W_rec] with one scale,
    synapse mismatch on the recurrent rows too, per-circuit constants and leak."""
    from spikegrad.hardware import AnalogSubstrate, layer_specs

    model, x = recurrent_mlp(seed=3), spike_input(seed=4)
    sub = AnalogSubstrate(mismatch=0.2, row_gain=0.1)
    spec = layer_specs(model)[0]
    n, n_in = spec.weight.shape
    c = sub.neuron_constants(spec, slice(0, n))
    w_all = torch.cat([spec.weight.detach(), spec.w_rec.detach()], 1)
    q = 63
    scale = w_all.abs().max() / q
    w_all = torch.clamp(torch.round(w_all / scale), -q, q) * scale
    gain = (1 + 0.2 * sub.e_synapse[:n_in + n, :n]).clamp(min=0).t() * (1 + 0.1 * sub.e_row[:n_in + n]).clamp(min=0)
    w_all = w_all * gain
    w, w_rec = w_all[:, :n_in], w_all[:, n_in:]
    v_leak = c.v_leak
    i = v = z = torch.zeros(x.shape[1], n)
    ref = []
    for t in range(x.shape[0]):
        i = c.decay_syn * i + x[t] @ w.t() + z @ w_rec.t()
        v = c.decay_mem * (v - v_leak) + v_leak + i
        z = (v - c.v_th > 0).float()
        v = v - z * c.v_th
        ref.append(z)
    ref = torch.stack(ref)
    got = sub.run(x, layer_specs(model)).spikes[0]
    assert got.sum() > 0
    assert (got != ref).float().mean() < 0.002  # float sums in another order may flip a spike at threshold
    plain = AnalogSubstrate(mismatch=0.2, row_gain=0.1).run(x, [spec._replace(w_rec=None), layer_specs(model)[1]])
    assert not torch.equal(plain.spikes[0], got)  # the recurrent synapses act


def test_chip_counts_recurrent_rows():
    from spikegrad.hardware import AnalogSubstrate, InTheLoop

    with pytest.raises(ValueError, match="20 inputs and 40 recurrent rows"):
        InTheLoop(SpikingMLP([20, 40, 2], recurrent=True), AnalogSubstrate(rows=50))
    with pytest.raises(ValueError, match="recurrent"):
        InTheLoop(SpikingMLP([20, 40, 2], recurrent=True), AnalogSubstrate(), surrogate_at="membrane")
