"""The core's contracts: ALIF against a slow reference, model state across chunks, learnable and
per-neuron constants that stay valid, the refusals, and the one-way import graph."""

import ast
import graphlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spikegrad
from spikegrad import ALIF, IF, LI, LIF, SpikingConvNet, SpikingMLP, detach_state
from spikegrad.functional import ALIFState, LIFState, LIState, NetworkState

ROOT = Path(spikegrad.__file__).parent


# ------------------------------------------------------------------------------ ALIF
def alif_reference(x, tau_mem, tau_syn, tau_ada, beta, v_th, reset):
    """Plain Python floats, one neuron at a time: the LSNN neuron of Bellec et al. (2018)."""
    dm, ds, da = math.exp(-1 / tau_mem), math.exp(-1 / tau_syn), math.exp(-1 / tau_ada)
    T, N = len(x), len(x[0])
    out = [[0.0] * N for _ in range(T)]
    thresholds = [[0.0] * N for _ in range(T)]
    for n in range(N):
        v = i = a = 0.0
        for t in range(T):
            i = ds * i + x[t][n]
            v = dm * v + i
            th = v_th + beta * a
            s = 1.0 if v - th > 0 else 0.0
            if s and reset == "subtract":
                v -= th
            elif s and reset == "zero":
                v = 0.0
            a = da * a + (1 - da) * s
            out[t][n], thresholds[t][n] = s, th
    return out, thresholds


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_alif_matches_a_slow_reference(reset):
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(60, 1, 7, generator=g, dtype=torch.float64) * 0.6)
    n = ALIF(tau_mem=10.0, tau_syn=3.0, tau_ada=30.0, beta=2.5, reset=reset).double()
    s, st = n(x, record=True)
    want, th = alif_reference(x[:, 0].tolist(), 10.0, 3.0, 30.0, 2.5, 1.0, reset)
    assert s[:, 0].tolist() == want
    assert 0 < s.sum() < s.numel()
    # the threshold really adapts: the recorded adaptation gives the reference's thresholds
    a_before = torch.cat([torch.zeros(1, 1, 7, dtype=torch.float64), st.a[:-1]])
    torch.testing.assert_close((1.0 + 2.5 * a_before)[:, 0], torch.tensor(th, dtype=torch.float64))


def test_alif_without_adaptation_is_lif_and_adaptation_lowers_the_rate():
    x = torch.rand(80, 4, 6) * 0.5
    plain = LIF(tau_mem=10.0, tau_syn=3.0, backend="torch")(x)[0]
    assert torch.equal(ALIF(tau_mem=10.0, tau_syn=3.0, beta=0.0)(x)[0], plain)
    adapted = ALIF(tau_mem=10.0, tau_syn=3.0, tau_ada=50.0, beta=5.0)(x)[0]
    assert adapted.sum() < plain.sum()


def test_alif_trains_and_step_equals_forward():
    n = ALIF(learn_tau=True, learn_threshold=True, shape=(5,))
    x = torch.rand(12, 3, 5)
    s, st = n(x)
    s.sum().backward()
    assert {k for k, _ in n.named_parameters()} == {"log_tau_mem", "log_tau_syn", "log_tau_ada", "log_v_th"}
    assert all(p.grad is not None for p in n.parameters())
    state, outs = None, []
    for x_t in x:
        o, state = n.step(x_t, state)
        outs.append(o)
    assert torch.equal(torch.stack(outs), s) and isinstance(state, ALIFState)
    with pytest.raises(ValueError, match="backend"):
        ALIF(backend="native")


# ------------------------------------------------------------------------------ model state
@pytest.mark.parametrize("make,shape", [
    (lambda: SpikingMLP([20, 16, 16, 4]), (30, 3, 20)),
    (lambda: SpikingMLP([20, 16, 4], record_v=False, sparse_input=True), (30, 3, 20)),
    (lambda: SpikingConvNet((1, 8, 8), channels=(4,), hidden=(12,), n_classes=3), (30, 3, 1, 8, 8)),
])
def test_chunked_run_equals_one_run(make, shape):
    torch.manual_seed(0)
    model = make()
    x = (torch.rand(shape) < 0.3).float()
    whole = model(x)
    state, readouts, spikes = None, [], []
    for chunk in x.split([7, 1, 13, 9]):
        out = model(chunk, state)
        state = out.state
        readouts.append(out.readout)
        spikes.append(out.spikes[0])
    assert torch.equal(torch.cat(spikes), whole.spikes[0]) and whole.spikes[0].sum() > 0
    torch.testing.assert_close(torch.cat(readouts), whole.readout, rtol=0, atol=0)


def test_truncated_bptt_with_detached_state():
    model = SpikingMLP([10, 8, 3])
    x = torch.rand(20, 2, 10)
    out = model(x[:10])
    out2 = model(x[10:], detach_state(out.state))
    out2.readout.sum().backward()  # only the second chunk's graph
    assert model.layers[0].module.weight.grad is not None
    with pytest.raises(ValueError, match=r"SpikingMLP: state must be None or the .state of a previous call"):
        model(x, state=(None,))


def test_network_state_checks_detaches_and_moves():
    a, b = LIFState(torch.rand(2, 3), torch.rand(2, 3)), LIState(torch.rand(2, 4), torch.rand(2, 4))
    assert NetworkState.of("net", None, 3) == (None, None, None)
    st = NetworkState.of("net", (a, b), 2)  # a plain tuple of layer states is taken as is
    assert type(st) is NetworkState and st[0] is a and st[1] is b and NetworkState.of("net", st, 2) is st
    for bad, got in [((a,), "a tuple of 1"), (LIState(a, a), "a LIState .the state of one layer."),
                     ([a, b], "list"), (a.v, "Tensor")]:
        with pytest.raises(ValueError, match=rf"^MyNet: state must be None or the .state of a previous call .a "
                                             rf"NetworkState of 2 layer states.*got {got}; pass state=None"):
            NetworkState.of("MyNet", bad, 2)
    x = torch.rand(6, 2, 3, requires_grad=True)
    _, final = LIF(tau_mem=4.0, backend="torch")(x)
    st = NetworkState((final, None, NetworkState((b,))))
    cut = st.detach()
    assert type(cut) is NetworkState and type(cut[2]) is NetworkState and cut[1] is None and cut[0].r is None
    assert final.v.grad_fn is not None and cut[0].v.grad_fn is None and not cut[0].v.requires_grad
    assert torch.equal(cut[0].v, final.v) and torch.equal(cut[2][0].i, b.i)
    wide = st.to(torch.float64)
    assert type(wide) is NetworkState and wide[0].v.dtype == torch.float64 and wide[2][0].v.dtype == torch.float64
    assert repr(NetworkState((None,))) == "NetworkState(None,)"


# ------------------------------------------------------------------------------ constants
def test_learnable_time_constants_stay_valid_under_adversarial_steps():
    n = LIF(tau_mem=5.0, tau_syn=2.0, learn_tau=True, learn_threshold=True, shape=(4,))
    li = LI(learn_tau=True)
    opt = torch.optim.SGD([*n.parameters(), *li.parameters()], lr=1e6)
    for sign in (1.0, -1.0, 1.0):
        opt.zero_grad()
        for p in [*n.parameters(), *li.parameters()]:
            p.grad = torch.full_like(p, sign)  # huge steps both ways
        opt.step()
        for m in (n, li):
            p = m.params()
            assert torch.all((p.decay_mem >= 0) & (p.decay_mem <= 1)) and torch.all(p.decay_syn <= 1)
            assert torch.all(m.tau_mem >= 0) and not torch.isnan(m.tau_mem).any()
        assert torch.all(n.v_th >= 0)
    # a small step moves tau the way the gradient says
    m = LIF(tau_mem=10.0, learn_tau="mem")
    before = float(m.tau_mem.detach())
    torch.optim.SGD(m.parameters(), lr=0.1).zero_grad()
    m.log_tau_mem.grad = torch.tensor(-1.0)
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert float(m.tau_mem.detach()) == pytest.approx(before * math.exp(0.1))


def test_learn_tau_refuses_constants_that_cannot_be_learned():
    with pytest.raises(ValueError, match="tau_syn=0 .no synaptic filter. has no finite time constant"):
        LIF(tau_syn=0.0, learn_tau=True)
    assert {k for k, _ in LIF(tau_syn=0.0, learn_tau="mem").named_parameters()} == {"log_tau_mem"}
    with pytest.raises(ValueError, match="learn_tau must be"):
        LIF(learn_tau="both")


def test_old_checkpoints_of_learnable_constants_load():
    n = LIF(tau_mem=7.0, learn_tau="mem")
    n.load_state_dict({"tau_mem": torch.tensor(12.0), "tau_syn": torch.tensor(5.0), "v_th": torch.tensor(1.0),
                       "v_reset": torch.tensor(0.0), "surrogate.slope": torch.tensor(25.0)})
    assert float(n.tau_mem.detach()) == pytest.approx(12.0)


def test_per_neuron_constants_from_tensors():
    tau = torch.tensor([2.0, 8.0, 32.0])
    n = LIF(tau_mem=tau, tau_syn=0.0, v_th=torch.tensor([1.0, 1.0, 2.0]))
    assert n.tau_mem.shape == (3,) and torch.equal(n.tau_mem, tau)
    x = torch.zeros(6, 1, 3)
    x[0] = 0.5
    _, st = n(x, record=True)
    torch.testing.assert_close(st.v[:, 0], 0.5 * torch.exp(-torch.arange(6.0)[:, None] / tau))
    assert torch.equal(LIF(tau_mem=tau, backend="torch")(x)[0], LIF(tau_mem=tau)(x)[0])
    tau[0] = 100.0  # the module keeps its own copy
    assert float(n.tau_mem[0]) == 2.0
    for bad, match in [(torch.tensor([1.0, -2.0]), "tau_mem must be > 0"), (torch.tensor([1, 2]), "float tensor"),
                       (torch.tensor([1.0, float("nan")]), "NaN")]:
        with pytest.raises((ValueError, TypeError), match=match):
            LIF(tau_mem=bad)
    with pytest.raises(ValueError, match="does not broadcast to shape"):
        LIF(tau_mem=torch.ones(3), shape=(4,))
    with pytest.raises(ValueError, match="v_th must be > 0"):
        LIF(v_th=torch.tensor([1.0, 0.0]))


# ------------------------------------------------------------------------------ refusals
def test_recurrent_layer_refuses_inputs_it_would_mix():
    n = LIF(recurrent=4)
    n(torch.rand(3, 2, 4))
    for shape in [(3, 2, 2, 2), (3, 2, 5)]:  # conv-shaped; wrong width
        with pytest.raises(ValueError, match="recurrent layer of 4 neurons takes input"):
            n(torch.rand(shape))
    with pytest.raises(ValueError, match="recurrent layer"):
        n.step(torch.rand(2, 2, 2))


@pytest.mark.parametrize("shape", [(0, 2, 3), (4, 0, 3)])
def test_empty_time_or_batch_is_a_clear_error(shape):
    for neuron in (LIF(), IF(), LI(), ALIF()):
        with pytest.raises(ValueError, match="T .steps, axis 0. and B .batch, axis 1. must be at least 1"):
            neuron(torch.rand(shape))


def test_bad_states_are_clear_errors():
    n = LIF()
    x = torch.rand(4, 2, 3)
    with pytest.raises(TypeError, match="state must be a LIFState"):
        n(x, state=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"state.v has shape \(2, 4\)"):
        n(x, state=LIFState(torch.zeros(2, 4), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match=r"state.i has shape"):
        n(x, state=LIFState(torch.zeros(2, 3), torch.zeros(1, 3)))
    with pytest.raises(TypeError, match="state.i must be a tensor"):
        n(x, state=LIFState(torch.zeros(2, 3), 0.0))


# ------------------------------------------------------------------------------ architecture
# The intended order of spikegrad's modules and packages, bottom up: a module may import only
# modules of lower rows (and the modules of its own package). Rows 0-4 are the core (surrogates <-
# functional core <- kernels <- neuron modules <- models); training builds on the core; the method
# packages sit on top of both, NIR interop on top of the models it exports.
ORDER = (
    ("checks", "surrogates"),                   # argument checks; surrogate spike functions
    ("functional",),                            # the functional core: states, step functions, scan
    ("kernels",),                               # fast paths of the same maths
    ("neurons", "encoding"),                    # neuron modules; encoders (SpikeTimes from kernels.events)
    ("models",),                                # networks of neurons
    ("losses", "regularizers", "data", "plots", "malloc"),  # what training takes, reads, draws, tunes
    ("__init__",),                              # the package's own names: the model builder's API
    ("training", "temporal"),                   # the training loop; temporal datasets over data
    ("sharpening", "conversion", "hardware"),   # method packages, reusing the neurons
    ("interop",),                               # NIR export/import of the models and methods
    ("sweep",),                                 # the Hydra sweep callback, train.py's side
)
# Inside kernels/, bottom up: shared preparation, the kernels, the fused recurrent layer (whose C
# engine lives in native's library), the custom operators and the event paths over them, the sparse
# input layer over its operator, the backend choice (__init__).
KERNEL_ORDER = (
    ("_common", "linear", "build", "cpuinfo"),
    ("native", "cpu", "triton_lif"),
    ("recurrent", "ops", "events"),
    ("sparse",),
    ("__init__",),
)


def _may_import(order: tuple[tuple[str, ...], ...]) -> dict[str, set[str]]:
    """module -> the modules it may import: those of lower rows."""
    return {m: set().union(*order[:k]) for k, row in enumerate(order) for m in row}


LAYERS = _may_import(ORDER)
KERNEL_LAYERS = _may_import(KERNEL_ORDER)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) of every import in a file, in functions too, resolved from relative form."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def _key(parts: tuple[str, ...]) -> tuple[str, ...]:
    """The file a dotted spikegrad path (without 'spikegrad') names: ('kernels', 'ops'), ('kernels', '__init__'), ..."""
    return parts + ("__init__",) if ROOT.joinpath(*parts).is_dir() else parts


def _targets(mod: str, names: list[str]) -> list[tuple[str, ...]]:
    """The spikegrad files an import reads: ``from spikegrad.kernels import native, lif_sequence`` reads
    kernels/native.py and kernels/__init__.py."""
    if mod.split(".")[0] != "spikegrad":
        return []
    parts = tuple(mod.split(".")[1:])
    out = set()
    for name in names or [None]:
        sub = parts + (name,) if name else None
        is_module = sub and (ROOT.joinpath(*sub).is_dir() or ROOT.joinpath(*sub).with_suffix(".py").exists())
        out.add(_key(sub if is_module else parts))
    return sorted(out)


def _name(key: tuple[str, ...]) -> str:
    """('kernels', '__init__') -> 'spikegrad.kernels'."""
    return ".".join(("spikegrad", *key[:-1], *[k for k in key[-1:] if k != "__init__"]))


def _top(key: tuple[str, ...]) -> str:
    """The row of a file in ORDER: its top-level module or package, '__init__' for spikegrad/__init__.py."""
    return key[0]


def test_imports_flow_one_way():
    files = sorted(ROOT.rglob("*.py"))
    unplaced = sorted({_top(p.relative_to(ROOT).with_suffix("").parts) for p in files} - set(LAYERS))
    assert not unplaced, f"place {unplaced} in ORDER (tests/test_core.py)"
    kernels = sorted({p.stem for p in (ROOT / "kernels").glob("*.py")} - set(KERNEL_LAYERS))
    assert not kernels, f"place kernels/{kernels} in KERNEL_ORDER (tests/test_core.py)"
    within: dict[tuple[str, ...], set[tuple[str, ...]]] = {}  # file -> files of its own package it imports
    for path in files:
        rel = path.relative_to(ROOT)
        me = rel.with_suffix("").parts
        within.setdefault(me, set())
        for mod, names in _imports(path):
            for target in _targets(mod, names):
                mine, theirs = _top(me), _top(target)
                if mine != theirs:
                    assert theirs in LAYERS[mine], f"{rel} imports {_name(target)} (see ORDER)"
                elif mine == "kernels" and target != me:
                    assert target[1] in KERNEL_LAYERS[me[1]], f"{rel} imports {_name(target)} (see KERNEL_ORDER)"
                if target != me and target[:-1] == me[:-1]:
                    within[me].add(target)
            if mod.split(".")[0] == "hydra" and rel.as_posix() != "sweep.py":
                pytest.fail(f"{rel} imports hydra; only the sweep callback may")
            if mod.startswith("spikegrad") and mod.split(".")[-1] != rel.with_suffix("").parts[-1]:
                private = [n for n in names if n.startswith("_") and not n.endswith("__")]
                same_package = len(rel.parts) > 1 and mod.startswith(f"spikegrad.{rel.parts[0]}")
                assert not private or same_package, f"{rel} imports private {private} from {mod}"
            assert not mod.startswith("torch._") and ".torch._" not in mod, f"{rel} imports private torch {mod}"
    try:  # no cycle between the modules of one package, also through imports inside functions
        tuple(graphlib.TopologicalSorter(within).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(_name(k) for k in e.args[1])}")


@pytest.mark.slow
def test_importing_the_library_changes_no_global_state():
    code = ("import matplotlib; before = matplotlib.get_backend(); import spikegrad, spikegrad.conversion, "
            "spikegrad.sharpening, spikegrad.plots, spikegrad.training; "
            "import matplotlib as m; assert m.get_backend() == before, (before, m.get_backend()); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_public_api():
    for name in ("LIF", "IF", "ALIF", "LI", "SeqWise", "SpikingMLP", "SpikingConvNet", "LatencyEncoder",
                 "make_surrogate", "Surrogate", "detach_state"):
        assert name in spikegrad.__all__ and hasattr(spikegrad, name)
    from importlib.metadata import version

    assert spikegrad.__version__ == version("spikegrad")


def test_native_reads_a_held_input_once_and_gives_the_same_gradients():
    from spikegrad.kernels import native

    if not native.available():
        pytest.skip("the C kernels could not be built")
    base = (torch.rand(2, 5, dtype=torch.float64) * 0.4).requires_grad_()
    results = []
    for held in (True, False):
        x = base.expand(30, 2, 5) if held else base.expand(30, 2, 5).clone()
        s, st = LIF(tau_mem=6.0, backend="native").double()(x)
        g, = torch.autograd.grad((s * torch.arange(30.0, dtype=torch.float64)[:, None, None]).sum() + st.v.sum(), base)
        results.append((s, st.v, g))
    assert torch.equal(results[0][0], results[1][0]) and results[0][0].sum() > 0
    assert torch.equal(results[0][1], results[1][1])
    torch.testing.assert_close(results[0][2], results[1][2])


# ------------------------------------------------------------------------------ precision
def effective_tau(v: torch.Tensor) -> torch.Tensor:
    """The time constant of a free decay ``v [T, ...]`` (v[t] = v[0] exp(-t / tau)), in steps."""
    t = len(v) - 1
    return -t / torch.log(v[-1].double() / v[0].double())


@pytest.mark.parametrize("backend", ["torch", "fused", "native", "auto"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_keep_the_time_constants(backend, dtype):
    from spikegrad.kernels import native

    if backend == "native" and not native.available():
        pytest.skip("the C kernels could not be built")
    taus = torch.tensor([20.0, 100.0, 200.0])
    x = torch.zeros(60, 2, 3, dtype=dtype)
    x[0] = 0.5  # one sub-threshold kick, then free decay
    _, st = LIF(tau_mem=taus, tau_syn=0.0, backend=backend)(x, record=True)
    assert st.v.dtype == torch.float32
    rel = (effective_tau(st.v[:, 0]) / taus.double() - 1).abs()
    assert rel.max() < 0.005, rel
    v, st_li = LI(tau_mem=taus, tau_syn=0.0, backend="torch" if backend == "torch" else "auto")(x, record=True)
    assert v.dtype == dtype and st_li.v.dtype == torch.float32
    assert (effective_tau(st_li.v[:, 0]) / taus.double() - 1).abs().max() < 0.005


def test_half_precision_spikes_equal_float32_runs_of_the_same_input():
    x = (torch.rand(50, 4, 8) * 0.3).to(torch.bfloat16)
    half, st_half = LIF(tau_mem=50.0)(x)
    full, st_full = LIF(tau_mem=50.0)(x.float())
    assert half.dtype == torch.bfloat16 and torch.equal(half.float(), full)
    assert torch.equal(st_half.v, st_full.v)


# ------------------------------------------------------------------------------ BrainScaleS-2 model
def bss2_reference(x, tau_mem, tau_syn, v_th, v_reset, readout=False):
    """The software model's integration, step by step (leak potential 0): the membrane sees the
    previous step's current, scaled by 1 - dm; spiking neurons reset to v_reset."""
    dm, ds = math.exp(-1 / tau_mem), math.exp(-1 / tau_syn)
    v = torch.zeros_like(x[0])
    i = torch.zeros_like(x[0])
    out = []
    for x_t in x:
        v = dm * v + (1 - dm) * i
        i = ds * i + x_t
        if readout:
            out.append(v)
            continue
        z = (v - v_th > 0).to(x.dtype)
        v = torch.where(z > 0, torch.full_like(v, v_reset), v)
        out.append(z)
    return torch.stack(out)


def test_bss2_neurons_match_the_software_model_step_by_step():
    from spikegrad.neurons import BSS2LI, BSS2LIF

    g = torch.Generator().manual_seed(2)
    x = torch.rand(50, 3, 8, generator=g, dtype=torch.float64) * 2.5
    s, st = BSS2LIF(tau_mem=6.0, tau_syn=3.0, v_reset=-0.3).double()(x)
    want = bss2_reference(x, 6.0, 3.0, 1.0, -0.3)
    assert torch.equal(s, want) and 0 < s.sum() < s.numel()
    assert s[0].sum() == 0  # one step of delay: nothing can fire at step 0
    v, _ = BSS2LI(tau_mem=6.0, tau_syn=3.0).double()(x)
    torch.testing.assert_close(v, bss2_reference(x, 6.0, 3.0, 1.0, 0.0, readout=True))
    # chunks carry the delayed input over
    n = BSS2LIF(tau_mem=6.0, tau_syn=3.0, v_reset=-0.3).double()
    a, sa = n(x[:17])
    b, _ = n(x[17:], sa)
    assert torch.equal(torch.cat([a, b]), s)


def test_bss2_model_runs_in_chunks_and_in_configs():
    import functools

    from spikegrad.neurons import BSS2LI, BSS2LIF

    model = SpikingMLP([12, 10, 3], neuron=functools.partial(BSS2LIF, tau_mem=8.0), readout=BSS2LI,
                       weight_gain=20.0, record_v=True)
    x = (torch.rand(30, 2, 12) < 0.2).float()
    whole = model(x)
    first = model(x[:11])
    rest = model(x[11:], first.state)
    assert torch.equal(torch.cat([first.spikes[0], rest.spikes[0]]), whole.spikes[0]) and whole.spikes[0].sum() > 0
    torch.testing.assert_close(torch.cat([first.readout, rest.readout]), whole.readout)
    assert whole.v[0].shape == (30, 2, 10)
