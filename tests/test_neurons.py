import math

import pytest
import torch

from spikegrad.neurons import IF, LI, LIF, LIFParams, LIFState, detach_state, last, lif_step, scan
from spikegrad.surrogates import FastSigmoid

HALF = 1 / math.log(2)  # tau giving a per-step decay of exactly 0.5


def run(neuron, x):
    out, state = neuron(torch.tensor(x, dtype=torch.float64).reshape(-1, 1, 1), record=True)
    return out.flatten().tolist(), state.v.flatten().tolist()


@pytest.mark.parametrize("reset,spikes,v", [
    ("subtract", [0, 0, 1, 0], [0.6, 0.9, 0.05, 0.025]),
    ("zero", [0, 0, 1, 0], [0.6, 0.9, 0.0, 0.0]),
    ("none", [0, 0, 1, 0], [0.6, 0.9, 1.05, 0.525]),
])
def test_hand_computed_lif_trace(reset, spikes, v):
    # decay 0.5, no synaptic filter: v = 0.5 v + x; x = 0.6, 0.6, 0.6, 0
    s, vv = run(LIF(tau_mem=HALF, tau_syn=0.0, reset=reset).double(), [0.6, 0.6, 0.6, 0.0])
    assert s == spikes
    assert vv == pytest.approx(v)


def test_hand_computed_trace_with_synaptic_current():
    # i = 0.5 i + x, v = 0.5 v + i: i = 1.2, .6, .3, .15; v = 1.2 -> spike -> .2, .7, .65, .475
    s, v = run(LIF(tau_mem=HALF, tau_syn=HALF).double(), [1.2, 0.0, 0.0, 0.0])
    assert s == [1, 0, 0, 0]
    assert v == pytest.approx([0.2, 0.7, 0.65, 0.475])


def test_threshold_is_strict():
    s, v = run(IF().double(), [0.5, 0.5, 0.5])
    assert s == [0, 0, 1] and v == pytest.approx([0.5, 1.0, 0.5])


def test_if_reset_subtract_and_refractory():
    s, v = run(IF().double(), [0.25] * 6)  # exact in binary: v reaches 1.0 exactly, no spike
    assert s == [0, 0, 0, 0, 1, 0] and v == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.25, 0.5])
    s, v = run(IF(refractory=1).double(), [1.5] * 4)
    assert s == [1, 0, 1, 0] and v == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_li_trace():
    v, _ = LI(tau_mem=HALF, tau_syn=0.0).double()(torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64).view(3, 1))
    assert v.flatten().tolist() == pytest.approx([1.0, 0.5, 2.25])


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("neuron_cls", [LIF, IF])
def test_multi_step_equals_loop_of_single_steps(reset, neuron_cls):
    n = neuron_cls(reset=reset)
    x = torch.rand(12, 3, 2, 4, 4) * 0.8  # conv-shaped
    out, state = n(x)
    st, outs = None, []
    for x_t in x:
        o, st = n.step(x_t, st)
        outs.append(o)
    torch.testing.assert_close(out, torch.stack(outs))
    torch.testing.assert_close(state.v, st.v)
    assert out.sum() > 0 and set(out.unique().tolist()) <= {0.0, 1.0}


def test_record_returns_states_and_last_is_final():
    n = LIF()
    x = torch.rand(7, 4, 5)
    out, final = n(x)
    out2, states = n(x, record=True)
    assert states.v.shape == (7, 4, 5)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(last(states).v, final.v)


def test_state_continues_across_chunks():
    n = LIF()
    x = torch.rand(10, 2, 6)
    full, _ = n(x)
    a, st = n(x[:4])
    b, _ = n(x[4:], st)
    torch.testing.assert_close(torch.cat([a, b]), full)
    # truncated BPTT: detaching the state keeps values
    b2, _ = n(x[4:], detach_state(st))
    torch.testing.assert_close(b2, b)


def test_batch_size_change_needs_no_reset():
    n = LIF()
    assert n(torch.rand(5, 3, 8))[0].shape == (5, 3, 8)
    assert n(torch.rand(5, 7, 8))[0].shape == (5, 7, 8)


def reference_net_grads(w1, w2, x, tau_mem, tau_syn, slope):
    """Slow reference: scalar loops per neuron; spike = H(u) forward, d primitive/du backward."""
    dm, ds = math.exp(-1 / tau_mem), math.exp(-1 / tau_syn)
    T, B, n_in = x.shape
    n_hid = w1.shape[0]
    loss = 0.0
    for b in range(B):
        v = [torch.zeros((), dtype=x.dtype) for _ in range(n_hid)]
        i = [torch.zeros((), dtype=x.dtype) for _ in range(n_hid)]
        vo = torch.zeros(w2.shape[0], dtype=x.dtype)
        io = torch.zeros(w2.shape[0], dtype=x.dtype)
        for t in range(T):
            z = []
            for k in range(n_hid):
                cur = sum(w1[k, j] * x[t, b, j] for j in range(n_in))
                i[k] = ds * i[k] + cur
                v[k] = dm * v[k] + i[k]
                u = v[k] - 1.0
                soft = FastSigmoid.primitive(u, torch.tensor(slope, dtype=x.dtype))
                spike = (u > 0).to(x.dtype) + soft - soft.detach()
                z.append(spike)
                v[k] = v[k] - spike.detach()
            zt = torch.stack(z)
            io = ds * io + w2 @ zt
            vo = dm * vo + io
            loss = loss + (vo ** 2).sum()
    return torch.autograd.grad(loss, (w1, w2))


def test_gradients_match_slow_reference():
    torch.manual_seed(1)
    T, B, n_in, n_hid, n_out = 6, 2, 3, 4, 2
    x = torch.rand(T, B, n_in, dtype=torch.float64)
    w1 = (torch.rand(n_hid, n_in, dtype=torch.float64) * 1.5).requires_grad_(True)
    w2 = torch.randn(n_out, n_hid, dtype=torch.float64).requires_grad_(True)
    hid = LIF(tau_mem=5.0, tau_syn=2.0, surrogate=FastSigmoid(slope=2.0)).double()
    out = LI(tau_mem=5.0, tau_syn=2.0).double()
    z, _ = hid(torch.einsum("tbi,hi->tbh", x, w1))
    assert 0 < z.sum() < z.numel()  # some spikes, not saturated
    v, _ = out(torch.einsum("tbh,oh->tbo", z, w2))
    g1, g2 = torch.autograd.grad((v ** 2).sum(), (w1, w2))
    r1, r2 = reference_net_grads(w1, w2, x, 5.0, 2.0, 2.0)
    torch.testing.assert_close(g1, r1)
    torch.testing.assert_close(g2, r2)
    assert g1.abs().sum() > 0


def test_detach_reset_changes_gradient():
    x = torch.rand(20, 4, 3, dtype=torch.float64, requires_grad=True)
    grads = []
    for detach in (True, False):
        x.grad = None
        LIF(detach_reset=detach).double()(x * 1.5)[0].sum().backward()
        grads.append(x.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_learnable_constants_get_gradients():
    n = LIF(learn_tau=True, learn_threshold=True, shape=(5,))
    assert {name for name, _ in n.named_parameters()} == {"log_tau_mem", "log_tau_syn", "log_v_th"}
    n(torch.rand(10, 3, 5) * 0.5)[0].sum().backward()
    for p in n.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_recurrent_weights_act_on_previous_spikes():
    n = LIF(tau_mem=HALF, tau_syn=0.0, recurrent=2).double()
    with torch.no_grad():
        n.w_rec.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    x = torch.tensor([[[1.5, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]], dtype=torch.float64)
    out, _ = n(x)
    # neuron 0 spikes at t=0, drives neuron 1 with 2.0 at t=1
    assert out[:, 0].tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    n(x)[0].sum().backward()
    assert n.w_rec.grad is not None


def test_dtype_and_buffers_move():
    n = LIF(shape=(4,))
    y, st = n(torch.rand(3, 2, 4, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and st.v.dtype == torch.float32  # states stay float32
    assert set(n.state_dict()) >= {"tau_mem", "tau_syn", "v_th", "surrogate.slope"}


def test_functional_step_compiles_fullgraph():
    p = LIFParams(0.9, 0.5, 1.0)
    spike = FastSigmoid()

    def step(x, state):
        return lif_step(x, state, p, spike)

    x = torch.rand(8, 4, 16, requires_grad=True)
    st = LIFState(torch.zeros(4, 16), torch.zeros(4, 16))
    eager, _ = scan(step, x * 2, st)
    eager.sum().backward()
    g = x.grad.clone()
    x.grad = None
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out, _ = scan(compiled, x * 2, st)
    out.sum().backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(x.grad, g)


def test_module_compiles_and_matches_eager():
    n = LIF(refractory=2)
    x = torch.rand(6, 3, 10) * 1.5
    torch.testing.assert_close(torch.compile(n, backend="aot_eager")(x)[0], n(x)[0])


@pytest.mark.parametrize("kwargs,match", [
    ({"tau_mem": 0.0}, "tau_mem"),
    ({"tau_mem": -5.0}, "tau_mem"),
    ({"tau_syn": -1.0}, "tau_syn"),
    ({"reset": "soft"}, "reset"),
    ({"v_th": 0.0}, "v_th"),
    ({"refractory": -1}, "refractory"),
    ({"surrogate": "nope"}, "unknown surrogate"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIF(**kwargs)


def test_bad_input_rank_and_state():
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\]"):
        LIF()(torch.rand(5))
    with pytest.raises(TypeError, match="floating"):
        LIF()(torch.ones(3, 2, dtype=torch.int64))
    _, st = LIF()(torch.rand(3, 2, 4))
    with pytest.raises(ValueError, match="state=None"):
        LIF()(torch.rand(3, 5, 4), st)
    with pytest.raises(ValueError, match="tau_mem"):
        LI(tau_mem=0)
