"""The fused recurrent LIF / ALIF layers (:mod:`spikegrad.kernels.recurrent`) against the reference
``scan`` of the step functions (autograd through every step: an independent code path).

Recurrent weights are multiples of 1/64 here, so every sum of their rows is exact in any order: the
fused forward (GEMM or sum of the active rows) must then give the reference's spikes and states bit
for bit. One test keeps arbitrary weights for the GEMM, which is the reference's own product.
"""

import itertools
import logging

import pytest
import torch
from conftest import num_threads

from spikegrad.functional import (ALIFParams, ALIFState, LIFParams, LIFState, recurrent_alif_step,
                                  recurrent_lif_step, scan)
from spikegrad.kernels import alif_sequence, explain_backend, lif_sequence, recurrent
from spikegrad.neurons import ALIF, LIF
from spikegrad.surrogates import SURROGATES, Surrogate, make_surrogate, register_surrogate

RESETS = ["subtract", "zero", "none"]
KINDS = ["lif", "alif", "alif_ff"]          # recurrent LIF, recurrent ALIF, feed-forward ALIF


class _Quartic(Surrogate):
    """A user surrogate unknown to the library: ``slope (1 - (slope x)^2)^2`` on ``|slope x| < 1``."""

    default_slope = 1.5

    @staticmethod
    def grad(x, slope):
        return slope * (1 - (slope * x) ** 2).clamp(min=0) ** 2

    @staticmethod
    def primitive(x, slope):  # pragma: no cover - not needed here
        raise NotImplementedError


@pytest.fixture
def user_surrogate():
    register_surrogate("test_recurrent_quartic")(_Quartic)
    yield "test_recurrent_quartic"
    SURROGATES.pop("test_recurrent_quartic", None)


@pytest.fixture(params=["dense", "gather", "native", "native_gemm"])
def product(request, monkeypatch):
    """Force the engine and the recurrent product of the fused forward pass: the PyTorch loop with the
    GEMM or the sum of the active rows, or the C engine (sum of the active rows) with the weight
    gradient summed by rows of ``gI`` per spike or by one GEMM."""
    monkeypatch.setattr(recurrent, "NATIVE", request.param.startswith("native"))
    if request.param == "dense":
        monkeypatch.setattr(recurrent, "GATHER_MIN_MACS", float("inf"))
    elif request.param == "gather":
        monkeypatch.setattr(recurrent, "GATHER_MIN_MACS", 0)
        monkeypatch.setattr(recurrent, "GATHER_MAX_RATE", 1.0)
    else:
        monkeypatch.setattr(recurrent, "GATHER_MAX_RATE", 1.0 if request.param == "native" else 0.0)
    if request.param.startswith("native") and not recurrent.native.available():
        pytest.skip("the C kernels are not built")
    return request.param


def dyadic(w):
    return torch.round(w * 64) / 64


def make_layer(kind, N, reset="subtract", detach_reset=True, surrogate="atan", dtype=torch.float64, seed=0):
    """A layer with per-neuron, learnable constants (all different) and dyadic recurrent weights."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(tau_mem=6.0, tau_syn=3.0, reset=reset, detach_reset=detach_reset, surrogate=surrogate,
              learn_tau=True, learn_threshold=True, shape=(N,), v_reset=-0.25)
    rec = None if kind == "alif_ff" else N
    layer = LIF(recurrent=rec, **kw) if kind == "lif" else ALIF(tau_ada=12.0, beta=1.2, recurrent=rec, **kw)
    with torch.no_grad():
        layer.log_tau_mem.copy_(torch.linspace(4.0, 10.0, N).log())
        layer.log_v_th.copy_(torch.linspace(0.8, 1.2, N).log())
        if kind != "lif":
            layer.beta.copy_(torch.linspace(0.5, 1.5, N))
        if layer.w_rec is not None:
            layer.w_rec.copy_(dyadic(torch.randn(N, N, generator=g) * 0.8 / N**0.5))
    return layer.to(dtype)


def make_state(kind, B, N, dtype=torch.float64, seed=2):
    g = torch.Generator().manual_seed(seed)

    def r(scale=1.0):
        return (torch.rand(B, N, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()

    z = None if kind == "alif_ff" else (torch.rand(B, N, generator=g) < 0.4).to(dtype).requires_grad_()
    if kind == "lif":
        return LIFState(r(1.4), r(0.3), None, z)
    return ALIFState(r(1.4), r(0.3), r(0.5), z)


def make_input(T, B, N, dtype=torch.float64, seed=1, held=False):
    g = torch.Generator().manual_seed(seed)
    if held:  # one step held for T steps: an expanded view
        base = (torch.rand(B, N, generator=g, dtype=torch.float64) * 0.9).to(dtype).requires_grad_()
        return base, base.expand(T, B, N)
    x = (torch.rand(T, B, N, generator=g, dtype=torch.float64) * 0.9).to(dtype).requires_grad_()
    return x, x


def run(layer, backend, x_leaf, x, state=None, record=False):
    """Spikes, state and the gradients (input, parameters, initial state) of a loss touching every output."""
    layer.backend = backend
    s, st = layer(x, state, record=record)
    g = torch.Generator().manual_seed(7)
    loss = (s * torch.randn(s.shape, generator=g, dtype=torch.float64).to(s.dtype)).sum()
    for t in st:
        if t is not None:
            loss = loss + (t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).sum()
    inputs = [x_leaf] + [p for _, p in sorted(layer.named_parameters())]
    if state is not None:
        inputs += [t for t in state if t is not None]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)  # w_rec is unused for T = 1 from rest
    return s, st, [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


def assert_same(ref, got, rtol=1e-9, exact_states=True, allow_zero=False):
    """Spikes equal, states equal (or close), every gradient close to the reference's and, unless
    ``allow_zero``, not zero (so that every term of the adjoint is exercised)."""
    s0, st0, g0 = ref
    s1, st1, g1 = got
    assert s1.dtype == s0.dtype
    assert torch.equal(s0, s1), "spikes differ"
    assert 0 < s0.sum() < s0.numel(), "the test input should give some spikes, not all"
    for f, a, b in zip(st0._fields, st0, st1):
        assert (a is None) == (b is None), f
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape, f
            if exact_states:
                assert torch.equal(a, b), f"state {f} differs"
            else:
                torch.testing.assert_close(b, a, rtol=rtol, atol=rtol)
    assert len(g0) == len(g1)
    for k, (a, b) in enumerate(zip(g0, g1)):
        scale = a.abs().max().item()
        if scale == 0:
            assert allow_zero, f"gradient {k} is zero in the reference"
            assert b.abs().max() == 0, f"gradient {k}: zero in the reference, not here"
            continue
        torch.testing.assert_close(b, a, rtol=rtol, atol=rtol * scale, msg=lambda m: f"gradient {k}: {m}")


def compare(kind, T=17, B=3, N=13, reset="subtract", detach_reset=True, surrogate="atan", record=False,
            with_state=True, held=False, dtype=torch.float64, rtol=1e-9, exact_states=True):
    out = []
    for backend in ("torch", "auto"):
        layer = make_layer(kind, N, reset, detach_reset, surrogate, dtype)
        x_leaf, x = make_input(T, B, N, dtype, held=held)
        state = make_state(kind, B, N, dtype) if with_state else None
        out.append(run(layer, backend, x_leaf, x, state, record))
    assert_same(*out, rtol=rtol, exact_states=exact_states, allow_zero=T == 1)
    return out


# ------------------------------------------------------------------------------ the path chosen

def test_explain_backend_reports_the_fused_path_and_the_reasons(caplog):
    x = torch.rand(6, 2, 4)
    lif_rec = LIF(recurrent=4)
    assert explain_backend("auto", x, lif_rec.params(), lif_rec.surrogate, None, lif_rec.w_rec)[0] == "fused"
    alif = ALIF()
    assert explain_backend("auto", x, alif.params(), alif.surrogate)[0] == "fused"
    assert explain_backend("fused", x, alif.params(), alif.surrogate)[0] == "fused"
    backend, why = explain_backend("torch", x, alif.params(), alif.surrogate)
    assert backend == "torch" and "torch" in why
    refr = LIF(recurrent=4, refractory=2)
    assert explain_backend("auto", x, refr.params(), refr.surrogate, None, refr.w_rec) == (
        "torch", "refractory period (the fused recurrent path has none)")
    backend, why = explain_backend("auto", x, alif.params(), make_surrogate("atan", spiking=False))
    assert backend == "torch" and "spiking=False" in why
    backend, why = explain_backend("fused", x, LIF(learn_tau=True).params(), make_surrogate("atan"))
    assert backend == "torch" and "learn_tau" in why      # learnable constants: only the C kernels, else scan
    with pytest.raises(ValueError, match="backend"):
        explain_backend("native", x, alif.params(), alif.surrogate)
    # the modules run what explain_backend says, and "auto" logs why it falls back
    caplog.set_level(logging.DEBUG, logger="spikegrad.kernels")
    LIF(recurrent=4)(x)
    ALIF()(x)
    assert not [r for r in caplog.records if r.name == "spikegrad.kernels"]
    LIF(recurrent=4, refractory=2)(x)
    assert [r.getMessage() for r in caplog.records if r.name == "spikegrad.kernels"] == [
        "lif_sequence: backend='auto' runs the reference scan: refractory period (the fused recurrent path has none)"]


def _node_names(t, depth=3):
    names, frontier = set(), [t.grad_fn]
    for _ in range(depth):
        frontier = [f for f in frontier if f is not None]
        names |= {type(f).__name__ for f in frontier}
        frontier = [n for f in frontier for n, _ in f.next_functions]
    return names


def test_modules_run_the_fused_function():
    for layer in (LIF(recurrent=5), ALIF(recurrent=5), ALIF()):
        s, _ = layer(torch.rand(4, 2, 5, requires_grad=True))
        assert "_RecurrentFnBackward" in _node_names(s)
        layer.backend = "torch"
        s, _ = layer(torch.rand(4, 2, 5, requires_grad=True))
        assert "_RecurrentFnBackward" not in _node_names(s)


# ------------------------------------------------------------------------------ against the reference

@pytest.mark.parametrize("kind,reset,detach_reset", list(itertools.product(KINDS, RESETS, [True, False])))
def test_matches_reference_every_reset(kind, reset, detach_reset, product):
    for record in (False, True):
        compare(kind, reset=reset, detach_reset=detach_reset, record=record)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T,B,N", [(1, 1, 5), (1, 3, 13), (17, 1, 5), (17, 3, 13)])
def test_matches_reference_shapes_with_and_without_state(kind, T, B, N, product):
    for with_state in (True, False):
        if T == 1 and B == 1 and not with_state:
            continue  # a single step from rest with one sample: too few spikes to check
        compare(kind, T=T, B=B, N=N, with_state=with_state, reset="zero", detach_reset=False)


@pytest.mark.parametrize("kind", KINDS)
def test_held_input(kind, product):
    compare(kind, held=True, reset="subtract", detach_reset=False, record=True)


@pytest.mark.parametrize("kind", ["lif", "alif"])
def test_dense_product_is_the_reference_gemm_for_any_weights(kind, monkeypatch):
    monkeypatch.setattr(recurrent, "NATIVE", False)
    monkeypatch.setattr(recurrent, "GATHER_MIN_MACS", float("inf"))
    out = []
    for backend in ("torch", "fused"):
        layer = make_layer(kind, 13)
        with torch.no_grad():
            layer.w_rec.copy_(torch.randn(13, 13, generator=torch.Generator().manual_seed(3)) * 0.3)
        assert not torch.equal(layer.w_rec, dyadic(layer.w_rec))
        x_leaf, x = make_input(17, 3, 13)
        out.append(run(layer, backend, x_leaf, x, make_state(kind, 3, 13)))
    assert_same(*out)


@pytest.mark.parametrize("kind", KINDS)
def test_chunks_carry_the_state_and_equal_one_run(kind, product):
    layer = make_layer(kind, 13, reset="subtract", detach_reset=False)
    x_leaf, x = make_input(17, 3, 13)
    state = make_state(kind, 3, 13)
    one = run(layer, "auto", x_leaf, x, state)
    layer.backend = "auto"
    s1, st1 = layer(x[:6], state)
    s2, st2 = layer(x[6:], st1)                   # not detached: gradients flow through the carried state
    s = torch.cat([s1, s2])
    assert torch.equal(s, one[0])
    for a, b in zip(st2, one[1]):
        assert (a is None and b is None) or torch.equal(a, b)
    # the same loss as run(): the gradients through both chunks equal those of one run
    g = torch.Generator().manual_seed(7)
    loss = (s * torch.randn(s.shape, generator=g, dtype=torch.float64)).sum()
    for t in st2:
        if t is not None:
            loss = loss + (t * torch.randn(t.shape, generator=g, dtype=torch.float64)).sum()
    inputs = [x_leaf] + [p for _, p in sorted(layer.named_parameters())] + [t for t in state if t is not None]
    for a, b in zip(torch.autograd.grad(loss, inputs), one[2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads(threads, product):
    with num_threads(threads):
        for kind in ("lif", "alif"):
            compare(kind, T=9, B=8, N=96, record=True)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["lif", "alif"])
@pytest.mark.parametrize("N", [100, 200])
def test_c_engine_threads_split_rows_and_weight_rows(kind, threads, N, monkeypatch):
    """Enough rows (B N >= 8192) that the C engine's backward splits the rows and the columns of the
    weight gradient (in words of 64: one or two words each, the last one partial) between two
    threads; a partial vector at the end of every row."""
    if not recurrent.native.available():
        pytest.skip("the C kernels are not built")
    monkeypatch.setattr(recurrent, "GATHER_MAX_RATE", 1.0)
    with num_threads(threads):
        compare(kind, T=5, B=82, N=N, record=False)


@pytest.mark.parametrize("record", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_broadcast_over_time(kind, record, product):
    """Losses that are plain sums (``s.sum()``, ``v.sum()``): the gradients arrive as one value expanded
    over every step and neuron (stride 0), one output at a time."""
    for field in ("spikes", "v", "i", "a"):
        if field == "a" and kind == "lif":
            continue
        out = []
        for backend in ("torch", "auto"):
            layer = make_layer(kind, 13)
            x_leaf, x = make_input(17, 3, 13)
            layer.backend = backend
            s, st = layer(x, make_state(kind, 3, 13), record=record)
            loss = (s if field == "spikes" else getattr(st, field)).sum()
            out.append(torch.autograd.grad(loss, [x_leaf, *layer.parameters()], allow_unused=True))
        for a, b in zip(*out):
            if a is None or b is None:
                assert a is None or not a.abs().max(), field
                continue
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9 * max(1.0, a.abs().max().item()), msg=field)


def test_engine_says_which_engine_runs(user_surrogate):
    x = torch.rand(4, 2, 6)
    p = make_layer("alif", 6, dtype=torch.float32).params()
    built = recurrent.native.available()
    assert recurrent.engine(x, p, make_surrogate("atan"))[0] == ("native" if built else "torch")
    assert recurrent.engine(x, p, make_surrogate("atan"), product="dense") == (
        "torch", "the loop of PyTorch operations: product='dense' (the reference's GEMM, bit for bit)")
    assert recurrent.engine(x, p, make_surrogate(user_surrogate))[0] == "torch"
    assert recurrent.engine(x.half(), p, make_surrogate("atan"))[0] == "torch"


@pytest.mark.parametrize("kind", KINDS)
def test_float32_close(kind, product):
    compare(kind, dtype=torch.float32, rtol=1e-5, reset="zero", record=True)


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_input_keeps_float32_states(kind):
    """bfloat16 input: float32 states and constants, bfloat16 spikes; the fused path equals the
    reference run on the input widened to float32 (what every backend does for half precision)."""
    layer = make_layer(kind, 13, dtype=torch.float32)
    x = make_input(17, 3, 13)[1].detach()
    layer.backend = "auto"
    s, st = layer(x.bfloat16())
    assert s.dtype == torch.bfloat16
    assert st.v.dtype == st.i.dtype == torch.float32 and (kind == "lif" or st.a.dtype == torch.float32)
    layer.backend = "torch"
    s_ref, st_ref = layer(x.bfloat16().float())
    assert torch.equal(s.float(), s_ref) and 0 < s_ref.sum() < s_ref.numel()
    for a, b in zip(st, st_ref):
        if b is not None:
            assert torch.equal(a.float(), b.float())
    s_bf, _ = layer(x.bfloat16())                  # the reference backend widens the same way
    assert torch.equal(s_bf, s)


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_every_builtin_surrogate(surrogate):
    compare("alif", surrogate=surrogate, reset="subtract", detach_reset=False)


def test_user_registered_surrogate(user_surrogate):
    for kind in ("lif", "alif"):
        compare(kind, surrogate=user_surrogate, reset="zero", detach_reset=False, record=True)


def test_functional_constants_all_require_grad():
    """Every constant a tensor that requires grad (beta and v_reset too, not learnable in the modules)."""
    T, B, N = 11, 3, 7
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(T, B, N, generator=g, dtype=torch.float64) * 0.9).requires_grad_()
    w = dyadic(torch.randn(N, N, generator=g, dtype=torch.float64) * 0.3).requires_grad_()

    def const(lo, hi, shape):
        return torch.linspace(lo, hi, N, dtype=torch.float64).reshape(shape).clone().requires_grad_()

    spike = make_surrogate("fast_sigmoid", slope=5.0)
    for reset in RESETS:
        for adaptive in (False, True):
            consts = [const(0.7, 0.9, (N,)), const(0.3, 0.6, (1, N)), const(0.8, 1.2, (N,)), const(-0.3, 0.1, (N,))]
            if adaptive:
                extra = [const(0.9, 0.95, (N,)), const(0.5, 1.5, (N,))]
                p = ALIFParams(consts[0], consts[1], *extra, consts[2], consts[3], reset, False)
                consts += extra
                ref = scan(recurrent_alif_step, x, None, p, w, spike)
                got = alif_sequence(x, None, p, spike, "fused", False, w)
            else:
                p = LIFParams(*consts, reset, False)
                ref = scan(recurrent_lif_step, x, None, p, w, spike)
                got = lif_sequence(x, None, p, spike, "auto", False, w)
            assert torch.equal(ref[0], got[0]) and 0 < ref[0].sum() < ref[0].numel()
            wts = torch.randn(T, B, N, generator=g, dtype=torch.float64)
            grads = [[torch.zeros_like(c) if gr is None else gr for c, gr in zip(
                [x, w, *consts], torch.autograd.grad((s * wts).sum() + (st.v ** 2).sum(), [x, w, *consts],
                                                     allow_unused=True))] for s, st in (ref, got)]
            for k, (a, b) in enumerate(zip(*grads)):
                if reset != "zero" and k == 5:    # v_reset only acts with reset="zero"
                    assert a.abs().max() == 0 and b.abs().max() == 0
                    continue
                assert a.abs().max() > 0
                torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9 * a.abs().max().item())


def test_feed_forward_alif_any_trailing_shape():
    layer = ALIF(shape=(2, 3, 3)).double()
    x = (torch.rand(12, 4, 2, 3, 3, dtype=torch.float64) * 0.8).requires_grad_()
    s_f, st_f = layer(x)
    gx_f = torch.autograd.grad(s_f.sum() + st_f.a.sum(), x)[0]
    layer.backend = "torch"
    s_r, st_r = layer(x)
    gx_r = torch.autograd.grad(s_r.sum() + st_r.a.sum(), x)[0]
    assert torch.equal(s_f, s_r) and s_r.sum() > 0 and all(torch.equal(a, b) for a, b in zip(st_f[:3], st_r[:3]))
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-10, atol=1e-12)


def test_no_grad_and_inference_match():
    layer = make_layer("alif", 13)
    x = make_input(17, 3, 13)[1].detach()
    with torch.no_grad():
        s, st = layer(x)
        layer.backend = "torch"
        s_r, st_r = layer(x)
    assert torch.equal(s, s_r) and all(torch.equal(a, b) for a, b in zip(st, st_r))


def test_gradcheck_where_the_surrogate_is_flat():
    """``torch.autograd.gradcheck`` of the whole layer (float64, every input and constant): with a
    narrow triangle surrogate that is 0 at every step's ``u - th`` the spikes do not move under small
    perturbations, and the hand-written adjoint must be the exact derivative of the forward map."""
    T, B, N = 6, 2, 3
    g = torch.Generator().manual_seed(11)
    spike = make_surrogate("triangle", slope=1000.0)          # support |u - th| < 0.001
    x = (torch.rand(T, B, N, generator=g, dtype=torch.float64) * 0.9).requires_grad_()
    w = (torch.randn(N, N, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
    v0, i0, a0 = (torch.rand(B, N, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    consts = [torch.tensor(c, dtype=torch.float64, requires_grad=True) for c in (0.8, 0.5, 0.9, 0.7, 1.0, -0.2)]
    for reset, adaptive in itertools.product(RESETS, (False, True)):
        def f(x, w, v0, i0, a0, dm, ds, da, beta, th, vr):
            if adaptive:
                p = ALIFParams(dm, ds, da, beta, th, vr, reset, True)
                s, st = alif_sequence(x, ALIFState(v0, i0, a0), p, spike, "fused", True, w)
                return s, st.v, st.i, st.a
            p = LIFParams(dm, ds, th, vr, reset, True)
            s, st = lif_sequence(x, LIFState(v0, i0), p, spike, "fused", True, w)
            return s, st.v, st.i

        args = (x, w, v0, i0, a0, *consts)
        with torch.no_grad():                                  # check the margin with the reference
            p = (ALIFParams(*consts[:4], consts[4], consts[5], reset) if adaptive
                 else LIFParams(consts[0], consts[1], consts[4], consts[5], reset))
            step = recurrent_alif_step if adaptive else recurrent_lif_step
            st0 = ALIFState(v0, i0, a0) if adaptive else LIFState(v0, i0)
            s, st = scan(step, x, st0, p, w, spike, record=True)
            v_prev = torch.cat([v0[None], st.v[:-1]])
            u = consts[0] * v_prev + st.i
            th = consts[4] + (consts[3] * torch.cat([a0[None], st.a[:-1]]) if adaptive else 0)
            assert (u - th).abs().min() > 0.002 and 0 < s.sum() < s.numel()
        assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6)
