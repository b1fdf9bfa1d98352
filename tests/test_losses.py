import pytest
import torch
import torch.nn.functional as F

from spikegrad.losses import CrossEntropy, FirstSpike, MaxOverTime, SpikeCount, first_spike_steps
from spikegrad.models import SpikingOutput
from spikegrad.surrogates import make_surrogate


def out(readout):
    return SpikingOutput(readout, (), ())


def test_max_over_time_by_hand():
    r = torch.tensor([[[0.1, 0.5]], [[0.9, 0.2]], [[0.3, 0.4]]])  # [T=3, B=1, C=2]
    y = torch.tensor([1])
    expected = -torch.log_softmax(torch.tensor([0.9, 0.5]) * 2, 0)[1]
    assert MaxOverTime(scale=2.0)(out(r), y).item() == pytest.approx(expected.item())
    assert MaxOverTime().predict(out(r)).tolist() == [0]


def test_spike_count_by_hand():
    s = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]], [[0.0, 1.0]]])
    assert SpikeCount(scale=1.0)(out(s), torch.tensor([0])).item() == pytest.approx(
        F.cross_entropy(torch.tensor([[2.0, 3.0]]), torch.tensor([0])).item())
    assert SpikeCount().predict(out(s)).tolist() == [1]


def test_first_spike_steps_by_hand_and_gradient():
    s = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # [T=4, N=3]
    assert first_spike_steps(s).tolist() == [2.0, 1.0, 0.0]
    assert first_spike_steps(torch.zeros(5, 2)).tolist() == [5.0, 5.0]
    # the correct class fires first -> lower loss than when it fires last
    y = torch.tensor([2])
    early = FirstSpike()(out(s.unsqueeze(1)), y)
    late = FirstSpike()(out(s.flip(-1).unsqueeze(1)), y)
    assert early < late and FirstSpike().predict(out(s.unsqueeze(1))).tolist() == [2]
    # gradients reach the membrane through the surrogate
    v = torch.randn(6, 2, 3, requires_grad=True)
    FirstSpike()(out(make_surrogate("fast_sigmoid")(v)), torch.tensor([0, 1])).backward()
    assert v.grad.abs().sum() > 0


def test_cross_entropy_rejects_spiking_output_and_bad_labels():
    with pytest.raises(TypeError, match="MaxOverTime"):
        CrossEntropy()(out(torch.zeros(3, 2, 4)), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        MaxOverTime()(out(torch.zeros(3, 2, 4)), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="scale"):
        MaxOverTime(scale=0)
