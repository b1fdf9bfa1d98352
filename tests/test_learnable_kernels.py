"""Learnable constants on the C kernels: the gradients of ``decay_mem``, ``decay_syn`` and ``v_th``
(per layer and per neuron) against the reference ``scan`` of ``lif_step`` / ``li_step``, whose
gradients autograd derives step by step (an independent code path), and against finite differences."""

import itertools

import pytest
import torch
from conftest import num_threads

from spikegrad.functional import LIFParams, LIFState, LIParams, LIState, li_step, lif_step, scan
from spikegrad.kernels import explain_backend, explain_li_backend, li_sequence, lif_sequence, native_available
from spikegrad.neurons import LI, LIF
from spikegrad.surrogates import make_surrogate

pytestmark = pytest.mark.skipif(not native_available(), reason="the C kernels could not be built")
RESETS = ["subtract", "zero", "none"]


def _constants(shape, dtype, gen):
    """decay_mem, decay_syn, v_th as leaves that require grad, one value or one per neuron."""
    def leaf(lo, hi):
        return (lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=dtype)).requires_grad_()
    return leaf(0.8, 0.95), leaf(0.5, 0.8), leaf(0.8, 1.2)


def _grads(run, x, consts, state, weights):
    """Gradients of a loss that reads every output (spikes, final or recorded states) wrt x, the
    constants and the initial state."""
    out, st = run()
    loss = (out * weights[0]).sum()
    if st.v.dim() == x.dim():   # recorded [T, B, N] states
        loss = loss + (st.v * weights[0]).sum() * 0.3 + (st.i * weights[0] ** 2).sum() * 0.2
    else:
        loss = loss + (st.v * weights[1]).sum() + (st.i ** 2).sum() * 0.5
    leaves = [x, *consts] + ([state.v, state.i] if state is not None else [])
    return out, torch.autograd.grad(loss, leaves)


def _compare(x, consts, state, p, sf, record, rtol, threads=1):
    g = torch.Generator().manual_seed(1)
    weights = (torch.randn(x.shape, generator=g, dtype=x.dtype), torch.randn(x.shape[1:], generator=g, dtype=x.dtype))
    assert explain_backend("auto", x, p, sf, state)[0] == "native"
    with num_threads(threads):
        out, got = _grads(lambda: lif_sequence(x, state, p, sf, record=record), x, consts, state, weights)
    ref_out, want = _grads(lambda: scan(lif_step, x, state, p, sf, record=record), x, consts, state, weights)
    assert torch.equal(out, ref_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


@pytest.mark.parametrize("reset,detach", list(itertools.product(RESETS, [True, False])))
@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "atan", "triangle", "boxcar"])
def test_constant_gradients_equal_the_reference_float64(reset, detach, per_neuron, surrogate):
    gen = torch.Generator().manual_seed(0)
    T, B, N = 23, 3, 70                                 # 70 neurons: one whole block of 64 and a partial one
    x = (torch.randn(T, B, N, generator=gen, dtype=torch.float64) * 0.7).requires_grad_()
    consts = _constants((N,) if per_neuron else (), torch.float64, gen)
    state = LIFState(*(torch.randn(B, N, generator=gen, dtype=torch.float64).mul(0.3).requires_grad_()
                       for _ in range(2)), None)
    p = LIFParams(*consts, 0.25, reset, detach)
    _compare(x, consts, state, p, make_surrogate(surrogate, slope=4.0), False, 1e-10)


@pytest.mark.parametrize("record", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_constant_gradients_float32_record_and_threads(record, threads):
    gen = torch.Generator().manual_seed(2)
    T, B, N = 40, 4, 200
    x = (torch.randn(T, B, N, generator=gen) * 0.6).requires_grad_()
    consts = _constants((N,), torch.float32, gen)
    _compare(x, consts, None, LIFParams(*consts), make_surrogate("fast_sigmoid"), record, 1e-5, threads)


def test_constant_gradients_with_an_input_held_over_time():
    gen = torch.Generator().manual_seed(3)
    T, B, N = 30, 2, 64
    base = (torch.rand(B, N, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()
    consts = _constants((), torch.float64, gen)
    p, sf = LIFParams(*consts), make_surrogate("atan")
    w = torch.randn(T, B, N, generator=gen, dtype=torch.float64)
    held = base.unsqueeze(0).expand(T, B, N)               # one row in the kernels, read every step
    got = torch.autograd.grad((lif_sequence(held, None, p, sf)[0] * w).sum(), [base, *consts])
    want = torch.autograd.grad((scan(lif_step, held, None, p, sf)[0] * w).sum(), [base, *consts])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_constant_gradients_equal_finite_differences():
    """The kernels' gradient of a smooth loss of the final state (no spike flips for a small step)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(15, 2, 5, generator=gen, dtype=torch.float64) * 0.4
    sf = make_surrogate("fast_sigmoid")

    def loss(dm, ds, th):
        out, st = lif_sequence(x, None, LIFParams(dm, ds, th), sf)
        return (st.v ** 2).sum() + (st.i * 0.3).sum()

    args = [torch.tensor(0.9, dtype=torch.float64, requires_grad=True), torch.tensor(0.6, dtype=torch.float64,
                                                                                     requires_grad=True),
            torch.tensor(1.0, dtype=torch.float64, requires_grad=True)]
    grads = torch.autograd.grad(loss(*args), args)
    for k in (0, 1):  # the threshold's gradient is the surrogate's, not the true one (zero between spike flips)
        h = 1e-6
        up = [a.detach() + (h if j == k else 0) for j, a in enumerate(args)]
        down = [a.detach() - (h if j == k else 0) for j, a in enumerate(args)]
        fd = (loss(*up) - loss(*down)) / (2 * h)
        assert float(grads[k]) == pytest.approx(float(fd), rel=1e-6)


@pytest.mark.parametrize("record", [False, True])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_leaky_integrator_time_constant_gradients(record, per_neuron):
    gen = torch.Generator().manual_seed(5)
    T, B, N = 17, 3, 67
    x = (torch.randn(T, B, N, generator=gen, dtype=torch.float64)).requires_grad_()
    dm, ds, _ = _constants((N,) if per_neuron else (), torch.float64, gen)
    state = LIState(*(torch.randn(B, N, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(2)))
    p = LIParams(dm, ds)
    assert explain_li_backend("auto", x, p)[0] == "native"
    w = torch.randn(T, B, N, generator=gen, dtype=torch.float64)

    def grads(run):
        v_seq, st = run()
        loss = (v_seq * w).sum() + (st.v * w[0]).sum() + (st.i ** 2).sum()
        return torch.autograd.grad(loss, [x, dm, ds, state.v, state.i])

    got = grads(lambda: li_sequence(x, state, p, record=record))
    want = grads(lambda: scan(li_step, x, state, p, record=record))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_modules_with_learnable_constants_take_the_kernels_and_learn_like_the_reference():
    torch.manual_seed(0)
    x = torch.rand(20, 4, 6) * 0.5
    for make in (lambda b: LIF(tau_mem=6.0, tau_syn=3.0, learn_tau=True, learn_threshold=True, shape=(6,), backend=b),
                 lambda b: LIF(learn_tau="mem", backend=b)):
        fast, ref = make("auto"), make("torch")
        ref.load_state_dict(fast.state_dict())
        (fast(x)[0] * x).sum().backward()
        (ref(x)[0] * x).sum().backward()
        for (name, a), b in zip(fast.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
    li, li_ref = LI(learn_tau=True), LI(learn_tau=True, backend="torch")
    (li(x)[0] * x).sum().backward()
    (li_ref(x)[0] * x).sum().backward()
    for a, b in zip(li.parameters(), li_ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_where_learnable_constants_still_run_the_reference_scan():
    x = torch.rand(5, 2, 3)
    learn = LIF(learn_tau=True)
    p, sf = learn.params(), make_surrogate("fast_sigmoid")
    assert explain_backend("auto", x, p, sf)[0] == "native"
    assert explain_backend("fused", x, p, sf)[0] == "torch"                       # only the C kernels
    assert explain_backend("auto", x, p._replace(refractory=2), sf)[0] == "torch"
    assert explain_backend("auto", x, p, make_surrogate("sigmoid"))[0] == "torch"  # its derivative is not in C
    assert "surrogate" in explain_backend("auto", x, p, make_surrogate("sigmoid"))[1]
    with torch.no_grad():                                                          # nothing to learn: fast path
        assert explain_backend("fused", x, p, sf)[0] == "fused"
