"""Tests for spikegrad.temporal.randman: the random-manifold generator, its spike times and splits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from spikegrad.temporal.events import EventSamples
from spikegrad.temporal.randman import (RandmanData, eval_manifold, make_randman, n_frequencies,
                                        power_spectrum, random_manifold)

CONF = Path(__file__).resolve().parents[1] / "conf" / "data" / "randman.yaml"
SMALL = dict(n_classes=3, n_units=6, n_steps=50, alpha=2.0, samples_per_class=40)


def slow_manifold(m, x: list[float]) -> list[float]:
    """One point's embedding coordinates by plain loops over units, intrinsic axes and sine terms."""
    n_units, dim, f = m.amplitude.shape
    out = []
    for u in range(n_units):
        value = 1.0
        for d in range(dim):
            total = 0.0
            for k in range(f):
                s = 1.0 / ((k + 1) ** m_alpha(m) + 1.0)
                total += float(m.amplitude[u, d, k]) * s * math.sin(
                    2 * math.pi * (k * x[d] * float(m.frequency[u, d, k]) + float(m.phase[u, d, k])))
            value *= total
        out.append(value)
    return out


def m_alpha(m) -> float:
    """The exponent behind a manifold's spectrum (s_0 = 1 / (1 + 1), s_1 = 1 / (2^alpha + 1))."""
    return math.log2(1.0 / float(m.spectrum[1]) - 1.0)


def dense_all(s: EventSamples) -> torch.Tensor:
    return s.dense(torch.arange(len(s)))  # [N, T, U]


# ------------------------------------------------------------------------- the manifold
def test_number_of_terms_follows_precision():
    assert n_frequencies(1.0) == 1000   # 1e-3 ** -1 = 1000
    assert n_frequencies(2.0) == 32     # ceil(31.6)
    assert n_frequencies(3.0) == 10
    assert n_frequencies(0.5) == 1000   # capped
    assert n_frequencies(0.0) == 1000


def test_spectrum_values():
    s = power_spectrum(2.0, 4)
    assert s.dtype == torch.float64
    torch.testing.assert_close(s, torch.tensor([1 / 2, 1 / 5, 1 / 10, 1 / 17], dtype=torch.float64))
    assert torch.equal(power_spectrum(0.0, 3), torch.full((3,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("alpha,dim", [(2.0, 1), (1.5, 2), (3.0, 3)])
def test_manifold_matches_slow_loop(alpha, dim):
    g = torch.Generator().manual_seed(7)
    m = random_manifold(4, dim, alpha, g)
    assert m.amplitude.shape == (4, dim, n_frequencies(alpha))
    assert torch.all(m.amplitude[..., 0] == 0)  # no constant term
    for t in (m.amplitude, m.frequency, m.phase):
        assert t.dtype == torch.float64 and 0 <= float(t.min()) and float(t.max()) < 1
    x = torch.rand(5, dim, dtype=torch.float64, generator=g)
    fast = eval_manifold(m, x)
    assert fast.shape == (5, 4) and fast.dtype == torch.float64
    slow = torch.tensor([slow_manifold(m, row.tolist()) for row in x], dtype=torch.float64)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


def test_manifold_is_chunked_consistently(monkeypatch):
    from spikegrad.temporal import randman
    m = random_manifold(3, 1, 1.0, torch.Generator().manual_seed(0))
    x = torch.rand(10, 1, dtype=torch.float64)
    whole = eval_manifold(m, x)
    monkeypatch.setattr(randman, "_CHUNK", 1)  # one sample per chunk
    torch.testing.assert_close(eval_manifold(m, x), whole, rtol=0, atol=1e-15)


def test_eval_manifold_rejects_wrong_coords():
    m = random_manifold(3, 2, 2.0, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"coords must be \[N, 2\]"):
        eval_manifold(m, torch.rand(4, 3))


# ------------------------------------------------------------------------- the data set
def test_events_match_a_from_scratch_build():
    """Same draws in the same order (manifolds class by class, then coordinates), evaluated by loops."""
    n_classes, n_units, n_steps, reps, per_class, alpha = 2, 3, 30, 2, 6, 2.0
    s = make_randman(n_classes, n_units, n_steps, 1, alpha, reps, per_class, seed=5)
    g = torch.Generator().manual_seed(5)
    mans = [[random_manifold(n_units, 1, alpha, g) for _ in range(reps)] for _ in range(n_classes)]
    expected = torch.zeros(n_classes * per_class, n_steps, n_units)
    for c in range(n_classes):
        x = torch.rand(per_class, 1, dtype=torch.float64, generator=g)
        for m in mans[c]:
            values = [slow_manifold(m, row.tolist()) for row in x]
            for u in range(n_units):
                col = [v[u] for v in values]
                lo, hi = min(col), max(col)
                for i, v in enumerate(col):
                    t = (v - lo) / (hi - lo + 1e-7)
                    expected[c * per_class + i, min(int(t * n_steps), n_steps - 1), u] += 1
    assert torch.equal(dense_all(s), expected)
    assert torch.equal(s.labels, torch.tensor([0] * per_class + [1] * per_class))


def test_deterministic_for_a_seed_and_seeds_differ():
    a, b = make_randman(**SMALL, seed=3), make_randman(**SMALL, seed=3)
    for f in ("steps", "units", "offsets", "labels"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    c = make_randman(**SMALL, seed=4)
    assert not torch.equal(a.steps, c.steps)


def test_global_rng_untouched():
    state = torch.random.get_rng_state()
    make_randman(**SMALL)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_step_frac_keeps_spikes_in_the_first_part():
    s = make_randman(**SMALL, step_frac=0.5)
    steps = s.steps.view(len(s), SMALL["n_units"])
    assert int(steps.min()) == 0 and int(steps.max()) == SMALL["n_steps"] // 2 - 1
    full = make_randman(**SMALL)
    assert torch.equal(steps, full.steps.view_as(steps) // 2)  # floor(t * 25) == floor(t * 50) // 2


def test_one_sample_per_class_fires_at_step_0():
    """A class's single sample is both its earliest and latest: its normalised times are 0."""
    assert torch.all(make_randman(**{**SMALL, "samples_per_class": 1}).steps == 0)


@pytest.mark.parametrize("reps", [1, 3])
def test_every_unit_spikes_exactly_spikes_per_unit_times(reps):
    s = make_randman(**SMALL, spikes_per_unit=reps)
    x = dense_all(s)
    assert x.shape == (3 * 40, 50, 6) and x.dtype == torch.float32
    assert torch.equal(x.sum(1), torch.full((120, 6), float(reps)))
    assert torch.equal(s.offsets, torch.arange(121) * reps * 6)


def test_times_span_the_window_per_class_and_unit():
    """Min-max normalisation per class and unit: its earliest sample fires at step 0, its latest at T - 1."""
    s = make_randman(**SMALL)
    steps = s.steps.view(len(s), SMALL["n_units"])  # [N, U], one spike per unit
    for c in range(SMALL["n_classes"]):
        cls = steps[s.labels == c]
        assert torch.all(cls.min(0).values == 0)
        assert torch.all(cls.max(0).values == SMALL["n_steps"] - 1)


def test_labels_balanced():
    s = make_randman(**SMALL)
    assert torch.equal(torch.bincount(s.labels), torch.full((3,), 40))


def test_classes_have_different_timing():
    s = make_randman(**SMALL)
    mean = torch.stack([dense_all(s)[s.labels == c].mean(0) for c in range(3)])  # [C, T, U]
    assert not torch.allclose(mean[0], mean[1]) and not torch.allclose(mean[1], mean[2])


# ------------------------------------------------------------------------- splits, loaders
def test_split_sizes_80_10_10_disjoint_and_complete():
    d = RandmanData(**{**SMALL, "samples_per_class": 100})
    train, val, test = d.split_indices()
    assert (len(train), len(val), len(test)) == (240, 30, 30) == d.split_sizes()
    everything = torch.cat([train, val, test])
    assert torch.equal(everything.sort().values, torch.arange(300))  # disjoint and complete
    tr, va, te = d.splits()
    full = d.samples()
    for part, idx in [(tr, train), (va, val), (te, test)]:
        assert torch.equal(dense_all(part), full.dense(idx))
        assert torch.equal(part.labels, full.labels[idx])


def test_split_fixed_by_the_data_seed():
    a, b = RandmanData(**SMALL).split_indices(), RandmanData(**SMALL).split_indices()
    c = RandmanData(**SMALL, seed=1).split_indices()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_no_validation_split():
    d = RandmanData(**SMALL, val_fraction=0.0)
    assert d.split_sizes() == (96, 0, 24)
    train, val, test = d.loaders(0)
    assert val is None and len(test.dataset) == 24


def test_loaders_shapes_and_seeds():
    d = RandmanData(**SMALL, batch_size=16, eval_batch_size=7, drop_last=True)
    train, val, test = d.loaders(seed=0)
    x, y = next(iter(train))
    assert x.shape == (16, 50, 6) and x.dtype == torch.float32 and y.shape == (16,) and y.dtype == torch.int64
    assert all(len(b[1]) == 16 for b in train)  # drop_last
    xv, _ = next(iter(val))
    assert xv.shape == (7, 50, 6)
    assert sum(len(b[1]) for b in test) == 12
    # the training seed orders the batches, never changes the data
    y0 = torch.cat([b[1] for b in RandmanData(**SMALL, batch_size=16).loaders(0)[0]])
    y0b = torch.cat([b[1] for b in RandmanData(**SMALL, batch_size=16).loaders(0)[0]])
    y1 = torch.cat([b[1] for b in RandmanData(**SMALL, batch_size=16).loaders(1)[0]])
    assert torch.equal(y0, y0b) and not torch.equal(y0, y1)
    assert torch.equal(y0.sort().values, y1.sort().values)
    t0 = torch.cat([b[0] for b in RandmanData(**SMALL).loaders(0)[2]])
    t1 = torch.cat([b[0] for b in RandmanData(**SMALL).loaders(1)[2]])
    assert torch.equal(t0, t1)


def test_n_units_and_n_classes():
    d = RandmanData(n_units=7, n_classes=4, samples_per_class=10)
    assert (d.n_units, d.n_classes) == (7, 4)


@pytest.mark.parametrize("kw,match", [
    ({"n_steps": 0}, "n_steps must be an int >= 1"),
    ({"n_units": 0}, "n_units must be an int >= 1"),
    ({"n_classes": 2.5}, "n_classes must be an int"),
    ({"dim_manifold": 0}, "dim_manifold must be an int >= 1"),
    ({"spikes_per_unit": 0}, "spikes_per_unit must be an int >= 1"),
    ({"samples_per_class": 0}, "samples_per_class must be an int >= 1"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"alpha": -0.5}, "alpha .* must be a finite number >= 0"),
    ({"alpha": float("nan")}, "alpha"),
    ({"step_frac": 0.0}, r"step_frac .* must lie in \(0, 1\]"),
    ({"step_frac": 1.5}, "step_frac"),
    ({"train_fraction": 1.0}, "train_fraction"),
    ({"val_fraction": 0.3, "train_fraction": 0.7}, "the rest is the test set"),
    ({"samples_per_class": 1, "n_classes": 2}, "raise samples_per_class"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
])
def test_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        RandmanData(**{**SMALL, **kw})


def test_make_randman_checks_too():
    with pytest.raises(ValueError, match="n_steps"):
        make_randman(n_steps=0)
    with pytest.raises(ValueError, match="alpha"):
        make_randman(alpha=-1.0)


def test_config_instantiates():
    hydra_utils = pytest.importorskip("hydra.utils")
    d = hydra_utils.instantiate(pytest.importorskip("omegaconf").OmegaConf.load(CONF), samples_per_class=10)
    assert isinstance(d, RandmanData) and d.samples_per_class == 10 and d.n_units == 20
