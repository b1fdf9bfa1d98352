import copy
import pickle

import pytest
import torch

from spikegrad.surrogates import SURROGATES, Surrogate, make_surrogate, register_surrogate, spike_fn

NAMES = sorted(SURROGATES)


def test_all_required_surrogates_registered():
    required = {"fast_sigmoid", "sigmoid", "atan", "triangle", "gaussian", "exponential", "boxcar"}
    assert required <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_forward_is_exact_heaviside_and_keeps_dtype(name, dtype):
    x = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 0.5, 3.0], dtype=dtype)
    out = make_surrogate(name)(x)
    assert out.dtype == dtype
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # strict: x == 0 gives no spike


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("slope", [0.75, 3.0])  # exact in the float32 slope buffer
def test_backward_equals_derivative_of_primitive(name, slope):
    s = make_surrogate(name, slope=slope)
    # avoid the kinks of the piecewise surrogates (|x| = 1/slope, 1/(2 slope)) and x = 0, where autograd's
    # derivative of |x| is 0 (linspace's middle point is exactly 0 on ATEN_CPU_CAPABILITY=default, -6e-17 with SIMD)
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    x = x[((x.abs() - 1 / slope).abs() > 1e-3) & ((x.abs() - 0.5 / slope).abs() > 1e-3) & (x.abs() > 1e-3)]
    x1 = x.clone().requires_grad_(True)
    s(x1).backward(torch.ones_like(x1))
    x2 = x.clone().requires_grad_(True)
    type(s).primitive(x2, torch.tensor(slope, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    # and the primitive really is an antiderivative: central finite differences
    h = 1e-6
    p = type(s).primitive
    fd = (p(x + h, torch.tensor(slope, dtype=torch.float64)) - p(x - h, torch.tensor(slope, dtype=torch.float64))) / (2 * h)
    torch.testing.assert_close(x1.grad, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_primitive_is_zero_at_minus_infinity_and_monotone(name):
    s = make_surrogate(name, slope=2.0)
    x = torch.linspace(-200, 200, 4001, dtype=torch.float64)
    y = type(s).primitive(x, torch.tensor(2.0, dtype=torch.float64))
    assert abs(y[0].item()) < 1e-2
    assert (y[1:] - y[:-1] >= -1e-12).all()


@pytest.mark.parametrize("name", NAMES)
def test_pickle_and_deepcopy_round_trip(name):
    s = make_surrogate(name, slope=1.5)
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    for clone in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert type(clone) is type(s) and float(clone.slope) == 1.5
        x.grad = None
        clone(x).sum().backward()
        g1 = x.grad.clone()
        x.grad = None
        s(x).sum().backward()
        torch.testing.assert_close(g1, x.grad)


def test_slope_change_changes_gradient_not_forward():
    s = make_surrogate("fast_sigmoid", slope=1.0)
    x = torch.tensor([0.5], requires_grad=True)
    s(x).sum().backward()
    assert x.grad.item() == pytest.approx(1 / 1.5**2)
    s.slope.fill_(4.0)
    x.grad = None
    out = s(x)
    out.sum().backward()
    assert out.item() == 1.0 and x.grad.item() == pytest.approx(1 / 3.0**2)


def test_non_spiking_forward_is_the_primitive():
    s = make_surrogate("sigmoid", slope=2.0, spiking=False)
    x = torch.tensor([-1.0, 0.0, 1.0])
    torch.testing.assert_close(s(x), torch.sigmoid(2 * x))


def test_functional_spike_fn_matches_module():
    from spikegrad.surrogates import ATan

    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    spike_fn(x, 3.0, ATan.grad).sum().backward()
    g = x.grad.clone()
    x.grad = None
    ATan(slope=3.0)(x).sum().backward()
    torch.testing.assert_close(g, x.grad)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown surrogate 'nope'.*fast_sigmoid"):
        make_surrogate("nope")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_slope(bad):
    with pytest.raises(ValueError, match="slope"):
        make_surrogate("atan", slope=bad)


def test_instance_is_deep_copied():
    s = make_surrogate("triangle", slope=2.0)
    c = make_surrogate(s)
    c.slope.fill_(9.0)
    assert float(s.slope) == 2.0


def test_user_can_register_a_surrogate():
    @register_surrogate("test_quadratic")
    class Quadratic(Surrogate):
        default_slope = 1.0

        @staticmethod
        def grad(x, slope):
            return 0.75 * slope * (1 - (slope * x).pow(2)).clamp(min=0)

        @staticmethod
        def primitive(x, slope):
            u = (slope * x).clamp(-1, 1)
            return 0.5 + 0.75 * (u - u.pow(3) / 3)

    try:
        s = make_surrogate("test_quadratic", slope=2.0)
        x = torch.tensor([0.25, 1.0], requires_grad=True)
        y = s(x)
        y.sum().backward()
        assert y.tolist() == [1.0, 1.0]
        torch.testing.assert_close(x.grad, torch.tensor([0.75 * 2 * (1 - 0.25), 0.0]))
        from spikegrad.neurons import LIF

        assert isinstance(LIF(surrogate="test_quadratic").surrogate, Quadratic)
        with pytest.raises(ValueError, match="already registered"):
            register_surrogate("fast_sigmoid")(Quadratic)
    finally:
        SURROGATES.pop("test_quadratic", None)


@pytest.mark.parametrize("name", ["fast_sigmoid", "atan"])
def test_compiles_fullgraph(name):
    s = make_surrogate(name)

    def f(x):
        return s(x * 2 - 1)

    x = torch.randn(32, requires_grad=True)
    y = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    y.sum().backward()
    g = x.grad.clone()
    x.grad = None
    f(x).sum().backward()
    torch.testing.assert_close(g, x.grad)
