import copy
import math
import pickle

import pytest
import torch

from spikegrad.regularizers import (
    LowerRate,
    SpikeCount,
    UpperRate,
    VoltageRange,
    lower_rate_penalty,
    spike_count_penalty,
    spike_counts,
    upper_rate_penalty,
    voltage_range_penalty,
)


def hand_spikes(dtype=torch.float64):
    """T = 3, B = 2, M = 3 neurons.

    sample 0: neuron 0 fires at t=0,1 (2), neuron 1 silent (0), neuron 2 at t=0,1,2 (3) -> zeta [2, 0, 3]
    sample 1: neuron 0 at t=2 (1),        neuron 1 silent (0), neuron 2 at t=0 (1)      -> zeta [1, 0, 1]
    population means per sample: 5/3, 2/3;  batch means per neuron: 1.5, 0, 2.
    """
    s = torch.zeros(3, 2, 3, dtype=dtype)
    s[[0, 1], 0, 0] = 1
    s[:, 0, 2] = 1
    s[2, 1, 0] = 1
    s[0, 1, 2] = 1
    return s


def test_hand_spikes_counts():
    assert spike_counts(hand_spikes()).tolist() == [[2, 0, 3], [1, 0, 1]]


# ----------------------------------------------------------------------------- known values
@pytest.mark.parametrize("theta,p,expected", [
    (1.0, 2, (2 / 3) ** 2 / 2),  # sample 0: relu(5/3 - 1) = 2/3; sample 1: relu(2/3 - 1) = 0
    (1.0, 1, (2 / 3) / 2),
    (0.5, 2, ((7 / 6) ** 2 + (1 / 6) ** 2) / 2),  # 5/3 - 1/2 = 7/6, 2/3 - 1/2 = 1/6
    (5 / 3, 2, 0.0),  # at the bound: zero
    (2.0, 2, 0.0),  # within bounds: zero
])
def test_upper_rate_known_values(theta, p, expected):
    assert upper_rate_penalty(hand_spikes(), theta, p).item() == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("theta,p,expected", [
    (1.0, 2, (1 + 1) / 6),  # zeta [2, 0, 3], [1, 0, 1]: relu(1 - zeta) = [0, 1, 0], [0, 1, 0]
    (2.0, 2, (4 + 1 + 4 + 1) / 6),  # relu(2 - zeta) = [0, 2, 0], [1, 2, 1]
    (2.0, 1, (2 + 1 + 2 + 1) / 6),
    (1.5, 2, (2.25 + 0.25 + 2.25 + 0.25) / 6),  # [0, 1.5, 0], [0.5, 1.5, 0.5]
    (0.0, 2, 0.0),  # no neuron can be below 0 spikes: zero
])
def test_lower_rate_known_values(theta, p, expected):
    assert lower_rate_penalty(hand_spikes(), theta, p).item() == pytest.approx(expected, abs=1e-15)
    assert lower_rate_penalty(hand_spikes(), theta, p, form="per_sample").item() == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("theta,p,expected", [
    (1.0, 2, 1 / 3),  # batch means 1.5, 0, 2: relu(1 - 1.5) = 0, relu(1 - 0) = 1, relu(1 - 2) = 0 -> 1/3
    (2.0, 2, (0.25 + 4 + 0) / 3),  # 0.5^2, 2^2, 0^2
    (2.0, 1, (0.5 + 2 + 0) / 3),
    (1.5, 2, 2.25 / 3),
    (0.0, 2, 0.0),
])
def test_lower_rate_batch_mean_known_values(theta, p, expected):
    assert lower_rate_penalty(hand_spikes(), theta, p, form="batch_mean").item() == pytest.approx(expected, abs=1e-15)


def test_lower_rate_zero_when_every_neuron_active():
    s = hand_spikes()
    s[1, :, 1] = 1  # neuron 1 now fires once per sample: zeta [2, 1, 3], [1, 1, 1]; batch means 1.5, 1, 2
    assert lower_rate_penalty(s, theta=1.0).item() == 0.0
    assert lower_rate_penalty(s, theta=1.0, form="batch_mean").item() == 0.0
    assert lower_rate_penalty(s, theta=1.25).item() == pytest.approx(4 * 0.25**2 / 6)  # four counts of 1
    assert lower_rate_penalty(s, theta=1.25, form="batch_mean").item() == pytest.approx(0.25**2 / 3)


def test_lower_rate_per_sample_penalizes_a_neuron_silent_on_most_samples():
    """A neuron that fires once on one sample in eight meets theta = 0.1 on the batch mean only."""
    s = torch.zeros(4, 8, 2, dtype=torch.float64)  # [T, B, M]
    s[2, 5, 0] = 1  # neuron 0: one spike on sample 5; neuron 1: one spike on every sample
    s[0, :, 1] = 1
    assert lower_rate_penalty(s, 0.1, form="batch_mean").item() == 0.0
    ref = 0.0  # loop reference: mean over (sample, neuron) of relu(theta - count)^2
    for b in range(8):
        for i in range(2):
            ref += max(0.1 - s[:, b, i].sum().item(), 0.0) ** 2
    ref /= 8 * 2
    assert ref == pytest.approx(7 * 0.01 / 16)
    assert lower_rate_penalty(s, 0.1).item() == pytest.approx(ref, abs=1e-15)
    leaf = s.clone().requires_grad_()
    lower_rate_penalty(leaf, 0.1).backward()  # pushes neuron 0 up on the 7 samples where it is silent
    expected = torch.zeros_like(s)
    expected[:, [b for b in range(8) if b != 5], 0] = -2 * 0.1 / 16
    torch.testing.assert_close(leaf.grad, expected)


def test_lower_rate_rejects_unknown_form():
    with pytest.raises(ValueError, match="form must be one of"):
        lower_rate_penalty(hand_spikes(), 1.0, form="mean")
    with pytest.raises(ValueError, match="form must be one of"):
        LowerRate(1.0, theta=1.0, form="batch")


def test_spike_count_known_values():
    s = hand_spikes()
    assert spike_count_penalty(s, p=1).item() == pytest.approx((5 + 2) / 2)  # per-sample totals 5, 2
    assert spike_count_penalty(s, p=2).item() == pytest.approx((4 + 0 + 9 + 1 + 0 + 1) / 2)
    assert spike_count_penalty(torch.zeros(4, 2, 3), p=1).item() == 0.0


def test_voltage_range_known_values():
    # [T=2, B=1, N=3]; range [-1, 1]: -2 -> 1^2, 1.5 -> 0.5^2, 3 -> 2^2; 0.5, 1 and -1 are inside
    v = torch.tensor([[[-2.0, 0.5, 1.5]], [[1.0, -1.0, 3.0]]], dtype=torch.float64)
    assert voltage_range_penalty(v).item() == pytest.approx((1 + 0.25 + 4) / 6)
    # range [-3, 0.5]: only 1.5 -> 1, 1 -> 0.25, 3 -> 6.25 exceed it
    assert voltage_range_penalty(v, low=-3.0, high=0.5).item() == pytest.approx((1 + 0.25 + 6.25) / 6)
    assert voltage_range_penalty(v, low=-2.0, high=3.0).item() == 0.0  # within bounds


def test_conv_shaped_spikes_flatten_neuron_dims():
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(5, 3, 2, 4, 4, generator=g) < 0.3).double()  # [T, B, C, H, W]
    flat = s.flatten(2)  # [T, B, 32]
    for fn, kw in [(upper_rate_penalty, dict(theta=0.5)), (lower_rate_penalty, dict(theta=2.0)),
                   (spike_count_penalty, dict(p=2))]:
        assert fn(s, **kw).item() == pytest.approx(fn(flat, **kw).item())
    # slow loop reference of the upper bound on the same tensor
    ref = sum(max(s[:, b].sum().item() / 32 - 0.5, 0.0) ** 2 for b in range(3)) / 3
    assert upper_rate_penalty(s, 0.5).item() == pytest.approx(ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_penalties_are_scalars_in_input_dtype(dtype):
    s = hand_spikes(dtype)
    for out in (upper_rate_penalty(s, 1.0), lower_rate_penalty(s, 1.0), spike_count_penalty(s),
                voltage_range_penalty(s * 3)):
        assert out.dim() == 0 and out.dtype == dtype


# ----------------------------------------------------------------------------- gradients
def test_gradients_wrt_spikes_match_hand_derivation():
    s = hand_spikes().requires_grad_()
    # upper, p=2, theta=1: d/ds[t,b,i] = 1/B * 2 relu(pop_b - 1) * 1/M = 1/2 * 2 * 2/3 * 1/3 = 2/9 for b=0
    upper_rate_penalty(s, 1.0, 2).backward()
    expected = torch.zeros(3, 2, 3, dtype=torch.float64)
    expected[:, 0] = 2 / 9
    torch.testing.assert_close(s.grad, expected)
    # lower, p=2, theta=1: d/ds[t,b,i] = -1/(B M) * 2 relu(1 - zeta[b, i]) = -1/3 for the silent neuron 1
    s.grad = None
    lower_rate_penalty(s, 1.0, 2).backward()
    expected = torch.zeros(3, 2, 3, dtype=torch.float64)
    expected[:, :, 1] = -1 / 3
    torch.testing.assert_close(s.grad, expected)
    # L1: d/ds = 1/B everywhere, silent neurons included; L2: 2 zeta[b, i] / B = zeta[b, i]
    s.grad = None
    spike_count_penalty(s, 1).backward()
    torch.testing.assert_close(s.grad, torch.full((3, 2, 3), 0.5, dtype=torch.float64))
    s.grad = None
    spike_count_penalty(s, 2).backward()
    torch.testing.assert_close(s.grad, spike_counts(s.detach()).expand(3, 2, 3))


def test_voltage_gradient_matches_hand_derivation():
    v = torch.tensor([[[-2.0, 0.5, 1.5]], [[1.0, -1.0, 3.0]]], dtype=torch.float64, requires_grad=True)
    voltage_range_penalty(v).backward()
    # d/dv = (2 relu(v - 1) - 2 relu(-1 - v)) / 6
    expected = torch.tensor([[[-2 / 6, 0.0, 1 / 6]], [[0.0, 0.0, 4 / 6]]], dtype=torch.float64)
    torch.testing.assert_close(v.grad, expected)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        return g


def _spike_fn():
    """(spike function, its surrogate derivative): the library's fast sigmoid if present."""
    try:
        from spikegrad.surrogates import make_surrogate
    except ImportError:
        return _StraightThrough.apply, lambda x: torch.ones_like(x)
    sur = make_surrogate("fast_sigmoid")
    return sur, lambda x: type(sur).grad(x, sur.slope.to(x.dtype))


def _integrate(x, T, spike):
    """Tiny differentiable neuron: v_t = (t + 1) x (constant current, no leak/reset); spikes = H(v_t - 1)."""
    t = torch.arange(1, T + 1, dtype=x.dtype).view(T, 1, 1)
    v = t * x  # [T, B, N]
    return spike(v - 1), v


@pytest.mark.parametrize("which", ["upper", "lower", "count"])
def test_gradients_flow_to_input_current_through_surrogate(which):
    spike, sgrad = _spike_fn()
    T = 4
    # sample 0 is strongly driven (fires from t=0), sample 1 weakly (fires late or never)
    x = torch.tensor([[1.5, 0.6, 0.1], [0.3, 0.05, 0.2]], dtype=torch.float64, requires_grad=True)
    s, v = _integrate(x, T, spike)
    penalty = {"upper": lambda: upper_rate_penalty(s, 1.0, 2), "lower": lambda: lower_rate_penalty(s, 1.0, 2),
               "count": lambda: spike_count_penalty(s, 1)}[which]()
    assert penalty.item() > 0
    penalty.backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()
    # chain rule by hand: dP/dx[b,i] = sum_t dP/ds[t,b,i] * surrogate'(v - 1) * (t + 1)
    s_leaf = s.detach().requires_grad_()
    {"upper": lambda: upper_rate_penalty(s_leaf, 1.0, 2), "lower": lambda: lower_rate_penalty(s_leaf, 1.0, 2),
     "count": lambda: spike_count_penalty(s_leaf, 1)}[which]().backward()
    t = torch.arange(1, T + 1, dtype=x.dtype).view(T, 1, 1)
    expected = (s_leaf.grad * sgrad(v.detach() - 1) * t).sum(0)
    torch.testing.assert_close(x.grad, expected)
    if which == "lower":
        assert (x.grad <= 0).all()  # more current -> more spikes -> smaller anti-silence penalty
    else:
        assert (x.grad >= 0).all()  # more current -> more spikes -> larger activity penalty


def test_gradient_through_library_neuron_if_available():
    neurons = pytest.importorskip("spikegrad.neurons")
    torch.manual_seed(0)
    lif = neurons.LIF(tau_mem=10.0, tau_syn=5.0)
    w = torch.randn(6, 4, dtype=torch.float32, requires_grad=True)
    x = torch.rand(8, 3, 6)  # [T, B, 6]
    spikes, _ = lif(x @ w)
    (UpperRate(1.0, theta=0.0)(spikes=spikes) + SpikeCount(1.0, p=2)(spikes=spikes)).backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- classes
def test_classes_weight_times_penalty_and_uniform_call():
    s, v = hand_spikes(), 3 * hand_spikes() - 1
    regs = [UpperRate(0.5, theta=1.0), LowerRate(2.0, theta=2.0, p=1), SpikeCount(0.1, p=2),
            VoltageRange(3.0, low=-0.5, high=1.5)]
    want = [0.5 * upper_rate_penalty(s, 1.0), 2.0 * lower_rate_penalty(s, 2.0, 1), 0.1 * spike_count_penalty(s, 2),
            3.0 * voltage_range_penalty(v, -0.5, 1.5)]
    for reg, w in zip(regs, want):
        assert reg(spikes=s, v=v).item() == pytest.approx(w.item())
    # hand values: 0.5 * 2/9, 2 * 6/6, 0.1 * 7.5
    assert regs[0](spikes=s).item() == pytest.approx(1 / 9)
    assert regs[1](spikes=s).item() == pytest.approx(2.0)
    assert LowerRate(2.0, theta=2.0, p=1, form="batch_mean")(spikes=s).item() == pytest.approx(5 / 3)
    assert regs[2](spikes=s).item() == pytest.approx(0.75)
    # v = 3 s - 1 takes values -1 (below -0.5 by 0.5) and 2 (above 1.5 by 0.5): every element costs 0.25
    assert regs[3](v=v).item() == pytest.approx(3.0 * 0.25)


def test_classes_sum_over_layers():
    a, b = hand_spikes(), hand_spikes()[:, :, :2]
    reg = SpikeCount(2.0, p=1)
    assert reg(spikes=[a, b]).item() == pytest.approx(2.0 * (3.5 + 1.5))  # layer b: totals 2, 1
    assert VoltageRange(1.0)(v=(a * 3, a * 3)).item() == pytest.approx(2 * voltage_range_penalty(a * 3).item())


def test_classes_demand_their_recording_and_pickle():
    with pytest.raises(ValueError, match="UpperRate needs the recorded spikes"):
        UpperRate(1.0, theta=1.0)(v=torch.zeros(2, 1, 1))
    with pytest.raises(ValueError, match="VoltageRange needs the recorded v"):
        VoltageRange(1.0)(spikes=hand_spikes())
    with pytest.raises(ValueError, match="empty sequence"):
        SpikeCount(1.0)(spikes=[])
    reg = LowerRate(0.3, theta=0.2, p=3)
    for clone in (pickle.loads(pickle.dumps(reg)), copy.deepcopy(reg)):
        assert repr(clone) == repr(reg) == "LowerRate(weight=0.3, theta=0.2, p=3.0, form='per_sample')"
        assert clone(spikes=hand_spikes()).item() == reg(spikes=hand_spikes()).item()


# ----------------------------------------------------------------------------- validation
def test_bad_arguments_rejected():
    s = hand_spikes()
    for p in (0.5, 0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match="p must be a finite number >= 1"):
            upper_rate_penalty(s, 1.0, p)
        with pytest.raises(ValueError, match="p must be"):
            SpikeCount(1.0, p=p)
    for theta in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="theta must be a finite number >= 0"):
            lower_rate_penalty(s, theta)
        with pytest.raises(ValueError, match="theta"):
            UpperRate(1.0, theta=theta)
    for w in (-1.0, math.nan):
        with pytest.raises(ValueError, match="weight must be"):
            UpperRate(w, theta=1.0)
    with pytest.raises(ValueError, match="need low < high"):
        voltage_range_penalty(s, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="need low < high"):
        VoltageRange(1.0, low=2.0, high=0.0)


@pytest.mark.parametrize("fn", [spike_counts, lambda s: upper_rate_penalty(s, 1.0),
                                lambda s: lower_rate_penalty(s, 1.0), spike_count_penalty])
def test_bad_spike_tensors_rejected(fn):
    with pytest.raises(ValueError, match=r"spikes must be a non-empty time-first tensor of shape \[T, B, N...\]"):
        fn(torch.zeros(4, 3))  # [T, B] without a neuron dim
    with pytest.raises(ValueError, match="spikes must be a non-empty"):
        fn(torch.zeros(0, 2, 3))
    with pytest.raises(TypeError, match=r"spikes must be a floating-point tensor.*\.to\(torch.float32\)"):
        fn(torch.zeros(4, 2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="spikes must be a tensor"):
        fn([[[0.0]]])


def test_bad_voltage_tensor_rejected():
    with pytest.raises(ValueError, match=r"v must be a non-empty time-first tensor of shape \[T, B, ...\]"):
        voltage_range_penalty(torch.zeros(5))
    with pytest.raises(TypeError, match="v must be a floating-point tensor"):
        voltage_range_penalty(torch.zeros(2, 2, dtype=torch.int64))
