"""Fast inference paths keep PyTorch's semantics: forward hooks fire, and the training loop's
non-finite-state watch still checks evaluation on the event-driven path."""

import pytest
import torch

from spikegrad.kernels import events, native_available
from spikegrad.losses import MaxOverTime
from spikegrad.models import SpikingMLP
from spikegrad.training import evaluate
from spikegrad.training.guards import NonFiniteLossError


def latency_batch(B=16, n=64, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, T, (B, n), generator=g)
    x = torch.zeros(T, B, n)
    x.scatter_(0, t.unsqueeze(0), (torch.rand(1, B, n, generator=g) < 0.5).float())
    return x


def model(seed=0):
    torch.manual_seed(seed)
    return SpikingMLP([64, 32, 10], sparse_input=True, record_v=False, weight_gain=6.0).eval()


@pytest.mark.skipif(not events.available(), reason="the event-driven C kernels are not built")
def test_hooks_on_neurons_fire_and_see_what_the_event_path_computes(monkeypatch):
    m, x = model(), latency_batch()
    with torch.no_grad():
        fast = m(x)
    calls = []
    handles = [n.register_forward_hook(lambda mod, args, out: calls.append((mod, out[0].clone())))
               for n in m.neurons]
    kernel_calls = []
    real = events.mlp_forward
    monkeypatch.setattr(events, "mlp_forward", lambda *a, **k: kernel_calls.append(1) or real(*a, **k))
    with torch.no_grad():
        hooked = m(x)
    assert [mod for mod, _ in calls] == list(m.neurons) and not kernel_calls  # one call per layer, layer path
    assert torch.equal(calls[0][1], hooked.spikes[0]) and torch.equal(hooked.spikes[0], fast.spikes[0])
    torch.testing.assert_close(hooked.readout, fast.readout)
    for h in handles:
        h.remove()
    with torch.no_grad():
        m(x)
    assert kernel_calls == [1]  # without hooks the event path is back


@pytest.mark.skipif(not events.available(), reason="the event-driven C kernels are not built")
def test_evaluation_on_the_event_path_catches_a_non_finite_state(monkeypatch):
    m, x = model(), latency_batch()
    y = torch.randint(0, 10, (x.shape[1],))
    loader = [(x.transpose(0, 1), y)]
    time_first = lambda b, generator=None: b.transpose(0, 1)  # noqa: E731
    kernel_calls = []
    real = events.mlp_forward
    monkeypatch.setattr(events, "mlp_forward", lambda *a, **k: kernel_calls.append(1) or real(*a, **k))
    assert evaluate(m, loader, MaxOverTime(), encoder=time_first)["samples"] == x.shape[1]
    assert kernel_calls == [1]  # evaluation keeps the fast path
    with torch.no_grad():
        m.layers[0].module.weight[0, :] = float("nan")  # neuron 0's membrane turns NaN: it never spikes
        out = m(x)
    assert torch.isfinite(out.readout).all()  # the loss alone would not tell
    with pytest.raises(NonFiniteLossError, match="neuron state became non-finite"):
        evaluate(m, loader, MaxOverTime(), encoder=time_first)


def test_fit_records_each_layers_path_and_why():
    import functools

    from spikegrad.neurons import ALIF, LIF
    from spikegrad.training import fit

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(16, 12, 8, generator=g) < 0.3).float()  # [B, T, N] batches; the encoder makes them time-first
    y = torch.randint(0, 3, (16,), generator=g)
    loader = [(x[:8], y[:8]), (x[8:], y[8:])]
    time_first = lambda b, generator=None: b.transpose(0, 1)  # noqa: E731

    def run(model):
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        return fit(model, loader, loader, loader, opt, MaxOverTime(), epochs=1, encoder=time_first, progress=False,
                   log_samples=0)["layer_paths"]

    rnn = run(SpikingMLP([8, 6, 3], neuron=functools.partial(ALIF), recurrent=True))
    assert rnn["train"]["neurons.0"].startswith("fused: recurrent")
    learn = run(SpikingMLP([8, 6, 3], neuron=functools.partial(LIF, learn_tau=True)))
    assert learn["train"]["neurons.0"].startswith("native: learnable constants" if native_available() else "torch")
    held = run(SpikingMLP([8, 6, 3], neuron=functools.partial(LIF, learn_tau=True, refractory=1)))
    assert held["train"]["neurons.0"].startswith("torch: constants that require grad")   # the slow loop, said
    assert held["eval"]["neurons.0"].startswith(("native", "fused"))                     # no grad: fast again
    if events.available():
        fast = run(SpikingMLP([8, 6, 3], sparse_input=True, record_v=False))
        assert fast["eval"] == {"SpikingMLP": "events: the whole MLP as one event-driven C kernel"}


def test_layer_paths_are_read_with_the_callers_hooks_in_place():
    """A hook on a surrogate sends its layer to the reference scan; layer_paths, given the hooks the
    run installs, reports that path rather than the one a hook-free model would take."""
    from spikegrad.training.paths import layer_paths

    model = SpikingMLP([8, 6, 3])
    x = (torch.rand(10, 2, 8) < 0.3).float()

    def surrogate_hook(train):
        h = model.neurons[0].surrogate.register_forward_hook(lambda *a: None)
        return h.remove

    plain = layer_paths(model, x)["train"]["neurons.0"]
    hooked = layer_paths(model, x, hooks=surrogate_hook)["train"]["neurons.0"]
    assert not plain.startswith("torch")
    assert hooked.startswith("torch: forward hooks on the surrogate")
