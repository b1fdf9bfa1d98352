import copy
import math
import pickle

import pytest
import torch

from spikegrad.encoding import (
    CurrentEncoder,
    LatencyEncoder,
    RateEncoder,
    current_encode,
    latency_encode,
    latency_times,
    rate_encode,
)

INF = math.inf


def _ref_time(x: float, T: int, method: str, th: float, tau: float, normalize: bool, clip: bool) -> float:
    """Slow scalar reference of the documented closed form (Python floats, builtin round)."""
    if x <= th:
        return INF
    if method == "log":
        t = tau * math.log(x / (x - th))
        if normalize:
            t -= tau * math.log(1 / (1 - th))
    else:
        t = (T - 1) * (1 - (x - th) / (1 - th))
    k = round(t)  # half to even, like torch.round
    if k > T - 1:
        return float(T - 1) if clip else INF
    return float(k)


# ----------------------------------------------------------------------------- latency: closed form
# Hand-worked: T = 16, threshold 0.2, tau 5.
#   normalize=True:  t = 5 ln(0.8 x / (x - 0.2)):  x=1 -> 0, 0.8 -> 0.32, 0.5 -> 1.44, 0.25 -> 6.93,
#                    0.21 -> 14.11, 0.201 -> 25.4 (> 15: silent, or 15 when clipped)
#   normalize=False: t = 5 ln(x / (x - 0.2)):      x=1 -> 1.12, 0.8 -> 1.44, 0.5 -> 2.55, 0.25 -> 8.05,
#                    0.21 -> 15.22, 0.201 -> 26.5
X_HAND = [0.0, 0.1, 0.2, 0.201, 0.21, 0.25, 0.5, 0.8, 1.0]
HAND = {
    (True, False): [INF, INF, INF, INF, 14, 7, 1, 0, 0],
    (True, True): [INF, INF, INF, 15, 14, 7, 1, 0, 0],
    (False, False): [INF, INF, INF, INF, 15, 8, 3, 1, 1],
    (False, True): [INF, INF, INF, 15, 15, 8, 3, 1, 1],
}


@pytest.mark.parametrize("normalize,clip", list(HAND))
def test_log_latency_times_hand_worked(normalize, clip):
    x = torch.tensor([X_HAND])  # [1, 9]
    times = latency_times(x, 16, "log", threshold=0.2, tau=5.0, normalize=normalize, clip=clip)
    assert times.tolist() == [HAND[(normalize, clip)]]
    ref = [_ref_time(v, 16, "log", 0.2, 5.0, normalize, clip) for v in X_HAND]
    assert times[0].tolist() == ref


def test_linear_latency_times_hand_worked():
    # T = 11, threshold 0.2: t = 10 (1 - (x - 0.2) / 0.8) = 12.5 (1 - x)
    # x = 1 -> 0, 0.9 -> 1.25, 0.6 -> 5, 0.5 -> 6.25, 0.3 -> 8.75, 0.21 -> 9.875; x <= 0.2 silent
    x = torch.tensor([[1.0, 0.9, 0.6, 0.5, 0.3, 0.21, 0.2, 0.05]])
    times = latency_times(x, 11, "linear", threshold=0.2)
    assert times.tolist() == [[0, 1, 5, 6, 9, 10, INF, INF]]
    # tau / normalize do not affect the linear code
    assert torch.equal(times, latency_times(x, 11, "linear", threshold=0.2, tau=1.0, normalize=False))


@pytest.mark.parametrize("method", ["log", "linear"])
@pytest.mark.parametrize("clip", [False, True])
def test_latency_matches_scalar_reference_on_random_image(method, clip):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 6, 6, generator=g, dtype=torch.float64)
    T, th, tau = 12, 0.3, 4.0
    times = latency_times(x, T, method, threshold=th, tau=tau, clip=clip)
    ref = torch.tensor([_ref_time(v, T, method, th, tau, True, clip) for v in x.flatten().tolist()],
                       dtype=torch.float64).view_as(x)
    assert torch.equal(times, ref)
    assert times.isinf().any() and times.isfinite().any()  # the image exercises both branches


@pytest.mark.parametrize("method", ["log", "linear"])
def test_latency_encode_is_one_hot_of_times(method):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 16, 16, generator=g)
    T = 10
    spikes = latency_encode(x, T, method)
    times = latency_times(x, T, method)
    assert spikes.shape == (T, 4, 1, 16, 16)
    assert spikes.dtype == x.dtype
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    count = spikes.sum(0)
    assert count.max() <= 1  # at most one spike per pixel
    assert torch.equal(count.bool(), times.isfinite())
    first = spikes.argmax(0).to(times.dtype)
    assert torch.equal(first[times.isfinite()], times[times.isfinite()])
    assert not spikes[:, x <= 0.2].any()  # dark pixels are silent


@pytest.mark.parametrize("method", ["log", "linear"])
def test_latency_brighter_fires_earlier(method):
    x = torch.linspace(0, 1, 201, dtype=torch.float64).unsqueeze(0)  # [1, 201], increasing
    times = latency_times(x, 30, method, threshold=0.2, tau=5.0)[0]
    finite = times[times.isfinite()]
    assert (finite[1:] <= finite[:-1]).all()  # non-increasing in brightness
    assert finite[0] > finite[-1] == 0  # a real spread, and x = 1 fires at step 0
    first_lit = int(times.isfinite().nonzero()[0])
    assert (times[:first_lit] == INF).all() and (times[first_lit:].isfinite()).all()  # silent only when dim


def test_latency_single_step_window():
    x = torch.tensor([[1.0, 0.9, 0.3, 0.0]])
    assert latency_encode(x, 1, "linear", threshold=0.2).tolist() == [[[1.0, 1.0, 1.0, 0.0]]]
    assert latency_encode(x, 1, "log", threshold=0.2, tau=5.0).tolist() == [[[1.0, 1.0, 0.0, 0.0]]]


# ----------------------------------------------------------------------------- rate
def test_rate_mean_matches_target_within_5_sigma():
    levels = torch.tensor([0.0, 0.1, 0.35, 0.8, 1.0])
    x = levels.view(1, -1).expand(500, -1).contiguous()  # [500, 5]
    T, max_rate = 100, 0.6
    spikes = rate_encode(x, T, max_rate, generator=torch.Generator().manual_seed(3))
    assert spikes.shape == (T, 500, 5)
    n = T * 500
    p = levels.double() * max_rate
    rate = spikes.double().mean((0, 1))
    sigma = (p * (1 - p) / n).sqrt()
    assert ((rate - p).abs() <= 5 * sigma + 1e-12).all(), (rate, p)
    assert rate[0] == 0  # p = 0 never fires


def test_rate_max_rate_one_always_fires_at_x_one():
    x = torch.ones(2, 3)
    assert (rate_encode(x, 7, 1.0) == 1).all()
    assert (rate_encode(x, 7, 0.0) == 0).all()


def test_rate_same_seed_same_spikes_different_seed_different():
    x = torch.full((8, 1, 16, 16), 0.5)
    a = rate_encode(x, 20, generator=torch.Generator().manual_seed(7))
    b = rate_encode(x, 20, generator=torch.Generator().manual_seed(7))
    c = rate_encode(x, 20, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (20, 8, 1, 16, 16)


# ----------------------------------------------------------------------------- current
def test_current_encode_repeats_scaled_input():
    x = torch.tensor([[0.0, 0.25], [0.5, 1.0]])
    out = current_encode(x, 3, gain=2.0)
    assert out.shape == (3, 2, 2)
    assert out.tolist() == [[[0.0, 0.5], [1.0, 2.0]]] * 3
    out[0, 0, 0] = 9.0  # a real copy: writing one step leaves the others and x alone
    assert out[1, 0, 0] == 0 and x[0, 0] == 0


def test_current_encode_is_differentiable():
    x = torch.tensor([[0.2, 0.7]], requires_grad=True)
    current_encode(x, 4, gain=3.0).sum().backward()
    assert x.grad.tolist() == [[12.0, 12.0]]  # d/dx sum_t 3 x = 4 * 3


# ----------------------------------------------------------------------------- dtype
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_dtype_is_kept_and_values_binary(dtype):
    x = torch.tensor([[0.0, 0.3, 0.55, 1.0]], dtype=dtype)
    g = torch.Generator().manual_seed(0)
    for spikes in (latency_encode(x, 8, "log"), latency_encode(x, 8, "linear"), rate_encode(x, 8, generator=g)):
        assert spikes.dtype == dtype and spikes.shape == (8, 1, 4)
        assert ((spikes == 0) | (spikes == 1)).all()
    cur = current_encode(x, 8, gain=0.5)
    assert cur.dtype == dtype and torch.equal(cur[5], x * 0.5)


def test_bf16_latency_matches_float32_of_same_values():
    x = torch.tensor([[0.21, 0.25, 0.5, 0.8, 1.0]]).to(torch.bfloat16)
    for method in ("log", "linear"):
        assert torch.equal(latency_encode(x, 16, method).float(), latency_encode(x.float(), 16, method))


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", [torch.tensor([[1.5]]), torch.tensor([[-0.1]]), torch.tensor([[math.nan]])])
@pytest.mark.parametrize("enc", [latency_encode, rate_encode, current_encode])
def test_out_of_range_intensities_rejected(enc, bad):
    with pytest.raises(ValueError, match=r"x must .*\[0, 1\].*normalise"):
        enc(bad, 4)


@pytest.mark.parametrize("enc", [latency_encode, rate_encode, current_encode])
def test_non_float_x_rejected(enc):
    with pytest.raises(TypeError, match="x must be a floating-point tensor.*normalise"):
        enc(torch.tensor([[0, 255]], dtype=torch.uint8), 4)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        enc([[0.5]], 4)


@pytest.mark.parametrize("enc", [latency_encode, rate_encode, current_encode])
def test_bad_T_rejected(enc):
    x = torch.full((1, 2), 0.5)
    for T in (0, -3):
        with pytest.raises(ValueError, match="T .*positive int"):
            enc(x, T)
    for T in (2.5, True, "8"):
        with pytest.raises(TypeError, match="T .*positive int"):
            enc(x, T)


def test_bad_scalar_arguments_rejected():
    x = torch.full((1, 2), 0.5)
    for th in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\)"):
            latency_encode(x, 4, threshold=th)
    for tau in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="tau must be"):
            latency_encode(x, 4, tau=tau)
    with pytest.raises(ValueError, match="method must be one of"):
        latency_encode(x, 4, method="exp")
    for r in (1.5, -0.2):
        with pytest.raises(ValueError, match=r"max_rate must be a number in \[0, 1\]"):
            rate_encode(x, 4, max_rate=r)
    with pytest.raises(ValueError, match="gain must be a finite number"):
        current_encode(x, 4, gain=math.inf)
    with pytest.raises(ValueError, match="threshold"):
        LatencyEncoder(4, threshold=2.0)
    with pytest.raises(ValueError, match="max_rate"):
        RateEncoder(4, max_rate=2.0)
    with pytest.raises(ValueError, match="T "):
        CurrentEncoder(0)


# ----------------------------------------------------------------------------- modules
def test_modules_match_functional_and_keep_trailing_shape():
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    lat = LatencyEncoder(T=12, method="linear", threshold=0.1)
    assert torch.equal(lat(x), latency_encode(x, 12, "linear", threshold=0.1))
    rate = RateEncoder(T=12, max_rate=0.5)
    assert torch.equal(rate(x, generator=torch.Generator().manual_seed(4)),
                       rate_encode(x, 12, 0.5, generator=torch.Generator().manual_seed(4)))
    cur = CurrentEncoder(T=12, gain=2.0)
    assert torch.equal(cur(x), current_encode(x, 12, 2.0))
    for enc in (lat, rate, cur):
        assert enc(x).shape == (12, 5, 1, 16, 16)
        assert list(enc.parameters()) == [] and enc.state_dict() == {}
        clone = pickle.loads(pickle.dumps(enc))
        assert repr(clone) == repr(enc) == repr(copy.deepcopy(enc))


def test_floor_binning_and_the_normalising_shift_by_hand():
    from spikegrad.encoding import latency_times

    tau, th = 8.0, 0.2
    x = torch.tensor([0.5, 0.3, 1.0])
    t = tau * torch.log(x / (x - th))                       # unnormalised times: 4.09, 8.79, 1.79 steps
    got = latency_times(x, 32, tau=tau, threshold=th, normalize=False, binning="floor")
    assert got.tolist() == torch.floor(t).tolist() == [4.0, 8.0, 1.0]
    assert latency_times(x, 32, tau=tau, threshold=th, normalize=False).tolist() == [4.0, 9.0, 2.0]
    shifted = latency_times(x, 32, tau=tau, threshold=th, normalize=True, binning="floor")
    assert shifted.tolist() == torch.floor(t + tau * math.log(1 - th)).clamp_min(0).tolist() == [2.0, 7.0, 0.0]
    with pytest.raises(ValueError, match="binning must be one of"):
        latency_times(x, 32, binning="ceil")
