"""The event-driven C kernels (spikegrad.kernels.events) against slow references (tests/event_order.py and below)."""

import pytest
import torch
import torch.nn.functional as F

from spikegrad.conversion import spike_max_pool2d
from spikegrad.functional import LIFState
from spikegrad.kernels import events
from spikegrad.neurons import IF
from event_order import conv_in_order, linear_in_order

pytestmark = pytest.mark.skipif(not events.available(), reason="needs the C kernels (a C compiler)")


def sparse(shape, rate, dtype, binary, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=g) < rate).to(dtype)
    return x if binary else x * (torch.rand(shape, generator=g, dtype=dtype) * 2 - 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("K,N", [(5, 10), (64, 64), (130, 70), (100, 200)])
@pytest.mark.parametrize("vectors,group", [(None, None), (1, 1), (2, 7), (4, 32), (4, 300)])  # None: the caches'
def test_event_linear_sums_in_order_bit_for_bit(dtype, binary, K, N, vectors, group):
    x = sparse((45, K), 0.2, dtype, binary)  # 45 rows: whole groups and a partial one
    x[3] = 0                                  # a row without events: the bias
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(N, K, generator=g, dtype=dtype), torch.randn(N, generator=g, dtype=dtype)
    block = vectors and vectors * events.VECTOR_BYTES // w.element_size()
    table = events.linear_table(w, b, block)
    assert table[0].shape[1:] == (K, block or table[0].shape[2]) and table[0].shape[0] * table[0].shape[2] >= N
    y = events.event_linear(x, table, N, binary, group)
    assert torch.equal(y, linear_in_order(x, w, b))
    assert torch.equal(y[3], b)
    torch.testing.assert_close(y, F.linear(x, w, b))
    y0 = events.event_linear(x, events.linear_table(w, None, block), N, binary, group)
    assert torch.equal(y0, linear_in_order(x, w, torch.zeros_like(b)))


def test_event_linear_refuses_a_table_of_other_weights():
    w = torch.randn(20, 8)
    with pytest.raises(ValueError, match="make them with linear_table"):
        events.event_linear(torch.rand(3, 9), events.linear_table(w, None), 20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("C,N,conf", [(3, 5, {}), (70, 64, {}), (4, 70, {"stride": 2, "padding": 1}),
                                      (6, 17, {"stride": (2, 1), "padding": (0, 2), "dilation": (1, 2)})])
def test_event_conv2d_sums_in_order_bit_for_bit(dtype, binary, C, N, conf):
    x = sparse((7, C, 9, 8), 0.15, dtype, binary).contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(N, C, 3, 3, generator=g, dtype=dtype), torch.randn(N, generator=g, dtype=dtype)
    stride, padding, dilation, out_hw = events.conv_geometry(conf, (9, 8), (3, 3))
    y = events.event_conv2d(x, events.conv2d_table(w, b), N, (3, 3), stride, padding, dilation, binary)
    ref = conv_in_order(x, w, b, stride, padding, dilation)
    assert y.shape == (7, N, *out_hw) and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, ref)
    torch.testing.assert_close(y, F.conv2d(x, w, b, stride, padding, dilation))


def test_conv_geometry_refuses_what_the_kernel_cannot_run():
    assert events.conv_geometry({"groups": 2}, (8, 8), (3, 3)) is None
    assert events.conv_geometry({"padding": "same"}, (8, 8), (3, 3)) is None
    assert events.conv_geometry({"stride": 2, "padding": 1, "dilation": 1}, (8, 8), (3, 3)) == \
        ((2, 2), (1, 1), (1, 1), (4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("held", [True, False])
@pytest.mark.parametrize("kernel,stride,hw", [((2, 2), (2, 2), (8, 8)), ((3, 3), (2, 2), (9, 7)),
                                              ((2, 3), (1, 2), (5, 8)), ((2, 2), (3, 2), (10, 8))])
@pytest.mark.parametrize("band", [None, 1, 2])  # output rows per band (None: the caches'), where stride >= kernel
def test_if_maxpool_equals_the_IF_layer_and_spike_max_pool(dtype, reset, held, kernel, stride, hw, band):
    B, C, K = 3, 5, 9
    g = torch.Generator().manual_seed(3)
    x = (torch.rand((1 if held else K) * B, C, *hw, generator=g, dtype=dtype) * 0.9 - 0.1)
    x = x.contiguous(memory_format=torch.channels_last)
    layer = IF(v_th=0.7, reset=reset, v_reset=-0.2, backend="torch")
    # the reference: the IF layer over the K steps, then spike_max_pool2d step by step
    xs = x.view(1, B, C, *hw).expand(K, -1, -1, -1, -1) if held else x.view(K, B, C, *hw)
    v0 = torch.rand((B, C, *hw), generator=g, dtype=dtype) * 0.5
    count0 = torch.randint(0, 3, (B, C, *hw), generator=g).to(dtype)
    with torch.no_grad():
        spikes, st = layer(xs, LIFState(v0, torch.zeros_like(v0)))
    counts = count0 + spikes.cumsum(0)
    want = torch.stack([spike_max_pool2d(spikes[t], counts[t], kernel, stride) for t in range(K)])

    def cl(t):
        return t.clone().contiguous(memory_format=torch.channels_last)
    v, count, s = cl(v0), cl(count0), cl(torch.full_like(v0, 7.0))
    th, v_reset = float(layer.v_th), float(layer.v_reset)  # the layer's (float32) constants
    pooled = events.if_maxpool(x, v, count, s, K, th, reset, v_reset, kernel, stride, band)
    assert pooled.shape == (K * B, *want.shape[2:]) and bool(want.sum() > 0)
    assert torch.equal(pooled.view_as(want), want)
    assert torch.equal(v, st.v) and torch.equal(count, counts[-1]) and torch.equal(s, spikes[-1])


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and f" {flag} " in f"{line.rstrip()} " for line in f)
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("flags", [("-mavx2",), ()])  # the AVX2 kernels, the SSE2 (or the machine's baseline) ones
def test_every_vector_width_sums_in_order_bit_for_bit(flags, monkeypatch, tmp_path):
    # a library built for one vector width (no run-time choice): the same bits as the slow references
    import spikegrad.kernels.native as native

    if flags and not (_cpu_has("avx2") and __import__("platform").machine() == "x86_64"):
        pytest.skip("needs an x86-64 CPU with AVX2")
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "OPENMP", ("-fopenmp", "-DSPIKEGRAD_NO_CLONES", *flags))
    assert native.available() and native.load().spikegrad_openmp() == 1  # built with these flags
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(5)
        w, b = torch.randn(70, 130, generator=g, dtype=dtype), torch.randn(70, generator=g, dtype=dtype)
        for binary in (True, False):
            x = sparse((45, 130), 0.2, dtype, binary)
            for block in (None, 64 // w.element_size(), 256 // w.element_size()):
                y = events.event_linear(x, events.linear_table(w, b, block), 70, binary, group=7)
                assert torch.equal(y, linear_in_order(x, w, b))
            xc = sparse((3, 6, 7, 8), 0.15, dtype, binary).contiguous(memory_format=torch.channels_last)
            wc = torch.randn(70, 6, 3, 3, generator=g, dtype=dtype)
            y = events.event_conv2d(xc, events.conv2d_table(wc, b), 70, (3, 3), (1, 1), (1, 1), (1, 1), binary)
            assert torch.equal(y, conv_in_order(xc, wc, b, 1, 1, 1))


def test_if_maxpool_refuses_bad_state_and_input():
    v = torch.zeros(2, 3, 4, 4)  # contiguous, not channels-last
    cl = torch.zeros(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="channels-last"):
        events.if_maxpool(cl, v, cl.clone(), cl.clone(), 2, 1.0, "subtract", 0.0, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="expected 4 x 2"):
        events.if_maxpool(torch.zeros(3, 3, 4, 4), cl, cl.clone(), cl.clone(), 4, 1.0, "subtract", 0.0, (2, 2), (2, 2))


# ------------------------------------------------------------------------------ SpikingMLP inference
import functools  # noqa: E402

from spikegrad.encoding import LatencyEncoder, latency_encode  # noqa: E402
from spikegrad.functional import LIParams, LIState, li_step, lif_step  # noqa: E402
from spikegrad.models import SpikingMLP  # noqa: E402
from spikegrad.neurons import LI, LIF, BSS2LIF  # noqa: E402


def mlp(seed=0, bias=True, dtype=torch.float32):
    torch.manual_seed(seed)
    hidden = [functools.partial(LIF, tau_mem=torch.linspace(4.0, 12.0, 20), tau_syn=3.0, reset="subtract"),
              functools.partial(IF, v_th=0.8, reset="zero", v_reset=-0.1)]
    it = iter(hidden)
    m = SpikingMLP([30, 20, 16, 5], neuron=lambda: next(it)(), readout=functools.partial(LI, tau_mem=6.0, tau_syn=2.0),
                   bias=bias, weight_gain=6.0, readout_gain=1.0, record_v=False, sparse_input=True)
    return m.to(dtype).eval()


def mlp_in_order(model, x, states=None):
    """A slow per-step reference of the event-driven MLP: per layer 0 plus x_k * w[:, k] for the
    non-zero inputs in increasing k, then the bias; the neurons' own step functions."""
    T, B = x.shape[:2]
    layers = [m.module for m in model.layers]
    st = list(states) if states is not None else [None] * len(layers)
    spikes, readout = [[] for _ in layers[:-1]], []
    for t in range(T):
        h = x[t]
        for k, (lin, n) in enumerate(zip(layers, model.neurons)):
            cur = torch.zeros(B, lin.out_features, dtype=x.dtype)
            for q in range(h.shape[1]):
                if bool((h[:, q] != 0).any()):
                    cur = cur + torch.where((h[:, q] != 0)[:, None], h[:, q:q + 1] * lin.weight[:, q], 0.0)
            if lin.bias is not None:
                cur = cur + lin.bias
            p = n.params(x.dtype)
            if k == len(layers) - 1:
                s0 = st[k] or LIState(torch.zeros_like(cur), torch.zeros_like(cur))
                v, st[k] = li_step(cur, s0, LIParams(p.decay_mem, p.decay_syn))
                readout.append(v)
            else:
                s0 = st[k] or LIFState(torch.zeros_like(cur), torch.zeros_like(cur))
                h, st[k] = lif_step(cur, s0, p, n.surrogate)
                spikes[k].append(h)
    return torch.stack(readout), [torch.stack(s) for s in spikes], st


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_event_path_equals_a_per_step_reference_bit_for_bit(dtype, bias):
    model = mlp(bias=bias, dtype=dtype)
    x = sparse((12, 7, 30), 0.3, dtype, binary=True)
    with torch.no_grad():
        out = model(x)
        ref, spikes, states = mlp_in_order(model, x)
    assert sum(float(s.sum()) for s in spikes) > 0 and out.v == ()
    assert torch.equal(out.readout, ref)
    assert all(torch.equal(a, b) for a, b in zip(out.spikes, spikes))
    assert all(torch.equal(a.v, b.v) and torch.equal(a.i, b.i) for a, b in zip(out.state, states))
    model.inference = "layers"  # the layer-by-layer path agrees up to the order of the dense sums
    with torch.no_grad():
        layers = model(x)
    torch.testing.assert_close(out.readout, layers.readout)
    assert torch.equal(out.spikes[0], layers.spikes[0])  # the first layer sums as sparse_linear does


def test_mlp_event_path_continues_from_state_and_takes_spike_times():
    model = mlp()
    g = torch.Generator().manual_seed(4)
    images = torch.rand(9, 30, generator=g)
    enc = LatencyEncoder(12, "log", 0.2, 4.0)
    x = enc(images)
    times = enc.times(images)
    assert torch.equal(times.dense(), x) and torch.equal(x, latency_encode(images, 12, "log", 0.2, 4.0))
    with torch.no_grad():
        whole = model(x)
        first = model(x[:5])
        rest = model(x[5:], first.state)
        from_times = model(times)
        bare = model(times, record_spikes=False)
    assert torch.equal(torch.cat([first.readout, rest.readout]), whole.readout)
    assert torch.equal(torch.cat([first.spikes[1], rest.spikes[1]]), whole.spikes[1])
    assert torch.equal(from_times.readout, whole.readout) and torch.equal(from_times.spikes[0], whole.spikes[0])
    assert bare.spikes == () and torch.equal(bare.readout, whole.readout)
    with pytest.raises(ValueError, match=r"spike times \[B, 30\]"):
        model(enc.times(torch.rand(3, 31)))


def test_mlp_runs_layer_by_layer_where_the_kernel_does_not_apply(monkeypatch):
    import spikegrad.models as models

    calls = []
    real = models.events.mlp_forward
    monkeypatch.setattr(models.events, "mlp_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = sparse((6, 3, 30), 0.3, torch.float32, binary=True)
    model = mlp()
    with torch.no_grad():
        model(x)
    assert calls == [1]
    out = model(x)  # gradients enabled: the layer path (autograd)
    assert out.readout.requires_grad and calls == [1]
    model.record_v = True
    with torch.no_grad():
        assert len(model(x).v) == 2 and calls == [1]
    for make in (functools.partial(LIF, backend="native"), BSS2LIF, functools.partial(LIF, refractory=2)):
        other = SpikingMLP([30, 8, 4], neuron=make, record_v=False).eval()
        with torch.no_grad():
            other(x)
        assert calls == [1]
    with pytest.raises(ValueError, match="inference must be one of"):
        SpikingMLP([30, 8, 4], inference="fast")
