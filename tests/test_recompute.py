"""Time-chunked recomputation (functional.recompute_chunks, neurons.set_recompute, trainer.recompute):
the same outputs and gradients as one run, less kept for backward, nothing paid without gradients."""

import math

import pytest
import torch
from torch import nn

from spikegrad import functional
from spikegrad.functional import LIFState, recompute_chunks
from spikegrad.models import SpikingMLP
from spikegrad.neurons import ALIF, BSS2LIF, LI, LIF, recomputing, set_recompute
from spikegrad.training import fit, train_epoch

T, B, N = 23, 3, 6
CHUNKS = [1, 5, 23, 40]  # one step, K not dividing T, K == T, K > T


def layers():
    """(name, factory) of every layer type, with learnable constants where the layer has them."""
    return [
        ("lif", lambda: LIF()),
        ("lif_learned", lambda: LIF(learn_tau=True, learn_threshold=True, shape=(N,))),
        ("lif_refractory", lambda: LIF(refractory=2)),
        ("lif_recurrent", lambda: LIF(recurrent=N, learn_tau=True)),
        ("alif", lambda: ALIF(learn_tau=True, learn_threshold=True)),
        ("alif_recurrent", lambda: ALIF(recurrent=N, learn_tau=True, learn_threshold=True)),
        ("alif_recurrent_plain", lambda: ALIF(recurrent=N)),
        ("li", lambda: LI(learn_tau=True)),
        ("li_fixed", lambda: LI()),
        ("bss2_lif", lambda: BSS2LIF()),
    ]


def _input():
    return (torch.randn(T, B, N, dtype=torch.float64) * 0.9 + 0.3).requires_grad_()


def _state(layer, x):
    """An initial state that requires grad: the state after a few steps of input, as leaves."""
    with torch.no_grad():
        _, st = layer(x[:4].detach())
    return functional._map_tensors(lambda t: t.detach().clone().requires_grad_(t.is_floating_point()), st)


def _loss(out, st, w):
    leaves = []
    functional._map_tensors(lambda t: leaves.append(t) or t, st)
    return (out * w).sum() + sum((t.double() ** 2).sum() for t in leaves if t.requires_grad)


def _grads(layer, x, st, chunk, record=False):
    set_recompute(layer, chunk)
    out, final = layer(x, st, record=record)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    inputs = [x, *layer.parameters()]
    functional._map_tensors(lambda t: inputs.append(t) if t.requires_grad else None, st)
    grads = torch.autograd.grad(_loss(out, final, w), inputs, allow_unused=True)
    return out, final, grads


def _close(a, b):
    if a is None or b is None:
        assert a is None and b is None
        return
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,make", layers(), ids=[n for n, _ in layers()])
@pytest.mark.parametrize("with_state", [False, True], ids=["rest", "state"])
@pytest.mark.parametrize("record", [False, True], ids=["final", "record"])
def test_same_outputs_and_gradients(name, make, with_state, record):
    layer = make().double()
    x = _input()
    st = _state(layer, x) if with_state else None
    ref_out, ref_state, ref_grads = _grads(layer, x, st, None, record)
    assert any(g is not None and g.abs().sum() > 0 for g in ref_grads)
    for chunk in CHUNKS:
        out, state, grads = _grads(layer, x, st, chunk, record)
        assert torch.equal(out, ref_out), chunk  # the forward pass runs the same steps
        for a, b in zip(_flat(state), _flat(ref_state)):
            _close(a, b)
        assert len(grads) == len(ref_grads)
        for g, r in zip(grads, ref_grads):
            _close(g, r)


def _flat(tree):
    leaves = []
    functional._map_tensors(lambda t: leaves.append(t) or t, tree)
    return leaves


@pytest.mark.parametrize("recurrent", [False, True])
def test_model_gradients_reach_the_stateless_layers(recurrent):
    """A SpikingMLP (Linear -> ALIF or LIF -> Linear -> LI): every parameter's gradient is the same."""
    torch.manual_seed(1)
    model = SpikingMLP([5, 8, 3], recurrent=recurrent, bias=True, record_v=True).double()
    x = torch.rand(T, B, 5, dtype=torch.float64)

    def grads(chunk):
        set_recompute(model, chunk)
        out = model(x)
        loss = out.readout[-1].logsumexp(-1).sum() + sum(v.sum() for v in out.v) + out.spikes[0].sum()
        return out, torch.autograd.grad(loss, list(model.parameters()))

    ref_out, ref = grads(None)
    for chunk in (4, 7):
        out, g = grads(chunk)
        assert torch.equal(out.readout, ref_out.readout)
        for a, b, (pname, _) in zip(g, ref, model.named_parameters()):
            assert b.abs().sum() > 0, pname
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=pname)


def test_functional_with_any_step_function():
    """recompute_chunks of a plain function equals the function, also with a record and a nested state."""
    w = torch.randn(N, N, dtype=torch.float64, requires_grad=True)

    def fn(x, state, record=False):
        h = torch.zeros_like(x[0]) if state is None else state[0]
        outs, hs = [], []
        for x_t in x:
            h = torch.tanh(x_t + h @ w)
            outs.append(h)
            hs.append(h)
        seq = torch.stack(hs)
        return torch.stack(outs), ((seq, None) if record else (h, None))

    x = _input()
    for record in (False, True):
        ref_out, ref_st = fn(x, None, record)
        ref = torch.autograd.grad(ref_out.sum() + ref_st[0].sum(), [x, w])
        for chunk in CHUNKS:
            out, st = recompute_chunks(fn, x, None, chunk, record)
            assert st[1] is None
            g = torch.autograd.grad(out.sum() + st[0].sum(), [x, w])
            torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
            for a, b in zip(g, ref):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_whole_model_in_chunks():
    """The recipe of the docstring: a model's (x, state) call in chunks, nested outputs, same gradients."""
    torch.manual_seed(2)
    model = SpikingMLP([5, 8, 3], recurrent=True, neuron=ALIF, record_v=True).double()
    x = torch.rand(T, B, 5, dtype=torch.float64)

    def run(x, state):
        out = model(x, state)
        return (out.readout, out.spikes, out.v), out.state

    ref = model(x)
    ref_loss = ref.readout.sum() + ref.spikes[0].sum() + ref.v[0].sum()
    ref_g = torch.autograd.grad(ref_loss, list(model.parameters()))
    (readout, spikes, v), state = recompute_chunks(run, x, None, 5)
    assert torch.equal(readout, ref.readout) and torch.equal(spikes[0], ref.spikes[0])
    assert len(state) == 2 and torch.equal(state[0].v, ref.state[0].v)
    g = torch.autograd.grad(readout.sum() + spikes[0].sum() + v[0].sum(), list(model.parameters()))
    for a, b in zip(g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages that autograd keeps for backward while ``fn`` runs."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("make", [lambda: ALIF(recurrent=32), lambda: LIF(recurrent=32), lambda: ALIF(),
                                  lambda: LIF(backend="torch"), lambda: LI(learn_tau=True)],
                         ids=["alif_recurrent", "lif_recurrent", "alif", "lif_torch", "li_learned"])
def test_keeps_the_input_and_boundary_states(make):
    """With recomputation a layer keeps its input and a state every K steps, not its per-step internals."""
    layer = make()
    x = torch.randn(200, 4, 32, requires_grad=True)
    off = _saved_bytes(lambda: layer(x))
    set_recompute(layer, 20)
    on = _saved_bytes(lambda: layer(x))
    per_step = 4 * 32 * 4  # bytes of one float32 [B, N] step
    fields = 4  # at most v, i, a, z per boundary state
    assert on <= x.numel() * 4 + math.ceil(200 / 20) * fields * per_step + 4096
    if isinstance(layer, ALIF) or getattr(layer, "w_rec", None) is not None:  # 8-12 bytes per neuron-step without it
        assert on < 0.6 * off


def test_nothing_paid_without_gradients(monkeypatch):
    calls = []
    real = functional.checkpoint
    monkeypatch.setattr(functional, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer = ALIF(recurrent=N)
    set_recompute(layer, 5)
    x = torch.randn(T, B, N)
    with torch.no_grad():
        layer(x)
    assert calls == []
    layer(x.requires_grad_())
    assert len(calls) == math.ceil(T / 5)


def test_set_recompute_and_context():
    model = SpikingMLP([4, 8, 3], recurrent=True)
    assert set_recompute(model, 7) == 2
    assert [n.recompute for n in model.neurons] == [7, 7]
    with recomputing(model, 3):
        assert [n.recompute for n in model.neurons] == [3, 3]
    assert [n.recompute for n in model.neurons] == [7, 7]
    with recomputing(model, None):
        assert [n.recompute for n in model.neurons] == [7, 7]
    set_recompute(model, None)
    assert all(n.recompute is None for n in model.neurons)
    assert "recompute" not in str(model.state_dict().keys())


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_invalid_chunk(bad):
    with pytest.raises(ValueError, match="positive int"):
        set_recompute(LIF(), bad)
    with pytest.raises(ValueError, match="positive int"):
        recompute_chunks(lambda x, s: (x, s), torch.zeros(3, 1, requires_grad=True), None, bad)
    layer = LIF()
    layer.recompute = bad  # set directly: checked when used
    with pytest.raises(ValueError, match="LIF: recompute must be a positive int"):
        layer(torch.zeros(3, 1, 2, requires_grad=True))


def test_model_without_neurons():
    with pytest.raises(ValueError, match="no neuron layers.*no effect"):
        set_recompute(nn.Linear(3, 3), 8)
    assert set_recompute(nn.Linear(3, 3), None) == 0


class _ReadoutLoss:
    def __call__(self, out, y):
        return nn.functional.cross_entropy(out.readout[-1], y)

    def predict(self, out):
        return out.readout[-1].argmax(-1)


def _data(n=8):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(n, T, 4, generator=g), torch.randint(0, 3, (n,), generator=g))]


def test_train_epoch_same_weights():
    """One training step with and without recomputation gives the same weights (float64)."""
    states = []
    for chunk in (None, 5):
        torch.manual_seed(3)
        model = SpikingMLP([4, 8, 3], recurrent=True, neuron=ALIF, record_v=False).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        data = [(x.double().transpose(0, 1), y) for x, y in _data()]
        train_epoch(model, data, opt, _ReadoutLoss(), progress=False, recompute=chunk)
        assert all(n.recompute is None for n in model.neurons)  # the setting lasts for the epoch only
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[1][k], states[0][k], rtol=1e-10, atol=1e-12, msg=k)


def test_fit_checks_recompute():
    model = SpikingMLP([4, 8, 3], recurrent=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="trainer.recompute"):
            fit(model, _data(), None, None, opt, _ReadoutLoss(), epochs=1, progress=False, recompute=bad)
    with pytest.raises(ValueError, match="no neuron layers"):
        lin = nn.Linear(3, 3)
        fit(lin, _data(), None, None, torch.optim.SGD(lin.parameters(), lr=0.1), _ReadoutLoss(), epochs=1,
            progress=False, recompute=4)


def test_fit_with_recompute_runs():
    model = SpikingMLP([4, 8, 3], recurrent=True, neuron=ALIF, record_v=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = [(x.transpose(0, 1), y) for x, y in _data()]
    metrics = fit(model, data, data, None, opt, _ReadoutLoss(), epochs=1, progress=False, recompute=6,
                  use_best=False, log_samples=0)
    assert math.isfinite(metrics["history"][0]["train_loss"])
    assert all(n.recompute is None for n in model.neurons)


def test_state_passed_between_chunks_is_the_layer_state():
    """The state carried from chunk to chunk is the layer's own (recurrent spikes z included)."""
    layer = LIF(recurrent=N).double()
    x = _input()
    set_recompute(layer, 4)
    _, st = layer(x)
    set_recompute(layer, None)
    _, ref = layer(x)
    assert isinstance(st, LIFState) and st.z is not None
    assert torch.equal(st.z, ref.z) and torch.equal(st.v, ref.v)


def test_training_step_runs_the_fused_path(monkeypatch):
    """train_epoch (whose state watch hooks the modules) leaves the surrogates unhooked, so a recurrent
    ALIF layer trains on its fused path, with recomputation too, rather than on the reference scan."""
    from spikegrad.kernels import recurrent

    calls = []
    real = recurrent.recurrent_fused
    monkeypatch.setattr(recurrent, "recurrent_fused", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = SpikingMLP([4, 8, 3], recurrent=True, neuron=ALIF, record_v=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(x.transpose(0, 1), y) for x, y in _data()]
    for chunk, n in ((None, 1), (5, 2 * math.ceil(T / 5))):  # with recomputation: forward and again in backward
        calls.clear()
        train_epoch(model, data, opt, _ReadoutLoss(), progress=False, recompute=chunk)
        assert len(calls) == n, chunk


def test_run_in_chunks_equals_one_run_and_keeps_less():
    """A whole model in chunks: the same outputs, final state and gradients as one call, and less kept
    for backward (counted with saved-tensor hooks) than one call keeps."""
    from spikegrad.models import run_in_chunks

    torch.manual_seed(5)
    model = SpikingMLP([4, 16, 3], recurrent=True, neuron=ALIF).double()
    x = (torch.rand(40, 2, 4, dtype=torch.float64) < 0.3).double()

    def kept(fn):
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn()
        return out, sum(total)

    ref, ref_bytes = kept(lambda: model(x))
    got, got_bytes = kept(lambda: run_in_chunks(model, x, 8))
    for a, b in zip([got.readout, *got.spikes, *got.v], [ref.readout, *ref.spikes, *ref.v]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(state_leaves(got.state), state_leaves(ref.state)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    g_ref = torch.autograd.grad(ref.readout.square().sum(), list(model.parameters()))
    g_got = torch.autograd.grad(got.readout.square().sum(), list(model.parameters()))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert got_bytes < ref_bytes / 2
    with pytest.raises(ValueError, match="takes no state"):
        run_in_chunks(nn.Linear(4, 3), x, 8)


def state_leaves(tree):
    """The tensors of a nested state, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for sub in tree for t in state_leaves(sub)]
    return []


def test_train_epoch_chunks_a_stateful_model_whole(monkeypatch):
    """train_epoch with recompute runs a model that takes state= in chunks (run_in_chunks), not its layers."""
    import spikegrad.training.loop as loop

    calls = []
    real = loop.run_in_chunks
    monkeypatch.setattr(loop, "run_in_chunks", lambda m, x, k: calls.append(k) or real(m, x, k))
    model = SpikingMLP([4, 8, 3], recurrent=True, neuron=ALIF, record_v=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(x.transpose(0, 1), y) for x, y in _data()]
    train_epoch(model, data, opt, _ReadoutLoss(), progress=False, recompute=7)
    assert calls == [7]
