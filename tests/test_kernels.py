"""Fused LIF backends against the reference ``scan`` of ``lif_step`` (independent code path).

The Triton kernels run under Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1`` is set
and the kernel module re-imported by a module fixture, then restored); they skip if Triton is not
installed.
"""

import importlib
import itertools
import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import num_threads

from spikegrad.kernels import (SparseInputLinear, li_sequence, lif_sequence, native_available,
                               resolve_backend, sparse_linear)
from spikegrad.neurons import IF, LI, LIF, LIFParams, LIFState, LIParams, LIState
from spikegrad.surrogates import SURROGATES, Surrogate, make_surrogate, register_surrogate

HALF = 1 / math.log(2)  # tau giving a per-step decay of exactly 0.5
RESETS = ["subtract", "zero", "none"]


class _Quadratic(Surrogate):
    """A user surrogate (no Triton version): ``max(0, slope - slope^2 |x|)``."""

    default_slope = 2.0

    @staticmethod
    def grad(x, slope):
        return (slope - slope**2 * x.abs()).clamp(min=0)

    @staticmethod
    def primitive(x, slope):  # pragma: no cover - not needed here
        raise NotImplementedError


BUILTIN = sorted(SURROGATES)
NATIVE = native_available()
needs_native = pytest.mark.skipif(not NATIVE, reason="the C kernels could not be built (no C compiler)")
# the two CPU fast paths: PyTorch ops ("fused") and C ("native")
CPU_FAST = ["fused", pytest.param("native", marks=needs_native)]


@pytest.fixture
def user_surrogate():
    """Register ``_Quadratic`` for one test, then remove it (the registry is global)."""
    register_surrogate("test_kernels_quadratic")(_Quadratic)
    yield "test_kernels_quadratic"
    SURROGATES.pop("test_kernels_quadratic", None)


def run_case(backend, dtype=torch.float64, reset="subtract", detach_reset=True, refractory=0,
             surrogate="fast_sigmoid", record=False, T=24, B=3, N=5, with_state=True, seed=0):
    """Spikes, state and gradients (x, v0, i0) of one LIF run; the loss touches every output."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, N, generator=g, dtype=torch.float64) * 0.9).to(dtype).requires_grad_()
    v0 = torch.rand(B, N, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    i0 = (torch.rand(B, N, generator=g, dtype=torch.float64) * 0.3).to(dtype).requires_grad_()
    w_t = torch.linspace(0.5, 1.5, T, dtype=torch.float64).to(dtype)[:, None, None]
    n = LIF(tau_mem=8.0, tau_syn=3.0, reset=reset, detach_reset=detach_reset, refractory=refractory,
            surrogate=surrogate, v_reset=-0.25, shape=(N,), backend=backend)
    with torch.no_grad():
        n.v_th.copy_(torch.linspace(0.8, 1.2, N))
    state = None
    if with_state:
        state = LIFState(v0, i0, torch.zeros(B, N, dtype=dtype) if refractory else None)
    s, st = n(x, state, record=record)
    loss = (s * w_t).sum() + (st.v ** 2).sum() + 0.3 * st.i.sum()
    inputs = (x, v0, i0) if with_state else (x,)
    grads = torch.autograd.grad(loss, inputs)
    return s, st, grads




def assert_same(ref, got, grad_rtol=1e-5, exact_states=True):
    s0, st0, g0 = ref
    s1, st1, g1 = got
    assert torch.equal(s0, s1), "spikes differ"
    assert 0 < s0.sum() < s0.numel(), "test input should give some spikes, not all"
    if exact_states:
        for f in ("v", "i", "r"):
            a, b = getattr(st0, f), getattr(st1, f)
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.equal(a, b), f"state {f} differs"
    for a, b in zip(g0, g1):
        scale = a.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(b, a, rtol=grad_rtol, atol=grad_rtol * scale)


# ---------------------------------------------------------------- fused PyTorch path (CPU)

@pytest.mark.parametrize("reset,detach_reset,refractory", list(itertools.product(RESETS, [True, False], [0, 2])))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", CPU_FAST)
def test_fused_matches_reference(reset, detach_reset, refractory, dtype, backend):
    for record in (False, True):
        kw = dict(dtype=dtype, reset=reset, detach_reset=detach_reset, refractory=refractory, record=record)
        assert_same(run_case("torch", **kw), run_case(backend, **kw))


@pytest.mark.parametrize("surrogate", BUILTIN)
@pytest.mark.parametrize("backend", CPU_FAST)
def test_fused_every_builtin_surrogate(surrogate, backend):
    kw = dict(dtype=torch.float32, surrogate=surrogate, reset="zero", detach_reset=False)
    assert_same(run_case("torch", **kw), run_case(backend, **kw))


@pytest.mark.parametrize("backend", CPU_FAST)
def test_fused_user_registered_surrogate(user_surrogate, backend):
    kw = dict(dtype=torch.float64, surrogate=user_surrogate, refractory=1)
    assert_same(run_case("torch", **kw), run_case(backend, **kw))


def test_fused_with_two_threads_matches_reference():
    with num_threads(2):
        for reset, refractory in (("subtract", 0), ("zero", 2)):
            kw = dict(dtype=torch.float32, reset=reset, refractory=refractory, T=12, B=8, N=1024, record=True)
            assert_same(run_case("torch", **kw), run_case("fused", **kw))


@pytest.mark.parametrize("backend", CPU_FAST)
def test_fused_long_sequence_spans_several_blocks(backend):
    kw = dict(dtype=torch.float32, T=61, with_state=False)  # 61 = 15 blocks of 4 + 1
    assert_same(run_case("torch", **kw), run_case(backend, **kw))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_half_precision_same_spikes(dtype):
    # spikes and states bit-identical; gradients accumulate in float32 here (the reference in the
    # input dtype), so they agree only to the input dtype's precision
    for reset in ("subtract", "zero"):
        kw = dict(dtype=dtype, reset=reset, T=30)
        assert_same(run_case("torch", **kw), run_case("fused", **kw), grad_rtol=3e-2)


def test_fused_lowmem_exact_forward_close_gradient():
    kw = dict(dtype=torch.float32, T=40)
    ref, low = run_case("fused", **kw), run_case("fused_lowmem", **kw)
    assert torch.equal(ref[0], low[0]) and torch.equal(ref[1].v, low[1].v)
    gx_ref, gx_low = ref[2][0], low[2][0]
    rel = ((gx_low - gx_ref).norm() / gx_ref.norm()).item()
    assert 0 < rel < 1e-2  # bfloat16 z: not exact, but close


@pytest.mark.parametrize("backend", CPU_FAST)
def test_fused_hand_computed_traces(backend):
    # the hand-worked traces of test_neurons, through the fused path
    x = torch.tensor([0.6, 0.6, 0.6, 0.0], dtype=torch.float64).reshape(-1, 1, 1)
    out, st = LIF(tau_mem=HALF, tau_syn=0.0, reset="subtract", backend=backend).double()(x, record=True)
    assert out.flatten().tolist() == [0, 0, 1, 0]
    assert st.v.flatten().tolist() == pytest.approx([0.6, 0.9, 0.05, 0.025])
    out, st = IF(refractory=1, backend=backend).double()(torch.full((4, 1, 1), 1.5, dtype=torch.float64), record=True)
    assert out.flatten().tolist() == [1, 0, 1, 0] and st.v.flatten().tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("backend", CPU_FAST)
def test_fused_conv_shaped_input_and_per_channel_constants(backend):
    n_ref = LIF(shape=(4, 1, 1), backend="torch")
    n = LIF(shape=(4, 1, 1), backend=backend)
    with torch.no_grad():
        for m in (n_ref, n):
            m.v_th.copy_(torch.tensor([0.7, 0.9, 1.1, 1.3]).view(4, 1, 1))
    x = (torch.rand(9, 2, 4, 3, 3) * 0.8).requires_grad_()
    (a, sa), (b, sb) = n_ref(x), n(x)
    assert torch.equal(a, b) and torch.equal(sa.v, sb.v)
    ga, = torch.autograd.grad(a.sum(), x)
    gb, = torch.autograd.grad(b.sum(), x)
    torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-6)


def test_fused_saves_four_bytes_per_neuron_step():
    T, B, N = 32, 4, 16
    saved = {}
    for backend in ("torch", "fused", "fused_lowmem") + (("native",) if NATIVE else ()):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        x = torch.rand(T, B, N, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            s, _ = LIF(backend=backend)(x)
        saved[backend] = total / (T * B * N)
        s.sum().backward()
    assert 4.0 <= saved["fused"] < 4.1        # z = v - v_th in float32, plus a few scalars
    assert 4.0 <= saved["native"] < 4.1 or not NATIVE
    assert 2.0 <= saved["fused_lowmem"] < 2.1  # z in bfloat16
    assert saved["torch"] > saved["fused"]


def test_backend_validation_and_fallbacks(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        LIF(backend="cuda")
    with pytest.raises(ValueError, match="fused_lowmem"):
        IF(backend="fast")
    x = torch.rand(5, 2, 3)
    p = LIF().params()
    assert resolve_backend("auto", x, p, make_surrogate("atan")) == ("native" if NATIVE else "fused")
    assert resolve_backend("auto", x.bfloat16(), p, make_surrogate("atan")) == "fused"
    assert resolve_backend("torch", x, p, make_surrogate("atan")) == "torch"
    # learnable constants, smooth surrogates and custom forwards run on the reference scan
    assert resolve_backend("fused", x, LIF(learn_tau=True).params(), make_surrogate("atan")) == "torch"
    assert resolve_backend("fused", x, p, make_surrogate("atan", spiking=False)) == "torch"
    if not _triton_installed():
        with pytest.raises(ValueError, match="triton"):
            resolve_backend("triton", x, p, make_surrogate("atan"))
    else:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="CUDA"):
            resolve_backend("triton", x, p, make_surrogate("atan"))


def test_learnable_constants_fall_back_and_get_gradients():
    n = LIF(learn_tau=True, learn_threshold=True, shape=(5,), backend="fused")
    n(torch.rand(10, 3, 5) * 0.5)[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in n.parameters())


def test_functional_lif_sequence_matches_scan():
    p = LIFParams(0.9, 0.5, 1.0, 0.0, "subtract", True, 0)
    x = torch.rand(12, 3, 4, dtype=torch.float64) * 1.2
    a, sa = lif_sequence(x, None, p, make_surrogate("triangle"), backend="torch")
    b, sb = lif_sequence(x, None, p, make_surrogate("triangle"), backend="fused")
    assert torch.equal(a, b) and torch.equal(sa.v, sb.v)


# ---------------------------------------------------------------- C kernels ("native")

@needs_native
def test_native_record_and_initial_state_variants():
    # every combination of recorded states, given initial state and reset mode, float32 and float64
    for reset, record, with_state, dtype in itertools.product(RESETS, [False, True], [False, True],
                                                              [torch.float32, torch.float64]):
        kw = dict(dtype=dtype, reset=reset, record=record, with_state=with_state, refractory=1, T=15)
        assert_same(run_case("torch", **kw), run_case("native", **kw))


@needs_native
def test_native_split_over_threads_and_many_backward_chunks(monkeypatch):
    import spikegrad.kernels.native as native

    monkeypatch.setattr(native, "MIN_PART", 64)        # several parts even for a small layer
    monkeypatch.setattr(native, "CHUNK_BYTES", 3 * 1024)  # backward in many chunks of steps
    with num_threads(2):
        assert native._parts(1000) == [(0, 500), (500, 1000)]
        for reset, detach, refractory in (("subtract", True, 0), ("zero", False, 2)):
            for surrogate in ("fast_sigmoid", "gaussian"):  # computed in C / in PyTorch chunk by chunk
                kw = dict(dtype=torch.float32, reset=reset, detach_reset=detach, refractory=refractory,
                          T=37, B=8, N=40, record=True, surrogate=surrogate)
                assert_same(run_case("torch", **kw), run_case("native", **kw))


def lif_runs(base, T, reset, detach_reset, surrogate):
    """Spikes, final state and gradients (input, v0, i0) of a LIF with one value per constant on
    the reference ``scan`` and on ``native``: input ``base`` [T or 1, B, N] (1: held over T steps)."""
    runs = []
    for backend in ("torch", "native"):
        leaf = base.clone().requires_grad_()
        g = torch.Generator().manual_seed(1)
        B, N = base.shape[1:]
        v0 = torch.rand(B, N, generator=g).requires_grad_()
        i0 = (torch.rand(B, N, generator=g) * 0.3).requires_grad_()
        n = LIF(tau_mem=8.0, tau_syn=3.0, reset=reset, detach_reset=detach_reset, surrogate=surrogate,
                v_reset=-0.25, backend=backend)
        s, st = n(leaf.expand(T, -1, -1), LIFState(v0, i0, None))
        w_t = torch.linspace(0.5, 1.5, T)[:, None, None]
        loss = (s * w_t).sum() + (st.v ** 2).sum() + 0.3 * st.i.sum()
        runs.append((s, st, torch.autograd.grad(loss, (leaf, v0, i0))))
    return runs


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "atan", "triangle", "boxcar"])
@pytest.mark.parametrize("reset,detach_reset", [(r, d) for r in RESETS for d in (True, False)])
def test_native_whole_blocks_of_one_value_constants_match_reference(reset, detach_reset, surrogate, held,
                                                                     threads, monkeypatch):
    # One value per constant and 4 x 45 = 180 neurons: two whole blocks of 64 run the kernels' loops
    # for that case (backward recomputes z from x), the last 52 the general loops; an input held over
    # time is read as one row. Against the reference scan.
    import spikegrad.kernels.native as native

    monkeypatch.setattr(native, "MIN_PART", 64)  # two threads even for this small layer
    T = 40
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1 if held else T, 4, 45, generator=g) * 0.9
    with num_threads(threads):
        assert_same(*lif_runs(base, T, reset, detach_reset, surrogate))


@pytest.mark.slow  # the reference scan over 64 x 65,536 neurons
@needs_native
def test_native_large_layer_matches_reference():
    # 64 steps x 65,536 neurons: spikes and input gradient (16 MiB each) are written with
    # non-temporal stores (lif.c's STREAM_MIN), whole blocks on two threads
    T = 64
    base = torch.rand(T, 32, 2048, generator=torch.Generator().manual_seed(0)) * 0.9
    with num_threads(2):
        assert_same(*lif_runs(base, T, "zero", True, "fast_sigmoid"))


@needs_native
def test_native_expanded_leaf_input_gets_its_gradient_per_step():
    # a leaf that is itself an expanded tensor needs one gradient per step, not their sum in row 0
    x = (torch.rand(1, 2, 70) * 0.9).expand(25, -1, -1).requires_grad_()
    grads = [torch.autograd.grad(LIF(backend=backend)(x)[0].sum(), x)[0] for backend in ("torch", "native")]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
    assert grads[0][-1].abs().sum() > 0


@needs_native
def test_native_computes_the_rational_surrogates_itself():
    from spikegrad.kernels.native import surrogate_code

    codes = {name: surrogate_code(SURROGATES[name].grad, torch.float32, 3.0) for name in BUILTIN}
    assert codes == {"atan": 3, "boxcar": 7, "exponential": 0, "fast_sigmoid": 1, "gaussian": 0,
                     "sigmoid": 0, "superspike_asymptotic": 0, "triangle": 4}
    assert surrogate_code(_Quadratic.grad, torch.float32, 3.0) == 0


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("slope", [0.3, 1.0, 4.0, 25.0, 100.0])
def test_native_surrogate_formulas_equal_the_python_definitions(dtype, slope):
    # the C formulas, evaluated by the kernels' own code, against each surrogate's grad
    from spikegrad.kernels.native import SURROGATE_CODES, kernel_surrogate_grad

    z = torch.linspace(-3.0, 3.0, 2001, dtype=torch.float64).to(dtype) / slope
    for name, code in SURROGATE_CODES.items():
        want = SURROGATES[name].grad(z, torch.tensor(slope, dtype=dtype))
        torch.testing.assert_close(kernel_surrogate_grad(code, z, slope), want, rtol=1e-6 if dtype == torch.float32
                                   else 1e-12, atol=0.0)


@needs_native
def test_native_refuses_a_formula_that_differs_from_the_definition(monkeypatch):
    # a kernel formula mapped to the wrong surrogate is detected and not used: the derivative is then
    # computed from the surrogate's own grad, so gradients stay equal to the reference
    from spikegrad.kernels import native

    monkeypatch.setitem(native.SURROGATE_CODES, "fast_sigmoid", 3)  # the atan formula
    native._verified.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="differs from FastSigmoid.grad"):
            assert native.surrogate_code(SURROGATES["fast_sigmoid"].grad, torch.float32, 25.0) == 0
        kw = dict(dtype=torch.float32, surrogate="fast_sigmoid", T=12)
        assert_same(run_case("torch", **kw), run_case("native", **kw))
        # the operator path (torch.compile) asks backward to recompute z by the surrogate's name alone:
        # backward then reruns the forward to store z and uses the surrogate's own grad
        x = torch.rand(12, 70) * 1.5
        consts = [torch.tensor([v]) for v in (0.9, 0.6, 1.0, 0.0)]
        grad_fn, slope, g = SURROGATES["fast_sigmoid"].grad, torch.tensor(25.0), torch.rand(12, 70)
        z = native.lif_forward(x, None, None, None, *consts, "subtract", 0, False, True, 12)[-1]
        want = native.lif_backward(z, *consts, slope, grad_fn, "subtract", True, g, None, None, None, None)
        got = native.lif_backward(None, *consts, slope, grad_fn, "subtract", True, g, None, None, None, None,
                                  recompute=(x, None, None, None, 0), T=12)
        for a, b in zip(want, got):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
        assert want[0].abs().sum() > 0
    finally:
        native._verified.cache_clear()


@needs_native
def test_native_gradient_broadcast_over_time_and_partial_outputs():
    # x.sum() hands backward a gradient broadcast over time (stride 0); only v used: no spike gradient
    x = (torch.rand(20, 3, 6) * 0.9).requires_grad_()
    grads = []
    for backend in ("torch", "native"):
        s, st = LIF(backend=backend)(x)
        g1, = torch.autograd.grad(s.sum(), x)
        s, st = LIF(backend=backend)(x)
        g2, = torch.autograd.grad(st.v.sum(), x)
        grads.append((g1, g2))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@needs_native
@pytest.mark.parametrize("record", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_li_matches_reference(record, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(25, 3, 4, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    v0 = torch.randn(3, 4, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    i0 = torch.randn(3, 4, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w_t = torch.linspace(-1, 1, 25, dtype=dtype)[:, None, None]
    res = []
    for backend in ("torch", "native"):
        li = LI(tau_mem=6.0, tau_syn=2.0, shape=(4,), backend=backend).to(dtype)
        with torch.no_grad():
            li.tau_mem.copy_(torch.tensor([3.0, 6.0, 9.0, 12.0]))
        v, st = li(x, LIState(v0, i0), record=record)
        loss = (v * w_t).sum() + (st.v ** 2).sum() + 0.5 * st.i.sum()
        res.append((v, st, torch.autograd.grad(loss, (x, v0, i0))))
    (va, sa, ga), (vb, sb, gb) = res
    assert torch.equal(va, vb) and torch.equal(sa.v, sb.v) and torch.equal(sa.i, sb.i)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6 * a.abs().max().item())


def test_li_backend_resolution_and_fallbacks():
    x = torch.rand(6, 2, 3)
    p = LIParams(torch.tensor(0.9), torch.tensor(0.5))
    ref, _ = li_sequence(x, None, p, backend="torch")
    for backend in ("auto", "torch"):
        out, _ = li_sequence(x, None, p, backend=backend)
        assert torch.equal(out, ref)
    # learnable time constants: the reference scan, with gradients for them
    li = LI(learn_tau=True)
    li(torch.rand(6, 2, 3))[0].sum().backward()
    assert li.log_tau_mem.grad is not None and li.log_tau_mem.grad.abs() > 0
    with pytest.raises(ValueError, match="backend must be one of"):
        LI(backend="fused")


def test_native_build_failure_is_reported(monkeypatch, tmp_path):
    import spikegrad.kernels as kernels
    import spikegrad.kernels.native as native

    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(kernels, "_warned", set())
    assert not native.available() and "no-such-compiler" in native.build_error()
    x = torch.rand(4, 2, 3)
    p = LIF().params()
    with pytest.warns(RuntimeWarning, match="C kernels could not be built"):
        assert resolve_backend("auto", x, p, make_surrogate("atan")) == "fused"
    with pytest.raises(ValueError, match="C compiler"):
        resolve_backend("native", x, p, make_surrogate("atan"))
    with pytest.raises(ValueError, match="C compiler"):
        LI(backend="native")(x)
    assert list(tmp_path.rglob("*.so")) == []  # nothing half-written left behind


@pytest.mark.slow
@needs_native
def test_native_builds_into_cache_once(monkeypatch, tmp_path):
    import spikegrad.kernels.native as native

    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path))
    assert native.available() and native.build_error() is None
    built = list((tmp_path / "native").glob("*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_state", {})       # a new process: loads, does not rebuild
    assert native.available() and built[0].stat().st_mtime_ns == stamp
    x = torch.rand(5, 2, 3)
    p = LIF().params()
    assert resolve_backend("native", x, p, make_surrogate("atan")) == "native"
    assert resolve_backend("native", x.half(), p, make_surrogate("atan")) == "fused"


@pytest.mark.slow
@needs_native
def test_native_without_openmp_splits_on_python_threads(monkeypatch, tmp_path):
    # a compiler that cannot build with OpenMP: the library is built without it and the neurons
    # (and an event-driven layer's rows) are split on the Python thread pool; same results
    import spikegrad.kernels.native as native
    from spikegrad.kernels import events

    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "OPENMP", ("-fopenmp", "-mno-such-option"))  # fails: built without
    monkeypatch.setattr(native, "MIN_PART", 64)
    assert native.available() and native.load().spikegrad_openmp() == 0
    T = 30
    base = torch.rand(T, 4, 45, generator=torch.Generator().manual_seed(0)) * 0.9
    x = (torch.rand(200, 70) < 0.2).float()
    w, b = torch.randn(30, 70), torch.randn(30)
    with num_threads(2):
        assert_same(*lif_runs(base, T, "subtract", True, "fast_sigmoid"))
        y = events.event_linear(x, events.linear_table(w, b), 30, binary=True)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- sparse-input linear layer

def test_sparse_linear_matches_dense_and_its_gradients():
    g = torch.Generator().manual_seed(3)
    times = torch.randint(0, 40, (6, 20), generator=g)
    x = torch.zeros(40, 6, 20)
    x.scatter_(0, times[None], 1.0)      # latency code: one spike per input
    x[:, :, :5] = 0                        # and some silent inputs
    dense = torch.nn.Linear(20, 7)
    sparse = SparseInputLinear.from_linear(dense)
    y_d, y_s = dense(x), sparse(x)
    torch.testing.assert_close(y_s, y_d)
    gd = torch.autograd.grad((y_d ** 2).sum(), (dense.weight, dense.bias))
    gs = torch.autograd.grad((y_s ** 2).sum(), (sparse.weight, sparse.bias))
    for a, b in zip(gd, gs):
        torch.testing.assert_close(b, a)
    # an input that needs a gradient, or a dense one, takes F.linear
    xg = torch.rand(4, 3, 20, requires_grad=True)
    out = sparse_linear(xg, dense.weight, dense.bias)
    torch.testing.assert_close(out, F.linear(xg, dense.weight, dense.bias))
    assert torch.autograd.grad(out.sum(), xg)[0].shape == xg.shape
    with pytest.raises(ValueError, match="max_density"):
        sparse_linear(x, dense.weight, max_density=2.0)


# ---------------------------------------------------------------- Triton kernels (interpreter)

def _triton_installed():
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _aot_compile(kernel, ptr_types: dict, constexprs: dict, fp_fusion: bool):
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget

    names = list(inspect.signature(kernel.fn).parameters)
    sig = {n: ptr_types.get(n, "*fp32") if n.endswith("_ptr") else "i32" for n in names if n not in constexprs}
    sig.update({k: "constexpr" for k in constexprs})
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n.endswith("_ptr") or n == "M"}
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": fp_fusion, "num_warps": 4})


def test_triton_kernels_compile_for_sm90():
    """Compile to PTX and cubin for an H100 without a GPU: catches what only the compiler rejects."""
    pytest.importorskip("triton")
    from triton.runtime.interpreter import InterpretedFunction

    import spikegrad.kernels.triton_lif as mod

    if isinstance(mod._lif_fwd_kernel, InterpretedFunction):
        pytest.skip("TRITON_INTERPRET=1 is set for the whole session")
    fwd = dict(BLOCK=mod.BLOCK, RESET=0, REFRAC=0, HAS_STATE=True, RECORD=True, PARAM_VEC=True, ROUND=0,
               SAVE_BF16=False, STORE_Z=True)
    variants = [({}, fwd), ({"x_ptr": "*bf16"}, dict(fwd, RESET=1, REFRAC=3, ROUND=1, RECORD=False)),
                ({"z_ptr": "*bf16"}, dict(fwd, RESET=2, PARAM_VEC=False, SAVE_BF16=True, HAS_STATE=False))]
    try:
        for ptrs, cs in variants:
            ptx = _aot_compile(mod._lif_fwd_kernel, ptrs, cs, fp_fusion=False).asm["ptx"]
            assert "fma" not in ptx  # no contraction: rounding as the reference
            assert "st.global.v4" in ptx  # vectorised stores when M % 16 == 0
        bwd = dict(BLOCK=mod.BLOCK, RESET=1, DETACH=False, REFRAC=True, SURR=1, PARAM_VEC=True, HAS_GS=True,
                   HAS_GVREC=True, HAS_GIREC=True, HAS_GVT=True, HAS_GIT=True, WANT_G0=True)
        for surr in sorted(set(mod.SURROGATE_CODES.values())):
            _aot_compile(mod._lif_bwd_kernel, {}, dict(bwd, SURR=surr), fp_fusion=True)
    except RuntimeError as e:  # e.g. a Triton build without the NVIDIA backend tools
        if "ptxas" in str(e) or "backend" in str(e).lower():
            pytest.skip(f"cannot compile for CUDA here: {e}")
        raise


@pytest.fixture(scope="module")
def triton_lif():
    """The Triton kernel module re-imported under ``TRITON_INTERPRET=1`` (CPU tensors)."""
    pytest.importorskip("triton")
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    import spikegrad.kernels.triton_lif as mod

    mod = importlib.reload(mod)
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(mod._lif_fwd_kernel, InterpretedFunction)
    yield mod
    if old is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = old
    importlib.reload(mod)




@pytest.mark.parametrize("reset,detach_reset,refractory", list(itertools.product(RESETS, [True, False], [0, 2])))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_matches_reference(triton_lif, reset, detach_reset, refractory):
    kw = dict(dtype=torch.float32, reset=reset, detach_reset=detach_reset, refractory=refractory, T=16)
    for record in (False, True):
        assert_same(run_case("torch", record=record, **kw), run_case("triton", record=record, **kw))


@pytest.mark.parametrize("surrogate", BUILTIN)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_every_builtin_surrogate(triton_lif, surrogate):
    assert triton_lif.supports_surrogate(make_surrogate(surrogate))
    kw = dict(dtype=torch.float32, surrogate=surrogate, reset="subtract", detach_reset=False, T=16)
    assert_same(run_case("torch", **kw), run_case("triton", **kw))


def test_triton_refuses_a_formula_that_differs_from_the_definition(triton_lif, monkeypatch):
    monkeypatch.setitem(triton_lif.SURROGATE_CODES, "atan", 1)  # the fast_sigmoid formula
    monkeypatch.setattr(triton_lif, "_verified", {})
    with pytest.warns(RuntimeWarning, match="differs from ATan.grad"):
        assert not triton_lif.supports_surrogate(make_surrogate("atan"))
    assert resolve_backend("triton", torch.rand(6, 2, 3), LIF().params(), make_surrogate("atan")) == "fused"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_user_surrogate_falls_back(triton_lif, user_surrogate):
    sur = make_surrogate(user_surrogate)
    assert not triton_lif.supports_surrogate(sur)
    x = torch.rand(6, 2, 3)
    assert resolve_backend("triton", x, LIF().params(), sur) == "fused"
    kw = dict(dtype=torch.float32, surrogate=user_surrogate, T=16)
    assert_same(run_case("torch", **kw), run_case("triton", **kw))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_half_precision_same_spikes(triton_lif, dtype):
    kw = dict(dtype=dtype, reset="zero", T=24, N=37)  # N not a multiple of anything
    assert_same(run_case("torch", **kw), run_case("triton", **kw), grad_rtol=3e-2)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_lowmem_and_no_state(triton_lif):
    kw = dict(dtype=torch.float32, T=20, with_state=False, B=4, N=150)  # M = 600: two blocks
    exact, low = run_case("triton", **kw), run_case("triton_lowmem", **kw)
    assert_same(run_case("torch", **kw), exact)
    assert torch.equal(exact[0], low[0])
    rel = ((low[2][0] - exact[2][0]).norm() / exact[2][0].norm()).item()
    assert 0 < rel < 1e-2
    # the CPU low-memory path rounds z the same way (bfloat16, nearest even)
    torch.testing.assert_close(run_case("fused_lowmem", **kw)[2][0], low[2][0], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_inference_without_grad(triton_lif):
    x = torch.rand(15, 4, 9) * 0.8
    with torch.no_grad():
        a, sa = LIF(refractory=1, backend="triton")(x)
    b, sb = LIF(refractory=1, backend="torch")(x)
    assert torch.equal(a, b) and torch.equal(sa.v, sb.v) and torch.equal(sa.r, sb.r)
