import copy
import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikegrad.conversion import (ConversionError, LeNet, SpikingNetwork, ann_to_snn, calibrate, conversion_analysis,
                                  convert, evaluate_ann, fold_batchnorm, forward_ann, gated_max_pool2d, if_step,
                                  normalize, percentile, run_ann, simulate, spike_max_pool2d, trace)
from spikegrad.conversion.graph import apply_stateless, eval_call, gained
from spikegrad.kernels.native import available as native_kernels
from event_order import conv_in_order, linear_in_order
from spikegrad.losses import CrossEntropy
from spikegrad.neurons import IF
from spikegrad.training import train_epoch

# random test networks have dead channels; test_dead_layer_warns checks the warning itself
pytestmark = pytest.mark.filterwarnings("ignore:normalize.*never had a positive activation")


# ------------------------------------------------------------------------------ helpers
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch-norm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(16, 5))


class Functional(nn.Module):
    """The same kind of network written with functional calls and x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 3, 3), nn.Conv2d(3, 4, 3), nn.Linear(16, 4)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = torch.relu(self.c2(x))
        x = x.view(x.size(0), -1)
        return F.log_softmax(self.fc(x), dim=1)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = self.stem(x)
        r = F.relu(self.bn1(self.c1(h)))
        h = F.relu(self.c2(r) + h)
        return self.head(torch.flatten(h, 1))


def relu_after_pool() -> nn.Module:
    """ReLU -> AvgPool -> ReLU: the second IF layer needs an input gain (the pool cannot absorb scales)."""
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 4))


def mlp(sizes=(12, 32, 24, 4), seed=0) -> nn.Module:
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


# ------------------------------------------------------------------------------ tracing
@pytest.mark.parametrize("make,shape", [(small_cnn, (7, 1, 10, 10)), (Functional, (7, 1, 10, 10)),
                                        (Residual, (7, 1, 8, 8)), (LeNet, (7, 28, 28))])
def test_fold_batchnorm_and_program_match_the_ann(make, shape):
    model = randomize_bn(make()).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        ref = model(x)
        folded = fold_batchnorm(model)
        assert (folded(x) - ref).abs().max() < 1e-5
        bns = [m for m in folded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert not any(isinstance(m, nn.BatchNorm2d) for m in bns)  # conv + bn2d always folds here
        program = trace(model)
        program.infer(x)
        out = run_ann(program, x)[program.out]
    if make is Functional:  # the trailing log-softmax is dropped (argmax-invariant)
        ref = model.fc(F.relu(model.c2(F.max_pool2d(F.relu(model.c1(x)), 2))).flatten(1)).detach()
    assert (out - ref).abs().max() < 1e-5


def test_the_ann_is_left_unchanged():
    model = randomize_bn(small_cnn()).train()
    before = copy.deepcopy(model.state_dict())
    snn = ann_to_snn(model, torch.rand(16, 1, 10, 10), percentile=99.0)
    assert isinstance(snn, SpikingNetwork)
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("model,needle,hint", [
    (nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(), nn.Linear(4, 2)), "'1' (LeakyReLU)", "nn.ReLU"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)),
     "'1' (AdaptiveAvgPool2d)", "nn.AvgPool2d"),
    (nn.Sequential(nn.Linear(4, 4), nn.Softmax(1), nn.Linear(4, 2)), "'1' (Softmax)", "final"),
])
def test_unsupported_layers_are_named(model, needle, hint):
    with pytest.raises(ConversionError) as e:
        calibrate(model, torch.rand(3, 1, 6, 6) if isinstance(model[0], nn.Conv2d) else torch.rand(3, 4))
    msg = str(e.value)
    assert needle in msg and hint in msg and "position 2 of" in msg


def test_unsupported_functions_are_named():
    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.sigmoid(x))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x * 2.0)

    with pytest.raises(ConversionError, match=r"function sigmoid.*position 1 of.*nn\.ReLU"):
        trace(Sig())
    with pytest.raises(ConversionError, match=r"function mul.*position 1 of"):
        calibrate(Scaled(), torch.rand(3, 4))


def test_empty_calibration_data_is_an_error():
    with pytest.raises(ValueError, match="no inputs"):
        calibrate(mlp(), torch.empty(0, 12))
    with pytest.raises(ValueError, match="no inputs"):
        calibrate(mlp(), [])


# ------------------------------------------------------------------------------ normalisation
def test_percentile_matches_numpy():
    g = torch.Generator().manual_seed(1)
    v = torch.relu(torch.randn(3, 1001, generator=g, dtype=torch.float64))
    for p in (50.0, 99.0, 99.9, 100.0):
        ours = percentile(v, p, ignore_zeros=True)
        ref = [np.percentile(row[row != 0].numpy(), p) for row in v]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)
        np.testing.assert_allclose(percentile(v, p, ignore_zeros=False).numpy(),
                                   np.percentile(v.numpy(), p, axis=1), rtol=1e-12)


@pytest.mark.parametrize("p", [99.9, 100.0])
@pytest.mark.parametrize("channelwise", [False, True])
def test_normalised_percentile_activation_is_one(p, channelwise):
    model = randomize_bn(small_cnn()).eval()
    x = torch.rand(64, 1, 10, 10)
    calib = calibrate(model, x)
    prog = normalize(calib, p, channelwise=channelwise)
    with torch.no_grad():
        vals = run_ann(prog, x)
        for i in prog.neurons:
            a = vals[i].transpose(0, 1).reshape(vals[i].shape[1], -1).numpy()  # [C, B * ...]
            rows = a if channelwise else a.reshape(1, -1)
            for row in rows:
                if (row != 0).any():
                    assert np.percentile(row[row != 0], p) == pytest.approx(1.0, rel=1e-5)
        # the output layer is scaled by one scalar: argmax unchanged
        lam = prog.lambdas[prog.out]
        assert lam.numel() == 1
        assert (forward_ann(prog, x) * lam - model(x)).abs().max() < 1e-4


def test_dead_layer_warns_and_gets_scale_one():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    calib = calibrate(model, torch.rand(8, 3))
    with pytest.warns(UserWarning, match="2 channel.*never had a positive activation"):
        prog = normalize(calib, channelwise=True)
    assert torch.equal(prog.lambdas[prog.neurons[0]], torch.ones(2))


@pytest.mark.parametrize("make,shape", [(Residual, (32, 1, 8, 8)), (relu_after_pool, (32, 1, 10, 10)),
                                        (Functional, (32, 1, 10, 10))])
@pytest.mark.parametrize("channelwise", [False, True])
def test_normalised_program_is_the_ann_up_to_the_output_scale(make, shape, channelwise):
    model = randomize_bn(make()).eval()
    x = torch.rand(shape)
    prog = normalize(calibrate(model, x), 99.0, channelwise=channelwise)
    with torch.no_grad():
        ref = run_ann(trace(model), x)
        out = forward_ann(prog, x) * prog.lambdas[prog.out]
        assert (out - ref[prog.out]).abs().max() < 1e-4
        for i in prog.neurons:  # every IF layer's target rate is its activation / lambda
            lam = prog.lambdas[i].reshape(-1, *[1] * (len(prog.shapes[i]) - 1))
            assert torch.allclose(run_ann(prog, x)[i] * lam, ref[i], atol=1e-4)


# ------------------------------------------------------------------------------ neurons and pooling
def test_if_step_matches_the_IF_neuron():
    x = torch.rand(30, 5, 7) * 1.5 - 0.2
    ref, _ = IF()(x)
    v = torch.zeros(5, 7)
    out = []
    for x_t in x:
        s, v = if_step(x_t, v)
        out.append(s)
    assert torch.equal(torch.stack(out), ref)


def slow_spike_max_pool(spikes_seq, k):
    """Reference: per window, the inputs with the largest count before the step; pass a spike if any spikes."""
    T, B, C, H, W = spikes_seq.shape
    before = torch.zeros(B, C, H, W)
    out = torch.zeros(T, B, C, H // k, W // k)
    for t in range(T):
        for b in range(B):
            for c in range(C):
                for i in range(H // k):
                    for j in range(W // k):
                        cnt = before[b, c, i * k:(i + 1) * k, j * k:(j + 1) * k].flatten()
                        spk = spikes_seq[t, b, c, i * k:(i + 1) * k, j * k:(j + 1) * k].flatten()
                        out[t, b, c, i, j] = float(spk[cnt == cnt.max()].max())
        before += spikes_seq[t]
    return out


def test_spike_max_pool_passes_the_most_active_input_by_hand():
    # one 2x2 window: A (top left) fires 5 of 6 steps, B only at t = 1 and t = 5, C at t = 0
    A = [1, 1, 1, 1, 1, 0]
    B = [0, 1, 0, 0, 0, 1]
    C = [1, 0, 0, 0, 0, 0]
    s = torch.tensor([[[[a, b], [c, 0]]] for a, b, c in zip(A, B, C)], dtype=torch.float32)[:, None]  # [T,1,1,2,2]
    count, out = torch.zeros_like(s[0]), []
    for s_t in s:
        count += s_t
        out.append(spike_max_pool2d(s_t, count, 2).flatten().item())
    assert out == [1, 1, 1, 1, 1, 0]  # B's spike at t = 5 is blocked: A is the most active


def test_spike_max_pool_matches_reference_and_keeps_the_max_count():
    g = torch.Generator().manual_seed(0)
    rates = torch.rand(2, 3, 4, 4, generator=g)
    spikes = (torch.rand(40, 2, 3, 4, 4, generator=g) < rates).float()
    count, out = torch.zeros_like(spikes[0]), []
    for s_t in spikes:
        count += s_t
        out.append(spike_max_pool2d(s_t, count, 2))
    out = torch.stack(out)
    assert torch.equal(out, slow_spike_max_pool(spikes, 2))
    # pooled count == largest input count in every window, at every step
    assert torch.equal(out.cumsum(0), F.max_pool2d(spikes.cumsum(0).flatten(0, 1), 2).view_as(out))


def test_gated_max_pool_passes_the_input_with_the_largest_rate():
    rate = torch.tensor([[[[1.0, 5.0], [3.0, 5.0]]]])
    x = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
    assert gated_max_pool2d(x, rate, 2).item() == 20.0  # ties: first in row-major order


# ------------------------------------------------------------------------------ simulation
def test_rates_converge_to_ann_activations_like_one_over_T():
    model = mlp().eval()
    x = torch.rand(64, 12)
    prog = normalize(calibrate(model, x), 100.0)  # max-norm: no saturation, every rate in [0, 1]
    snn = convert(prog)
    with torch.no_grad():
        target = [run_ann(prog, x)[i] for i in prog.neurons]
    err = []
    for T in (50, 200):
        counts = snn.run(x, T).spike_counts
        err.append(np.mean([float((c / T - a).abs().mean()) for c, a in zip(counts, target)]))
    assert err[1] < 0.01
    assert 2.5 < err[0] / err[1] < 6.5  # error ~ 1/T: 4x the steps, ~1/4 the error


def event_order(n, x: torch.Tensor) -> torch.Tensor:
    """Conv2d / Linear node ``n`` summed as the event-driven kernels document it (tests/event_order.py)."""
    w, b = n.params["weight"], n.params["bias"]
    if n.kind == "linear":
        return linear_in_order(x, w, b)
    return conv_in_order(x, w, b, n.conf["stride"], n.conf["padding"], n.conf["dilation"])


def reference_run(snn, x: torch.Tensor, T: int, reset: str, gate: str = "count",
                  event_nodes=()) -> tuple[torch.Tensor, list]:
    """A slow, obvious per-step simulation of a converted network (analog input): returns the
    membrane readout [T, B, C] and the spike counts of every IF layer. The nodes in
    ``event_nodes`` sum in the event-driven kernels' order (:func:`event_order`)."""
    nodes = snn.nodes()
    v, count, pool_sum, out, readout = {}, {}, {}, 0.0, []
    for t in range(1, T + 1):
        vals = [None] * len(nodes)
        for i, n in enumerate(nodes):
            if n.kind == "input":
                vals[i] = x
            elif n.kind == "call":
                vals[i] = eval_call(n, [t.contiguous() if isinstance(t, torch.Tensor) else t for t in vals])
            elif n.kind == "relu":
                cur = gained(n, vals)[0]
                v[i] = v.get(i, torch.zeros_like(cur)) + cur
                s = (v[i] > 1.0).to(x.dtype)
                v[i] = v[i] - s if reset == "subtract" else v[i] * (1 - s)
                count[i] = count.get(i, torch.zeros_like(s)) + s
                vals[i] = s
            elif n.kind == "maxpool":
                src, cur = n.inputs[0], gained(n, vals)[0]
                r = pool_sum.get(i, torch.zeros_like(cur))
                if gate == "fir":
                    key = pool_sum[i] = r + cur / t
                elif gate == "avg":
                    key = pool_sum[i] = r + (cur - r) / t
                elif gate == "exp":
                    key = pool_sum[i] = 1.005 * r + 0.995 * cur
                elif nodes[src].kind == "relu" and n.gains[0] is None:  # most spikes before this step; ties: a spike now
                    key = 2 * (count[src] - vals[src]) + vals[src]
                else:  # the largest summed input so far
                    pool_sum[i] = pool_sum.get(i, 0.0) + cur
                    key = pool_sum[i]
                _, idx = F.max_pool2d(key, **n.conf, return_indices=True)
                vals[i] = cur.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
            elif i in event_nodes:
                vals[i] = event_order(n, gained(n, vals)[0])
            else:
                vals[i] = apply_stateless(n, gained(n, vals), vals)
        o = vals[snn.out] if snn.readout_gain is None else vals[snn.out] * snn.readout_gain
        out = out + o
        readout.append(out)
    return torch.stack(readout), [count[i] for i in snn.neurons]


@pytest.mark.parametrize("make,shape", [(small_cnn, (6, 1, 10, 10)), (Residual, (6, 1, 8, 8)),
                                        (relu_after_pool, (6, 1, 10, 10)), (Functional, (6, 1, 10, 10))])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("chunk", [1 << 24, 6 * 300])  # all steps at once / a few steps per chunk
@pytest.mark.parametrize("synapses", ["dense", "auto", "event"])
def test_simulation_equals_a_per_step_reference(make, shape, reset, chunk, synapses, monkeypatch):
    import spikegrad.conversion.snn as snn_module

    monkeypatch.setattr(snn_module, "CHUNK_ELEMENTS", chunk)
    model = randomize_bn(make()).eval()
    x = torch.rand(shape)
    snn = ann_to_snn(model, x, reset=reset, synapses=synapses)
    assert all(isinstance(m, IF) for m in snn.if_layers) and len(snn.if_layers) == len(snn.neurons)
    plan = snn._event_plan(snn.nodes(), x)
    event_nodes = set(plan.tables)
    if synapses == "auto" and native_kernels():
        assert bool(plan.fused) == (make in (small_cnn, Functional))  # IF layers that feed only a max-pool
        nodes = snn.nodes()  # every Conv2d / Linear fed by spikes sums events

        def spikes(j):  # an IF layer, or max-pooling / reshaping of spikes
            n = nodes[j]
            return n.kind == "relu" or n.kind in ("maxpool", "call") and all(spikes(k) for k in n.inputs)
        spiking = {i for i, n in enumerate(nodes) if n.kind in ("conv", "linear") and spikes(n.inputs[0])
                   and n.gains[0] is None}
        assert spiking and event_nodes == spiking
    T = 23
    res = snn.run(x, T)
    with torch.no_grad():
        readout, counts = reference_run(snn, x, T, reset, event_nodes=event_nodes)
    assert sum(float(c.sum()) for c in counts) > 0
    for a, b in zip(res.spike_counts, counts):
        assert torch.equal(a, b)
    torch.testing.assert_close(res.readout, readout, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not native_kernels(), reason="needs the C kernels (a C compiler)")
def test_cache_sizes_change_the_schedule_not_the_result(monkeypatch):
    from spikegrad.conversion import executor
    from spikegrad.kernels import events
    from spikegrad.kernels.cpuinfo import ENV

    model = randomize_bn(LeNet(image_size=16, channels=(4, 8), kernel_size=3, hidden=40)).eval()
    x = torch.rand(5, 1, 16, 16)
    snn = ann_to_snn(model, x, synapses="event")
    runs, pieces = [], []
    for sizes in ("l2=1K,l3=1K", "l2=64M,l3=1G"):  # the smallest pieces of work, then the largest
        monkeypatch.setenv(ENV, sizes)
        pieces.append((events.linear_block(32, 40, 4), events.linear_group(32, 4), events.pool_band(14, 4, 2, 4),
                       executor.chunk_budget(4)))
        runs.append(snn.run(x, 37))
    # fc1 in blocks of 1 vector one row at a time / one block of 3 vectors, 256 rows at a time; the
    # fused first layer (14 x 14 x 4, 7 pooled rows) in bands of 1 row / whole images
    assert pieces[0] == (16, 1, 1, executor.MIN_CHUNK_BYTES // 4)
    assert pieces[1][:2] == (48, 256) and pieces[1][2] >= 7 and pieces[1][3] == executor.MAX_CHUNK_BYTES // 4
    assert torch.equal(runs[0].readout, runs[1].readout)
    assert all(torch.equal(a, b) for a, b in zip(runs[0].spike_counts, runs[1].spike_counts))
    assert sum(float(c.sum()) for c in runs[0].spike_counts) > 0


@pytest.mark.parametrize("gate", ["fir", "avg", "exp"])
def test_maxpool_gates_equal_a_per_step_reference(gate, monkeypatch):
    import spikegrad.conversion.snn as snn_module

    monkeypatch.setattr(snn_module, "CHUNK_ELEMENTS", 6 * 300)  # several chunks of a few steps
    model = randomize_bn(small_cnn()).eval()
    x = torch.rand(6, 1, 10, 10)
    snn = ann_to_snn(model, x, maxpool_gate=gate)
    res = snn.run(x, 31)
    with torch.no_grad():
        readout, counts = reference_run(snn, x, 31, "subtract", gate)
    for a, b in zip(res.spike_counts, counts):
        assert torch.equal(a, b)
    torch.testing.assert_close(res.readout, readout, rtol=1e-6, atol=1e-6)
    # the update rules by hand: input 1, 0, 1 from rest
    spikes = torch.tensor([1.0, 0.0, 1.0]).view(3, 1)
    want = {"fir": [1.0, 1.0, 1 + 1 / 3], "avg": [1.0, 0.5, 2 / 3],
            "exp": [0.995, 1.005 * 0.995, 1.005 * 1.005 * 0.995 + 0.995]}[gate]
    got = snn._rates(torch.zeros(1), spikes, torch.tensor(0))
    torch.testing.assert_close(got.flatten(), torch.tensor(want))


def test_softmax_clock_readout_by_hand_and_against_a_reference():
    model = mlp((6, 8, 3)).eval()
    x = torch.rand(5, 6)
    snn = ann_to_snn(model, x, readout="softmax_clock", softmax_clock_rate=1.0)
    # a tick every step: the output with the largest membrane fires, all membranes reset, so
    # each step's spike goes to the argmax of that step's output current
    res = snn.run(x, 4)
    counts = res.readout.floor()
    assert torch.equal(counts.sum(-1), torch.arange(1.0, 5.0)[:, None].expand(4, 5))
    snn = ann_to_snn(model, x, readout="softmax_clock", softmax_clock_rate=0.3)
    g = torch.Generator().manual_seed(5)
    got = snn.run(x, 40, generator=g).readout
    g = torch.Generator().manual_seed(5)
    ref, v, n = [], torch.zeros(5, 3), torch.zeros(5, 3)
    # the output current of every step, from the membrane readout (tested against a per-step reference)
    membrane = convert(normalize(calibrate(model, x), 99.9)).run(x, 40).readout
    current = torch.diff(membrane, dim=0, prepend=torch.zeros(1, 5, 3))
    for o in current:
        v = v + o
        p = torch.softmax(v, 1)
        tick = torch.rand(5, generator=g) < 0.3
        n = n + ((p == p.amax(1, keepdim=True)) & tick[:, None]).float()
        v = torch.where(tick[:, None], torch.zeros_like(v), v)
        ref.append(n + 0.5 * p)
    torch.testing.assert_close(got, torch.stack(ref), rtol=1e-5, atol=1e-5)
    assert 0 < float(got[-1].floor().sum()) < 5 * 40
    with pytest.raises(ValueError, match="softmax_clock_rate must be a probability"):
        ann_to_snn(model, x, readout="softmax_clock", softmax_clock_rate=0.0)
    with pytest.raises(ValueError, match="maxpool_gate must be one of"):
        ann_to_snn(model, x, maxpool_gate="median")
    with pytest.raises(ValueError, match="synapses must be one of"):
        ann_to_snn(model, x, synapses="sparse")


def test_forward_equals_the_fast_path_and_state_is_not_mutated():
    model = randomize_bn(small_cnn()).eval()
    x = torch.rand(8, 1, 10, 10)
    snn = ann_to_snn(model, x)
    fast = snn.run(x, 20)
    seq, state = snn(x.expand(20, *x.shape))
    assert torch.allclose(seq, fast.readout, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(state.count, fast.spike_counts))
    saved = [c.clone() for c in state.count]
    out_t, _ = snn.step(x, state)
    assert all(torch.equal(a, b) for a, b in zip(state.count, saved))
    assert out_t.shape == (8, 5)


def test_snn_predictions_match_the_ann_at_large_T():
    for make, shape in ((small_cnn, (64, 1, 10, 10)), (Residual, (64, 1, 8, 8)),
                        (relu_after_pool, (64, 1, 10, 10))):
        model = randomize_bn(make()).eval()
        x = torch.rand(shape)
        snn = ann_to_snn(model, x, percentile=100.0, channelwise=True)
        if make is not small_cnn:  # the residual add and the second ReLU need gains
            assert any("gain" in name for name, _ in snn.named_buffers()), make.__name__
        readout = snn.run(x, 300).readout
        agree = (readout[-1].argmax(-1) == model(x).argmax(-1)).float().mean()
        assert agree >= 0.9, make.__name__


def tiny_conv_net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))


def hand_fanout_conv(H=4, W=4, k=3, pad=1, cout=2):
    f = np.zeros((H, W))
    for i in range(H):  # output position (i, j) reads inputs i-1..i+1, j-1..j+1 (inside the image)
        for j in range(W):
            for di in range(-pad, k - pad):
                for dj in range(-pad, k - pad):
                    if 0 <= i + di < H and 0 <= j + dj < W:
                        f[i + di, j + dj] += cout
    return f


def test_operation_counts_match_a_hand_count():
    model = tiny_conv_net()
    x = torch.ones(1, 1, 4, 4)
    x[0, 0, 0, 0] = 0.0  # a zero pixel costs nothing
    snn = ann_to_snn(model, x, percentile=100.0)
    assert snn.macs == {"0": 2 * 16 * 9, "3": 32 * 3}  # ANN: out_numel * fan_in
    T = 12
    res = snn.run(x, T)
    f = hand_fanout_conv()
    assert f.sum() == 200  # 4 corners x 8 + 8 edges x 12 + 4 inner x 18
    expected_conv = np.zeros(T)
    expected_conv[0] = f.sum() - f[0, 0]  # constant analog input: computed (and counted) once
    np.testing.assert_allclose(res.synops[:, 0].numpy(), expected_conv)
    # the Linear layer: 3 operations per hidden spike, step by step (from the IF layer's counts)
    state, per_step = None, []
    for t in range(T):
        before = 0.0 if state is None else float(state.count[0].sum())
        _, state = snn.step(x, state)
        per_step.append(float(state.count[0].sum()) - before)
    np.testing.assert_allclose(res.synops[:, 1].numpy(), 3 * np.array(per_step))
    assert sum(per_step) > 0
    result = simulate(snn, [(x, torch.zeros(1, dtype=torch.long))], T)
    assert result.synops_per_input == pytest.approx(float(res.synops.sum()))
    assert result.ann_macs == 288 + 96


def test_poisson_input_reset_zero_and_spiking_softmax_run_reproducibly():
    model = randomize_bn(small_cnn()).eval()
    x = torch.rand(16, 1, 10, 10)
    prog = normalize(calibrate(model, x))
    for kw in ({"input_mode": "poisson"}, {"reset": "zero"}, {"readout": "spiking_softmax"}):
        snn = convert(prog, **kw)
        a = snn.run(x, 30, generator=torch.Generator().manual_seed(5))
        b = snn.run(x, 30, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a.readout, b.readout), kw
        assert a.readout.shape == (30, 16, 5)
    poisson = convert(prog, input_mode="poisson").run(x, 30, generator=torch.Generator().manual_seed(5))
    assert poisson.synops[1:, 0].sum() > 0  # input spikes drive the first layer at every step
    with pytest.raises(ValueError, match="input_mode"):
        convert(prog, input_mode="rate")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        convert(prog, input_mode="poisson").run(x * 2, 5)


def test_simulate_reports_accuracy_by_step_and_steps_within():
    model = randomize_bn(small_cnn()).eval()
    x = torch.rand(40, 1, 10, 10)
    y = model(x).argmax(-1)  # labels = ANN predictions: ANN accuracy is 1
    snn = ann_to_snn(model, x, percentile=100.0)
    data = [(x[:25], y[:25]), (x[25:], y[25:])]
    r = simulate(snn, data, 200, ann=model)
    assert r.ann_accuracy == 1.0 and r.n_inputs == 40
    assert r.accuracy_by_step.shape == (200,) and r.synops_by_step.shape == (200,)
    assert r.accuracy >= 0.9
    manual = (snn.run(x, 200).readout.argmax(-1) == y).float().mean(1)
    assert torch.allclose(r.accuracy_by_step, manual.double())
    t = r.steps_within(0.1)
    assert t is not None and r.accuracy_by_step[t - 1] >= 0.9 - 1e-9
    assert t == 1 or r.accuracy_by_step[t - 2] < 0.9
    assert set(r.firing_rates) == set(snn.layer_names) and all(0 <= v <= 1 for v in r.firing_rates.values())
    assert evaluate_ann(model, data) == 1.0


def test_conversion_analysis_reports_metrics_and_logs_to_tensorboard(tmp_path):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    model = randomize_bn(small_cnn()).train()
    x = torch.rand(60, 1, 10, 10)
    y = model.eval()(x).argmax(-1)
    model.train()
    loader = [(x[:30], y[:30]), (x[30:], y[30:])]
    writer = SummaryWriter(str(tmp_path / "tb"))
    m = conversion_analysis(model, loader, None, loader, "cpu", writer, tmp_path, T=40, calib_inputs=45,
                            progress=False)
    writer.close()
    json.dumps(m)  # goes into metrics.json
    assert m["ann_accuracy"] == 1.0 and len(m["snn_accuracy_by_step"]) == 40 and m["calibration_inputs"] == 45
    assert m["snn_accuracy"] == m["snn_accuracy_by_step"][-1] and m["synops_per_input"] > 0
    assert m["ann_macs_per_input"] == 4 * 8 * 8 * 9 + 6 * 4 * 4 * 36 + 6 * 2 * 2 * 4 + 24 * 16 + 16 * 5
    assert len(m["maxnorm_snn_accuracy_by_step"]) == 40
    for key in ("steps_to_ann_within_0p5", "steps_to_ann_within_1p0"):
        t = m[key]
        assert t is None or m["snn_accuracy_by_step"][t - 1] >= m["ann_accuracy"] - 0.01
    assert model.training  # flags restored
    tags = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "histograms": 0}).Reload().Tags()
    assert {"conversion/accuracy_by_step", "conversion_maxnorm/accuracy_by_step"} <= set(tags["scalars"])
    assert {"conversion/accuracy_vs_steps_and_ops", "conversion/activations", "conversion/firing_rates"} \
        <= set(tags["images"])
    assert any(t.startswith("conversion/activations/") for t in tags["histograms"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_simulation_on_gpu_matches_cpu():
    model = randomize_bn(small_cnn()).eval()
    x = torch.rand(16, 1, 10, 10)
    snn = ann_to_snn(model, x)
    cpu = snn.run(x, 20)
    gpu = snn.to("cuda").run(x.cuda(), 20)
    assert torch.allclose(gpu.readout.cpu(), cpu.readout, atol=1e-4)


# ------------------------------------------------------------------------------ real data
def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.mark.slow
def test_lenet_on_mnist_converts_and_the_snn_converges_to_the_ann(mnist_root):
    """A LeNet trained on 5,000 real images, converted with the robust (99.9th percentile) rule: simulate's ANN
    accuracy is evaluate_ann's, and with the ANN's own predictions as labels the SNN agrees with it on >= 97% of
    1,000 test images after 60 steps (measured 99.2-99.8% over seeds and ATEN_CPU_CAPABILITY=default/avx2),
    more than after 10 steps. Accuracies and the robust-against-max-norm speed are benchmarks
    (bench/accuracy_spread.py)."""
    torch.manual_seed(0)
    x = torch.from_numpy(read_idx(mnist_root / "train-images-idx3-ubyte.gz")[:6000].copy()).float() / 255
    y = torch.from_numpy(read_idx(mnist_root / "train-labels-idx1-ubyte.gz")[:6000].astype(np.int64))
    model = LeNet(channels=(6, 12), hidden=64)
    train_epoch(model, DataLoader(TensorDataset(x[:5000], y[:5000]), batch_size=50),
                torch.optim.Adam(model.parameters(), 2e-3), CrossEntropy(), progress=False)
    test = [(x[5000:5500], y[5000:5500]), (x[5500:], y[5500:])]
    snn = ann_to_snn(model, x[:1000])
    assert simulate(snn, test, 60, ann=model).ann_accuracy == evaluate_ann(model, test)
    model.eval()
    with torch.no_grad():
        own = [(xb, model(xb).argmax(-1)) for xb, _ in test]  # labels = the ANN's predictions
    agree = simulate(snn, own, 60)
    assert agree.accuracy >= 0.97, agree.accuracy
    assert agree.accuracy > agree.accuracy_by_step[9]


@pytest.mark.slow
def test_train_py_convert_mnist_trains_then_reloads_the_ann(mnist_root, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    tiny = [f"data.root={mnist_root}", "data.download=false", "data.subset=400", "data.val_size=100",
            "trainer.progress=false", "T=15", "analysis.calib_inputs=200", "analysis.max_test=200",
            "model.channels=[4,8]", "model.hidden=16", "device=cpu"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}

    def train(out, *args):
        r = subprocess.run([sys.executable, str(repo / "train.py"), "experiment=convert_mnist", *tiny, *args,
                            f"hydra.run.dir={out}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads((out / "metrics.json").read_text())

    first = train(tmp_path / "a", "trainer.epochs=1")
    for key in ("ann_accuracy", "snn_accuracy", "snn_accuracy_by_step", "synops_per_input", "ann_macs_per_input",
                "steps_to_ann_within_0p5", "steps_to_ann_within_1p0", "maxnorm_snn_accuracy_by_step"):
        assert key in first, key
    assert len(first["snn_accuracy_by_step"]) == 15
    again = train(tmp_path / "b", "trainer.epochs=0", f"ann_checkpoint={tmp_path / 'a' / 'best.pt'}",
                  "analysis.compare_max_norm=false")
    assert again["ann_accuracy"] == first["ann_accuracy"] and again["snn_accuracy"] == first["snn_accuracy"]
    assert "maxnorm_snn_accuracy" not in again
