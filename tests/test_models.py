import functools

import pytest
import torch
from torch import nn

from spikegrad.functional import NetworkState
from spikegrad.models import SeqWise, SpikingConvNet, SpikingMLP, SpikingOutput, spikes_per_input
from spikegrad.neurons import LI, LIF


def test_seqwise_equals_per_step_application():
    lin = nn.Linear(5, 3)
    x = torch.randn(4, 2, 5)
    torch.testing.assert_close(SeqWise(lin)(x), torch.stack([lin(x_t) for x_t in x]))


def test_mlp_matches_manual_composition():
    torch.manual_seed(0)
    model = SpikingMLP([16, 8, 3], neuron=functools.partial(LIF, tau_mem=5.0), readout=functools.partial(LI, tau_mem=5.0))
    x = (torch.rand(10, 4, 1, 4, 4) < 0.3).float()
    out = model(x)
    assert isinstance(out, SpikingOutput)
    assert out.readout.shape == (10, 4, 3) and out.spikes[0].shape == (10, 4, 8) and out.v[0].shape == (10, 4, 8)
    # independent composition of the same layers, step by step
    w1, w2 = model.layers[0].module.weight, model.layers[1].module.weight
    hid, ro = LIF(tau_mem=5.0), LI(tau_mem=5.0)
    st1 = st2 = None
    for t in range(10):
        z, st1 = hid.step(x[t].flatten(1) @ w1.t(), st1)
        v, st2 = ro.step(z @ w2.t(), st2)
        torch.testing.assert_close(out.spikes[0][t], z)
        torch.testing.assert_close(out.readout[t], v)
    assert spikes_per_input(out).item() == pytest.approx(out.spikes[0].sum().item() / 4)


def test_mlp_wrong_image_size_is_explained():
    model = SpikingMLP([256, 10, 10])
    with pytest.raises(ValueError, match=r"expects 256 input features but got 784 \(28x28 images\).*data.size"):
        model(torch.zeros(3, 2, 1, 28, 28))


def test_mlp_bad_arguments():
    with pytest.raises(ValueError, match="sizes"):
        SpikingMLP([10])
    with pytest.raises(ValueError, match="weight_gain"):
        SpikingMLP([4, 3, 2], weight_gain=0.0)


def test_convnet_shapes_and_gradients():
    model = SpikingConvNet(in_shape=(1, 8, 8), channels=(4, 6), hidden=(12,), n_classes=5, weight_gain=3.0)
    x = (torch.rand(6, 3, 1, 8, 8) < 0.5).float()
    out = model(x)
    assert out.readout.shape == (6, 3, 5)
    assert [s.shape for s in out.spikes] == [(6, 3, 4, 8, 8), (6, 3, 6, 4, 4), (6, 3, 12)]
    out.readout.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="input must be"):
        model(torch.zeros(6, 3, 1, 16, 16))


def test_eval_mode_restores_each_submodule_flag():
    from spikegrad.models import eval_mode

    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5))
    net.train()
    net[1].eval()  # a frozen batch-norm inside a training model
    with eval_mode(net, None):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net] == [True, False, True] and net.training


def test_mlp_record_v_and_sparse_input_change_nothing_else():
    torch.manual_seed(0)
    x = (torch.rand(12, 5, 1, 4, 4) < 0.05).float()   # sparse spike input: the sparse path runs
    y = torch.randint(0, 3, (5,))
    outs, grads, keys = [], [], []
    for record_v, sparse in [(True, False), (False, True)]:
        torch.manual_seed(1)
        model = SpikingMLP([16, 8, 3], neuron=functools.partial(LIF, tau_mem=5.0), weight_gain=4.0,
                           record_v=record_v, sparse_input=sparse)
        out = model(x)
        nn.functional.cross_entropy(out.readout.amax(0), y).backward()
        outs.append(out)
        grads.append([p.grad for p in model.parameters()])
        keys.append(list(model.state_dict()))
    (a, b), (ga, gb) = outs, grads
    assert keys[0] == keys[1] and "layers.0.module.weight" in keys[0]  # checkpoints load either way
    assert len(a.v) == 1 and b.v == ()                 # no membrane traces without record_v
    assert a.spikes[0].sum() > 0 and torch.equal(a.spikes[0], b.spikes[0])
    torch.testing.assert_close(b.readout, a.readout)
    for p, q in zip(ga, gb):
        torch.testing.assert_close(q, p)
    from spikegrad.models import recording_v

    model = SpikingMLP([16, 8, 3], record_v=False)
    with recording_v(model):
        assert model(x).v[0].shape == (12, 5, 8)
    assert model.record_v is False and model(x).v == ()


def test_seqwise_narrow_linear_matches_plain_linear_and_gradients():
    # the batched input gradient of narrow layers against nn.Linear's own autograd, in float64
    lin = nn.Linear(7, 3).double()
    x = torch.randn(5, 4, 7, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 4, 3, dtype=torch.float64)
    out = SeqWise(lin)(x)
    gx, gw, gb = torch.autograd.grad(out, (x, lin.weight, lin.bias), g)
    ref = lin(x.reshape(20, 7)).reshape(5, 4, 3)
    rx, rw, rb = torch.autograd.grad(ref, (x, lin.weight, lin.bias), g)
    torch.testing.assert_close(out, ref)
    for a, b in [(gx, rx), (gw, rw), (gb, rb)]:
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda t: SeqWise(lin)(t), (x[:2, :2].detach().requires_grad_(),))


def test_dropout_drops_hidden_spikes_only_while_training():
    torch.manual_seed(0)
    model = SpikingMLP([12, 40, 3], neuron=functools.partial(LIF, tau_mem=5.0, tau_syn=2.0), weight_gain=8.0,
                       record_v=False, dropout=0.5)
    plain = SpikingMLP([12, 40, 3], neuron=functools.partial(LIF, tau_mem=5.0, tau_syn=2.0), record_v=False)
    plain.load_state_dict(model.state_dict())
    x = (torch.rand(20, 4, 12) < 0.3).float()
    model.eval(), plain.eval()
    assert torch.equal(model(x).readout, plain(x).readout)  # eval: nothing dropped
    model.train()
    seen = []
    model.layers[1].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    out = model(x)
    kept, spikes = seen[-1].detach(), out.spikes[0].detach()
    assert spikes.sum() > 0 and set(kept.unique().tolist()) <= {0.0, 2.0}  # kept spikes scaled by 1 / (1 - p)
    dropped = float(((spikes == 1) & (kept == 0)).sum() / spikes.sum().detach())
    assert 0.4 < dropped < 0.6
    with pytest.raises(ValueError, match="dropout must be a probability"):
        SpikingMLP([12, 40, 3], dropout=1.0)


# ------------------------------------------------------------------------------ state across calls
def state_leaves(state):
    """Every tensor of a (nested) state, in order; None entries kept, so two states line up field by field."""
    if isinstance(state, tuple):
        return [t for item in state for t in state_leaves(item)]
    return [state]


def assert_same_state(got, want):
    """Same structure, same values; floats up to rounding: the stateless layers sum over ``T * B``
    rows at once, and a matrix product of another row count may group its sums differently."""
    assert type(got) is type(want)
    a, b = state_leaves(got), state_leaves(want)
    assert len(a) == len(b) and sum(t is not None for t in b) > 0
    for u, w in zip(a, b):
        assert (u is None) == (w is None)
        if w is not None:
            torch.testing.assert_close(u, w)


@pytest.mark.parametrize("make,shape,grad", [
    (lambda: SpikingMLP([20, 16, 12, 4]), (30, 3, 20), True),  # layer by layer
    (lambda: SpikingMLP([20, 16, 12, 4], record_v=False), (30, 3, 20), False),  # the event-driven path
    (lambda: SpikingMLP([20, 16, 4], recurrent=True, neuron=functools.partial(LIF, refractory=2)), (30, 3, 20), True),
    (lambda: SpikingConvNet((1, 8, 8), channels=(4,), hidden=(12,), n_classes=3), (30, 3, 1, 8, 8), True),
])
def test_two_halves_continued_from_the_state_equal_one_run(make, shape, grad):
    torch.manual_seed(0)
    model = make()
    x = (torch.rand(shape) < 0.3).float()
    with torch.set_grad_enabled(grad):
        whole = model(x)
        first = model(x[:13])
        rest = model(x[13:], first.state)
    assert isinstance(whole.state, NetworkState) and len(whole.state) == len(model.neurons) + (
        isinstance(model, SpikingConvNet))
    torch.testing.assert_close(torch.cat([first.readout, rest.readout]), whole.readout)
    assert len(whole.spikes) == len(rest.spikes) and whole.spikes[0].sum() > 0
    for a, b, w in zip(first.spikes, rest.spikes, whole.spikes):
        assert torch.equal(torch.cat([a, b]), w)
    assert_same_state(rest.state, whole.state)


def test_detached_state_cuts_the_graph_between_chunks():
    torch.manual_seed(0)
    model = SpikingMLP([10, 8, 3], neuron=functools.partial(LIF, tau_mem=5.0))
    x1, x2 = torch.rand(8, 2, 10, requires_grad=True), torch.rand(8, 2, 10)
    first = model(x1)
    model(x2, first.state).readout.sum().backward()
    assert x1.grad is not None and x1.grad.abs().sum() > 0  # the whole graph: back into the first chunk
    x1.grad = None
    cut = first.state.detach()
    assert isinstance(cut, NetworkState)
    assert all(t is None or not t.requires_grad for t in state_leaves(cut))
    out = model(x2, cut)
    out.readout.sum().backward()
    assert x1.grad is None and model.layers[0].module.weight.grad is not None  # only the second chunk's graph
    assert torch.equal(out.readout, model(x2, first.state).readout)  # the same values


def test_bad_network_state_names_the_model_and_the_fix():
    conv = SpikingConvNet((1, 8, 8), channels=(4,), hidden=(6,), n_classes=3)
    x = torch.rand(4, 2, 1, 8, 8)
    state = conv(x).state
    with pytest.raises(ValueError, match=r"SpikingConvNet: state must be None .*NetworkState of 2 layer states.*"
                                         r"got a tuple of 1; pass state=None"):
        conv(x, state=state[:1])
    with pytest.raises(ValueError, match=r"SpikingMLP: .*got a LIFState \(the state of one layer\)"):
        conv.head(torch.rand(4, 2, 64), state=state[0])
