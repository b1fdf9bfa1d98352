"""Tests for spikegrad.temporal.smnist: pixel sequences, PS-MNIST permutation, level crossings, loaders."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from spikegrad import data
from spikegrad.temporal.smnist import SMNISTData, level_crossings, level_thresholds, pixel_permutation

CONF = Path(__file__).resolve().parents[1] / "conf" / "data" / "smnist.yaml"
N_TRAIN, N_TEST = 60, 12


def write_idx_folder(root: Path, hw: tuple[int, int] = (28, 28)) -> None:
    """Four gzip IDX files of random uint8 images (0 and 255 included); labels are the sample
    indices, so every sample is identifiable (``name="folder"`` does not check labels)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", N_TRAIN), ("test", N_TEST)]:
        images = rng.integers(0, 256, (n, *hw), dtype=np.uint8)
        images[:, 0, :3] = [0, 255, 0]
        labels = np.arange(n, dtype=np.uint8)
        img_f, lab_f = data.SPLIT_FILES[split]
        for f, arr in [(img_f, images), (lab_f, labels)]:
            header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            (root / f).write_bytes(gzip.compress(header + arr.tobytes()))


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))
    write_idx_folder(tmp_path / "idx")
    return tmp_path / "idx"


def make(folder: Path, **kw) -> SMNISTData:
    return SMNISTData(**{"name": "folder", "root": str(folder), "download": False, "val_size": 10,
                         "batch_size": 8, "eval_batch_size": 5, **kw})


def pixels(folder: Path, split: str = "test") -> torch.Tensor:
    """float32 [N, 784] as load_split returns them, row by row."""
    return data.load_split("folder", folder, split, download=False)[0].reshape(-1, 784)


def all_batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def slow_level_crossings(seq: list[float], n_levels: int) -> list[list[float]]:
    """out[t][j] = 1 iff threshold j lies between pixel t - 1 (0 before the start) and pixel t."""
    thresholds = [(j + 0.5) / n_levels for j in range(n_levels)]
    out, prev = [], 0.0
    for p in seq:
        out.append([1.0 if min(prev, p) < th <= max(prev, p) else 0.0 for th in thresholds])
        prev = p
    return out


# --------------------------------------------------------------------------- level crossings
def test_thresholds_evenly_spaced_in_open_interval():
    th = level_thresholds(4)
    assert th.dtype == torch.float32
    torch.testing.assert_close(th, torch.tensor([0.125, 0.375, 0.625, 0.875]))
    gray = torch.arange(256, dtype=torch.float32) / 255
    assert not torch.isin(level_thresholds(80), gray).any()  # no pixel value sits on a threshold


def test_level_crossings_hand_example():
    spikes = level_crossings(torch.tensor([[0.0, 1.0, 1.0, 0.3, 0.0]]), 2)  # thresholds 0.25, 0.75
    expected = torch.tensor([[0, 0], [1, 1], [0, 0], [0, 1], [1, 0]], dtype=torch.float32)
    assert torch.equal(spikes[0], expected)


@pytest.mark.parametrize("n_levels,length,gray", [(7, 40, False), (80, 60, True), (1, 20, False)])
def test_level_crossings_match_slow_loop(n_levels, length, gray):
    g = torch.Generator().manual_seed(n_levels)
    x = torch.rand(3, length, generator=g)
    if gray:  # the values MNIST has
        x = torch.randint(0, 256, (3, length), generator=g).float() / 255
    fast = level_crossings(x, n_levels)
    assert fast.shape == (3, length, n_levels) and fast.dtype == torch.float32
    slow = torch.tensor([slow_level_crossings(row.tolist(), n_levels) for row in x])
    assert torch.equal(fast, slow)
    assert level_crossings(x.double(), n_levels).dtype == torch.float64


def test_level_crossings_rejects_bad_input():
    with pytest.raises(ValueError, match=r"floating \[B, L\]"):
        level_crossings(torch.zeros(2, 3, 4), 5)
    with pytest.raises(ValueError, match=r"floating \[B, L\]"):
        level_crossings(torch.zeros(2, 3, dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="n_levels must be an int >= 1"):
        level_crossings(torch.zeros(2, 3), 0)


# ------------------------------------------------------------------------------ permutation
def test_permutation_fixed_by_seed():
    p0 = SMNISTData(permute=True).permutation
    assert p0.dtype == torch.int64 and p0.shape == (784,)
    assert torch.equal(p0.sort().values, torch.arange(784))
    assert torch.equal(p0, SMNISTData(permute=True, permutation_seed=0).permutation)
    assert torch.equal(p0, pixel_permutation(0))
    assert not torch.equal(p0, SMNISTData(permute=True, permutation_seed=1).permutation)
    assert not torch.equal(p0, torch.arange(784))
    assert SMNISTData().permutation is None


def test_save_round_trips(tmp_path):
    d = SMNISTData(permute=True, permutation_seed=3)
    path = d.save(tmp_path / "run")
    assert path == tmp_path / "run" / "permutation.json"
    saved = json.loads(path.read_text())
    assert saved["permutation_seed"] == 3
    assert len(saved["permutation"]) == 784
    assert torch.equal(torch.tensor(saved["permutation"]), d.permutation)
    assert SMNISTData().save(tmp_path / "off") is None
    assert not (tmp_path / "off").exists()


# ---------------------------------------------------------------------------------- loaders
def test_current_batches_are_the_pixels(folder):
    d = make(folder, input="current")
    assert (d.n_units, d.n_classes, d.n_steps) == (1, 10, 784)
    train, val, test = d.loaders(0)
    x, y = next(iter(train))
    assert x.shape == (8, 784, 1) and x.dtype == torch.float32 and y.shape == (8,) and y.dtype == torch.int64
    x, y = all_batches(test)
    assert torch.equal(y, torch.arange(N_TEST))
    assert torch.equal(x[..., 0], pixels(folder))


def test_spike_batches(folder):
    d = make(folder)
    assert d.n_units == 80
    train, val, test = d.loaders(0)
    x, y = next(iter(train))
    assert x.shape == (8, 784, 80) and x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    x, _ = all_batches(test)
    assert torch.equal(x, level_crossings(pixels(folder), 80))
    assert torch.equal(make(folder, n_levels=5).loaders(0)[2].collate_fn([0])[0][0],
                       level_crossings(pixels(folder)[:1], 5)[0])


@pytest.mark.parametrize("input", ["current", "spikes"])
def test_permutation_is_applied(folder, input):
    plain = all_batches(make(folder, input=input, n_levels=6).loaders(0)[2])[0]
    d = make(folder, input=input, n_levels=6, permute=True, permutation_seed=2)
    permuted, _ = all_batches(d.loaders(0)[2])
    if input == "current":
        assert torch.equal(permuted, plain[:, d.permutation])
    else:  # crossings between consecutive *shown* pixels
        assert torch.equal(permuted, level_crossings(pixels(folder)[:, d.permutation], 6))
        assert not torch.equal(permuted, plain[:, d.permutation])


def test_split_follows_make_loaders(folder):
    d = make(folder, input="current", val_size=10)
    train, val, test = d.loaders(seed=4)
    _, y_train = all_batches(train)
    _, y_val = all_batches(val)
    assert len(y_train) == N_TRAIN - 10 and len(y_val) == 10
    assert torch.equal(torch.cat([y_train, y_val]).sort().values, torch.arange(N_TRAIN))  # disjoint, complete
    ref_train, ref_val, _ = data.make_loaders("folder", folder, download=False, val_size=10, seed=4)
    assert torch.equal(y_val, torch.cat([b[1] for b in ref_val]))
    assert torch.equal(y_train.sort().values, torch.cat([b[1] for b in ref_train]).sort().values)
    # the training order is reproducible and moves with the seed
    again = all_batches(make(folder, input="current", val_size=10).loaders(seed=4)[0])[1]
    other = all_batches(make(folder, input="current", val_size=10).loaders(seed=5)[0])[1]
    assert torch.equal(y_train, again) and not torch.equal(y_train, other)


def test_subset_no_val_and_drop_last(folder):
    train, val, _ = make(folder, input="current", val_size=0, subset=21, drop_last=True).loaders(0)
    assert val is None
    sizes = [len(b[1]) for b in train]
    assert sizes == [8, 8]  # 21 samples, the last 5 dropped


@pytest.mark.parametrize("kw,match", [
    ({"input": "rate"}, "input must be one of"),
    ({"n_levels": 0}, "n_levels must be an int >= 1"),
    ({"permutation_seed": -1}, "permutation_seed must be an int >= 0"),
    ({"name": "cifar"}, "name must be one of"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ({"val_size": -1}, "val_size must be an int >= 0"),
    ({"subset": 0}, "subset must be a positive int"),
])
def test_bad_fields(kw, match):
    with pytest.raises(ValueError, match=match):
        SMNISTData(**kw)


def test_bad_sizes_for_the_data(folder, tmp_path):
    with pytest.raises(ValueError, match="val_size=60 must be smaller"):
        make(folder, val_size=60).loaders(0)
    with pytest.raises(ValueError, match="subset=51 exceeds the 50"):
        make(folder, subset=51).loaders(0)
    write_idx_folder(tmp_path / "small", hw=(16, 16))
    with pytest.raises(ValueError, match=r"needs 28x28 images"):
        make(tmp_path / "small").loaders(0)


def test_real_mnist(mnist_root, monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path))
    d = SMNISTData(root=str(mnist_root), download=False, permute=True, subset=100, eval_batch_size=50)
    train, val, test = d.loaders(0)
    assert len(val.dataset) == 5000 and len(test.dataset) == 10000
    x, y = next(iter(test))
    assert x.shape == (50, 784, 80) and y.dtype == torch.int64
    images, labels = data.load_split("mnist", mnist_root, "test", download=False)
    assert torch.equal(y, labels[:50])
    assert torch.equal(x, level_crossings(images[:50].reshape(50, 784)[:, d.permutation], 80))
    assert not any(tmp_path.iterdir())  # nothing cached for unresized images


def test_config_instantiates():
    hydra_utils = pytest.importorskip("hydra.utils")
    d = hydra_utils.instantiate(pytest.importorskip("omegaconf").OmegaConf.load(CONF), permute=True)
    assert isinstance(d, SMNISTData) and d.permutation.shape == (784,) and d.n_units == 80
