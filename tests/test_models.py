import functools

import pytest
import torch
from torch import nn

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
