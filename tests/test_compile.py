"""torch.compile keeps the fast kernels: custom operators, no graph breaks, no recompilation per T."""

import pytest
import torch

import spikegrad as sg
from spikegrad.kernels import native, ops

pytestmark = pytest.mark.skipif(not native.available(), reason="the C kernels could not be built")


class Counter:
    """A torch.compile backend that runs the captured graph eagerly and counts compilations."""

    def __init__(self):
        self.graphs = 0
        self.code = ""

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        self.code += gm.code
        return gm.forward


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["counter", "aot_eager"])
def test_compiled_mlp_has_one_graph_for_every_T_and_equals_eager(backend):
    torch.manual_seed(0)
    model = sg.SpikingMLP([64, 32, 10], record_v=False, sparse_input=True)
    counter = Counter()
    compiled = torch.compile(model, backend=counter if backend == "counter" else backend, fullgraph=True,
                             dynamic=True)
    for T in (9, 16, 23):
        x = (torch.rand(T, 4, 64) < 0.03).float()
        got = compiled(x)
        g_got = grads(model, got.readout.square().sum())
        want = model(x)
        g_want = grads(model, want.readout.square().sum())
        torch.testing.assert_close(got.readout, want.readout, rtol=1e-6, atol=1e-6)
        assert torch.equal(got.spikes[0], want.spikes[0])
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if backend == "counter":
        assert counter.graphs == 1  # fullgraph: no breaks; dynamic T: no recompilation


@pytest.mark.parametrize("refractory,record", [(0, True), (2, False), (2, True)])
def test_compiled_lif_and_li_states_equal_eager(refractory, record):
    lif = sg.LIF(tau_mem=8.0, refractory=refractory, reset="zero", v_reset=-0.2, shape=(6,)).double()
    li = sg.LI(tau_mem=5.0).double()

    def run(x, state):
        s, st = lif(x, state, record=record)
        v, st_li = li(s, record=record)
        return s, st, v, st_li

    compiled = torch.compile(run, backend="aot_eager", fullgraph=True, dynamic=True)
    x = (torch.rand(20, 3, 6, dtype=torch.float64) * 0.7).requires_grad_()
    state = sg.LIFState(torch.rand(3, 6, dtype=torch.float64), torch.zeros(3, 6, dtype=torch.float64),
                        torch.zeros(3, 6, dtype=torch.float64) if refractory else None)
    got, want = compiled(x, state), run(x, state)
    for a, b in zip(got, want):
        for u, w in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert (u is None) == (w is None)
            if u is not None:
                assert torch.equal(u, w)
    g1, = torch.autograd.grad(got[2].sum() + got[1].v.sum(), x)
    g2, = torch.autograd.grad(want[2].sum() + want[1].v.sum(), x)
    torch.testing.assert_close(g1, g2)


def test_custom_operators_pass_opcheck():
    x = torch.rand(7, 5, dtype=torch.float64) * 0.8
    zeros = torch.zeros(5, dtype=torch.float64)
    consts = [torch.full((1,), v, dtype=torch.float64) for v in (0.9, 0.5, 1.0, 0.0)]
    slope = torch.tensor(5.0, dtype=torch.float64)
    for keep_z, recompute in ((True, False), (False, True)):  # z stored / recomputed in backward
        torch.library.opcheck(ops.lif_op, (x.clone().requires_grad_(), zeros, zeros, zeros, *consts, slope, "subtract",
                                           True, 0, True, keep_z, "atan", recompute))
    torch.library.opcheck(ops.li_op, (x.clone().requires_grad_(), zeros, zeros, consts[0], consts[1], False))
    spikes = (torch.rand(12, 9) < 0.1).double()
    w = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(ops.sparse_linear_op, (spikes, w, None, 0.5))


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("record", [False, True])
@pytest.mark.parametrize("kind", ["lif", "alif", "alif_ff"])
def test_compiled_recurrent_layer_runs_the_c_engine_and_equals_eager(kind, record, learn):
    """A recurrent LIF / ALIF (or feed-forward ALIF) layer under torch.compile(fullgraph=True): the
    custom operators (no graph break, one graph for every T), same spikes, states and gradients as
    eager, per-neuron learnable time constants and thresholds included; the eager reference is the
    reference scan (an independent path)."""
    torch.compiler.reset()    # every parameter set compiles the same code object anew
    torch.manual_seed(3)
    N = 6
    rec = None if kind == "alif_ff" else N
    kw = dict(learn_tau=True, learn_threshold=True, shape=(N,)) if learn else {}
    layer = (sg.LIF(tau_mem=6.0, recurrent=rec, **kw) if kind == "lif"
             else sg.ALIF(tau_mem=6.0, tau_ada=9.0, beta=1.3, recurrent=rec, **kw)).double()
    if learn:
        with torch.no_grad():
            layer.log_tau_mem.copy_(torch.linspace(4.0, 9.0, N).log())
    if layer.w_rec is not None:
        with torch.no_grad():  # multiples of 1/64: the sums of rows are exact in any order
            layer.w_rec.copy_(torch.round(torch.randn(N, N) * 0.3 * 64) / 64)

    def run(x):
        s, st = layer(x, record=record)
        return s, st.v, st.i

    counter = Counter()
    compiled = torch.compile(run, backend=counter, fullgraph=True, dynamic=True)
    for T in (11, 17):
        x = (torch.rand(T, 3, N, dtype=torch.float64) * 0.8).requires_grad_()
        got = compiled(x)
        layer.backend = "torch"
        want = run(x)
        layer.backend = "auto"
        for a, b in zip(got, want):
            assert torch.equal(a, b)
        assert 0 < want[0].sum() < want[0].numel()
        params = [p for p in layer.parameters() if p.requires_grad]
        g1 = torch.autograd.grad(got[0].sum() + got[1].square().sum(), [x, *params])
        g2 = torch.autograd.grad(want[0].sum() + want[1].square().sum(), [x, *params])
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert counter.graphs == 1 and "spikegrad.recurrent" in counter.code


def test_recurrent_operators_pass_opcheck():
    from spikegrad.kernels import recurrent

    T, B, N = 5, 3, 4
    g = torch.Generator().manual_seed(0)
    x = torch.rand(T, B, N, generator=g, dtype=torch.float64) * 0.9
    w = torch.round(torch.randn(N, N, generator=g, dtype=torch.float64) * 32) / 64
    st = [torch.rand(B, N, generator=g, dtype=torch.float64) * 0.5 for _ in range(3)]
    z0 = (torch.rand(B, N, generator=g) < 0.5).double()
    c = [torch.full((1, N), v, dtype=torch.float64) for v in (0.9, 0.6, 0.95, 1.2, 1.0, 0.0)]
    slope = torch.tensor(5.0, dtype=torch.float64)
    for adaptive in (False, True):
        for record in (False, True):
            args = (x.clone().requires_grad_(), w.clone().requires_grad_(), st[0].clone().requires_grad_(), st[1],
                    st[2] if adaptive else None, z0, c[0], c[1], c[2] if adaptive else None,
                    c[3] if adaptive else None, c[4], c[5], slope, "subtract", True, "atan", record, True, False)
            torch.library.opcheck(recurrent.recurrent_op, args)
    # learnable constants ([1, N], requiring grad): their gradients come from the backward operator
    learn = [t.reshape(1, N).clone().requires_grad_() for t in c]
    args = (x.clone().requires_grad_(), w.clone(), st[0], st[1], st[2], None, learn[0], learn[1], learn[2], learn[3],
            learn[4], learn[5], slope, "zero", False, "fast_sigmoid", False, True, True)
    torch.library.opcheck(recurrent.recurrent_op, args)
