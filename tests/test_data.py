"""Tests for spikegrad.data: IDX reading, checksummed download, area resizing, caching, loaders."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import struct
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from spikegrad import data
from spikegrad.data import (ALL_FILES, IDXData, area_matrix, area_resize, default_root,
                            download, load_split, make_loaders, read_idx, shift_images)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST = SHARED / "mnist"
FASHION = SHARED / "fashion-mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / ALL_FILES[0]).is_file(),
                                 reason=f"MNIST IDX files not found in {MNIST}")
needs_fashion = pytest.mark.skipif(not (FASHION / ALL_FILES[0]).is_file(),
                                   reason=f"Fashion-MNIST IDX files not found in {FASHION}")

# Published numbers (shared/data/*/README.md).
MNIST_HIST = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
FASHION_HIST = {"train": [6000] * 10, "test": [1000] * 10}
MNIST_MD5 = {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# ------------------------------------------------------------------------------- helpers
def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """Hand-written IDX encoder: zero, zero, type, ndim, big-endian uint32 dims, big-endian data."""
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dt).tobytes()


def write_folder(root: Path, n_train: int = 200, n_test: int = 20, hw: tuple = (28, 28)) -> None:
    """Four gzip IDX files; labels are the sample indices, so every sample is identifiable."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", n_train), ("test", n_test)]:
        images = rng.integers(0, 256, (n, *hw), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8)
        img_f, lab_f = data.SPLIT_FILES[split]
        (root / img_f).write_bytes(gzip.compress(idx_bytes(images)))
        (root / lab_f).write_bytes(gzip.compress(idx_bytes(labels)))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(directory) -> base URL of a real HTTP server on 127.0.0.1 (ephemeral port)."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    """URL of a port that was just free and is closed now: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ------------------------------------------------------------------------------ read_idx
@needs_mnist
@pytest.mark.parametrize("split", ["train", "test"])
def test_read_idx_real_mnist(split):
    img_f, lab_f = data.SPLIT_FILES[split]
    x, y = read_idx(MNIST / img_f), read_idx(MNIST / lab_f)
    n = 60000 if split == "train" else 10000
    assert x.shape == (n, 28, 28) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == MNIST_HIST[split]
    # independent reference: the README's gzip + frombuffer recipe
    with gzip.open(MNIST / img_f, "rb") as f:
        ref = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(x, ref)


@needs_fashion
@pytest.mark.parametrize("split", ["train", "test"])
def test_read_idx_real_fashion(split):
    img_f, lab_f = data.SPLIT_FILES[split]
    x, y = read_idx(FASHION / img_f), read_idx(FASHION / lab_f)
    n = 60000 if split == "train" else 10000
    assert x.shape == (n, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == FASHION_HIST[split]


@pytest.mark.parametrize("type_code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                             (0x0C, np.int32), (0x0D, np.float32),
                                             (0x0E, np.float64)])
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, type_code, dtype, compress):
    arr = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    raw = idx_bytes(arr, type_code)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable, native order


def test_read_idx_header_values(tmp_path):
    # the header of the 2-item label file [3, 7], written out byte by byte
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 7]))
    assert read_idx(path).tolist() == [3, 7]


@pytest.mark.parametrize("corrupt,match", [
    (lambda raw, gz: gz[: len(gz) // 2], "gzip"),                        # truncated download
    (lambda raw, gz: gz[:-4] + b"\0\0\0\0", "gzip"),                     # bad gzip size trailer
    (lambda raw, gz: gzip.compress(raw[:-10]), "truncated"),            # short payload
    (lambda raw, gz: gzip.compress(raw + b"\0"), "trailing"),           # extra byte
    (lambda raw, gz: gzip.compress(raw[:10]), "truncated"),             # short header+payload
    (lambda raw, gz: gzip.compress(b"\x01" + raw[1:]), "magic"),        # wrong magic
    (lambda raw, gz: gzip.compress(raw[:2] + b"\x07" + raw[3:]), "magic"),  # unknown type code
    (lambda raw, gz: gzip.compress(raw[:3] + b"\0" + raw[4:]), "magic"),    # zero dims
    (lambda raw, gz: b"", "magic"),                                      # empty file
])
def test_read_idx_corrupt_names_file(tmp_path, corrupt, match):
    raw = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(corrupt(raw, gzip.compress(raw)))
    with pytest.raises(ValueError, match=match) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


def test_load_split_rejects_wrong_file_kind(tmp_path):
    write_folder(tmp_path)
    # a labels file where the images belong
    shutil.copy(tmp_path / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*images"):
        load_split("folder", tmp_path, "test")


def test_load_split_rejects_count_mismatch(tmp_path):
    write_folder(tmp_path, n_test=20)
    (tmp_path / TEST_FILES[1]).write_bytes(gzip.compress(idx_bytes(np.zeros(19, np.uint8))))
    with pytest.raises(ValueError, match="20 images but .* 19 labels"):
        load_split("folder", tmp_path, "test")


# ------------------------------------------------------------------------ missing / offline
def test_missing_files_offline_error_names_them(tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as e:
        load_split("mnist", root, "train", download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert str(root) in msg and "data.root=DIR" in msg
    assert not root.exists()  # offline: nothing created


def test_partially_missing_names_only_missing(tmp_path):
    write_folder(tmp_path)
    (tmp_path / TEST_FILES[1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: t10k-labels-idx1-ubyte\.gz\n"):
        load_split("folder", tmp_path, "test")


@needs_mnist
def test_corrupted_file_offline_error_names_it(tmp_path):
    for f in TEST_FILES:
        shutil.copy(MNIST / f, tmp_path / f)
    raw = bytearray((tmp_path / TEST_FILES[1]).read_bytes())
    raw[100] ^= 0xFF
    (tmp_path / TEST_FILES[1]).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"corrupted .*t10k-labels-idx1-ubyte\.gz") as e:
        load_split("mnist", tmp_path, "test", download=False)
    assert str(tmp_path) in str(e.value) and str(e.value).count("\n  corrupted (") == 1


def test_folder_needs_root():
    with pytest.raises(ValueError, match="root"):
        load_split("folder", None)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEGRAD_DATA", str(tmp_path))
    assert default_root("kmnist") == tmp_path / "kmnist"
    monkeypatch.delenv("SPIKEGRAD_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root("mnist") == tmp_path / "home" / ".cache" / "spikegrad" / "mnist"


def test_default_root_used_by_load_split(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEGRAD_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "fashion_mnist")):
        load_split("fashion_mnist", download=False)


# ------------------------------------------------------------------------------ download
@needs_mnist
def test_download_from_local_server(serve, tmp_path):
    url = serve(MNIST)
    root = tmp_path / "root"
    x, y = load_split("mnist", root, "test", download=True, mirrors=[url])
    assert sorted(p.name for p in root.iterdir()) == sorted(TEST_FILES)  # no temp files left
    for f in TEST_FILES:
        assert md5(root / f) == MNIST_MD5[f]
    assert x.shape == (10000, 28, 28) and x.dtype == torch.float32
    assert torch.bincount(y, minlength=10).tolist() == MNIST_HIST["test"]
    np.testing.assert_array_equal((x * 255).round().to(torch.uint8).numpy(),
                                  read_idx(MNIST / TEST_FILES[0]))
    # present and valid now: works offline, and a dead mirror is never contacted
    load_split("mnist", root, "test", download=True, mirrors=[dead_url()])


@needs_mnist
def test_download_all_four(serve, tmp_path):
    root = download("mnist", tmp_path / "r", mirrors=[serve(MNIST)], progress=False)
    assert {f: md5(root / f) for f in ALL_FILES} == MNIST_MD5


@needs_mnist
def test_download_checksum_mismatch_leaves_nothing(serve, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = bytearray((MNIST / TEST_FILES[1]).read_bytes())
    raw[200] ^= 0x01
    (bad / TEST_FILES[1]).write_bytes(bytes(raw))
    shutil.copy(MNIST / TEST_FILES[0], bad / TEST_FILES[0])
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match=r"(?s)t10k-labels-idx1-ubyte\.gz.*MD5 mismatch") as e:
        load_split("mnist", root, "test", download=True, mirrors=[serve(bad)])
    assert "data.root=DIR" in str(e.value)
    assert not (root / TEST_FILES[1]).exists()
    assert [p.name for p in root.iterdir()] == [TEST_FILES[0]]  # the good file, no .part files


@needs_mnist
def test_download_falls_back_to_next_mirror(serve, tmp_path):
    empty = tmp_path / "empty"  # a live server without the files: HTTP 404
    empty.mkdir()
    root = tmp_path / "root"
    load_split("mnist", root, "test", download=True,
               mirrors=[dead_url(), serve(empty), serve(MNIST)])
    assert {f: md5(root / f) for f in TEST_FILES} == {f: MNIST_MD5[f] for f in TEST_FILES}


@needs_mnist
def test_download_replaces_corrupt_local_file(serve, tmp_path):
    for f in TEST_FILES:
        shutil.copy(MNIST / f, tmp_path / f)
    (tmp_path / TEST_FILES[1]).write_bytes(b"garbage")
    load_split("mnist", tmp_path, "test", download=True, mirrors=[serve(MNIST)])
    assert md5(tmp_path / TEST_FILES[1]) == MNIST_MD5[TEST_FILES[1]]


def test_download_all_mirrors_down_lists_each(tmp_path):
    urls = [dead_url(), dead_url()]
    with pytest.raises(RuntimeError) as e:
        download("kmnist", tmp_path, mirrors=urls, files=TEST_FILES[1:], timeout=5)
    for url in urls:
        assert url + TEST_FILES[1] in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_download_unchecksummed_folder_validates_idx(serve, tmp_path):
    src = tmp_path / "src"
    write_folder(src)
    (src / TEST_FILES[0]).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5))
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match="truncated"):
        load_split("folder", root, "test", download=True, mirrors=[serve(src)])
    assert not (root / TEST_FILES[0]).exists()


# ----------------------------------------------------------------------------- area_resize
def slow_area_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Per output pixel: average of input pixels weighted by exact 2-D overlap area."""
    h, w = img.shape
    out = np.zeros((size, size))
    for oi in range(size):
        y0, y1 = Fraction(oi * h, size), Fraction((oi + 1) * h, size)
        for oj in range(size):
            x0, x1 = Fraction(oj * w, size), Fraction((oj + 1) * w, size)
            acc = Fraction(0)
            for r in range(h):
                dy = min(y1, r + 1) - max(y0, r)
                if dy <= 0:
                    continue
                for c in range(w):
                    dx = min(x1, c + 1) - max(x0, c)
                    if dx > 0:
                        acc += dy * dx * Fraction(float(img[r, c]))
            out[oi, oj] = float(acc / ((y1 - y0) * (x1 - x0)))
    return out


@pytest.mark.parametrize("hw,size", [((28, 28), 16), ((28, 28), 7), ((5, 5), 3), ((3, 3), 5),
                                     ((6, 4), 4), ((7, 9), 2), ((4, 4), 1)])
def test_area_resize_matches_slow_reference(hw, size):
    x = torch.rand(2, *hw, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = area_resize(x, size)
    assert out.shape == (2, size, size) and out.dtype == torch.float64
    for n in range(2):
        np.testing.assert_allclose(out[n].numpy(), slow_area_resize(x[n].numpy(), size),
                                   rtol=0, atol=1e-12)


def test_area_matrix_hand_values():
    # 3 -> 2: each output cell covers 1.5 input pixels
    expected = torch.tensor([[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], dtype=torch.float64)
    torch.testing.assert_close(area_matrix(3, 2), expected)
    torch.testing.assert_close(area_matrix(4, 2), torch.tensor([[.5, .5, 0, 0], [0, 0, .5, .5]],
                                                               dtype=torch.float64))
    for n_in, n_out in [(28, 16), (16, 28), (5, 5), (7, 3)]:
        m = area_matrix(n_in, n_out)
        torch.testing.assert_close(m.sum(1), torch.ones(n_out, dtype=torch.float64))


@pytest.mark.parametrize("size", [16, 10, 7, 40])
def test_area_resize_constant_and_mean(size):
    const = torch.full((3, 28, 28), 0.37)
    torch.testing.assert_close(area_resize(const, size), torch.full((3, size, size), 0.37))
    x = torch.rand(5, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(area_resize(x, size).mean((1, 2)), x.mean((1, 2)))
    assert area_resize(x.to(torch.float32), size).dtype == torch.float32


def test_area_resize_rejects_bad_input():
    with pytest.raises(ValueError, match="floating"):
        area_resize(torch.zeros(2, 28, 28, dtype=torch.uint8), 16)
    with pytest.raises(ValueError, match="size"):
        area_resize(torch.zeros(2, 28, 28), 0)


# ----------------------------------------------------------------------------------- cache
def test_resize_cache_written_once_and_reused(tmp_path, monkeypatch):
    write_folder(tmp_path)
    x0, y0 = load_split("folder", tmp_path, "train", size=16, cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("folder_train_16px_area_*.pt")
    mtime = cache.stat().st_mtime_ns
    ref = area_resize(torch.from_numpy(read_idx(tmp_path / ALL_FILES[0])).double() / 255, 16)
    torch.testing.assert_close(x0, ref.to(torch.float32))
    assert x0.shape == (200, 16, 16) and x0.dtype == torch.float32

    def fail(*a, **k):
        raise AssertionError("raw files re-read despite a valid cache")

    monkeypatch.setattr(data, "read_idx", fail)
    x1, y1 = load_split("folder", tmp_path, "train", size=16, cache_dir=tmp_path / "cache")
    assert cache.stat().st_mtime_ns == mtime
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    with pytest.raises(AssertionError, match="re-read"):  # another size is another cache entry
        load_split("folder", tmp_path, "train", size=8, cache_dir=tmp_path / "cache")


def test_cache_goes_to_the_cache_folder_never_into_the_data_folder(tmp_path, monkeypatch):
    write_folder(tmp_path / "data")
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "c"))
    assert data.cache_root() == tmp_path / "c" / "resized"
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    load_split("folder", tmp_path / "data", "test", size=16)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before
    assert len(list((tmp_path / "c" / "resized").glob("*.pt"))) == 1


def test_resize_cache_invalidated_by_new_raw_files(tmp_path):
    write_folder(tmp_path)
    load_split("folder", tmp_path, "test", size=16, cache_dir=tmp_path / "cache")
    imgs = np.full((20, 28, 28), 255, np.uint8)
    (tmp_path / TEST_FILES[0]).write_bytes(gzip.compress(idx_bytes(imgs)))
    x, _ = load_split("folder", tmp_path, "test", size=16, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(x, torch.ones(20, 16, 16))  # stale cache would give ~0.5


def test_replaced_labels_with_same_size_and_mtime_are_not_served_from_the_cache(tmp_path):
    write_folder(tmp_path)
    labels = tmp_path / TEST_FILES[1]  # plain (not gzip) IDX: a replacement has exactly the same size
    labels.write_bytes(idx_bytes(np.arange(20, dtype=np.uint8)))
    _, y0 = load_split("folder", tmp_path, "test", size=16, cache_dir=tmp_path / "cache")
    st = labels.stat()
    new = np.arange(20, dtype=np.uint8)[::-1].copy()
    labels.write_bytes(idx_bytes(new))
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (labels.stat().st_size, labels.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    _, y1 = load_split("folder", tmp_path, "test", size=16, cache_dir=tmp_path / "cache")
    assert torch.equal(y1, torch.from_numpy(new).long()) and not torch.equal(y0, y1)


def test_labels_outside_the_classes_are_named_at_load(tmp_path):
    write_folder(tmp_path)
    y = read_idx(tmp_path / TEST_FILES[1])
    y[7] = 25  # the test labels are 0..19
    (tmp_path / TEST_FILES[1]).write_bytes(gzip.compress(idx_bytes(y)))
    with pytest.raises(ValueError, match=rf"{TEST_FILES[1]}: label 25 at index 7 is outside the 20 classes"):
        load_split("folder", tmp_path, "test", size=16, num_classes=20, cache_dir=tmp_path / "cache")
    load_split("folder", tmp_path, "test", size=16, num_classes=26, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="label 25 at index 7"):  # also when the images come from the cache
        load_split("folder", tmp_path, "test", size=16, num_classes=20, cache_dir=tmp_path / "cache")


def test_resize_without_cache_and_native_size(tmp_path):
    write_folder(tmp_path)
    load_split("folder", tmp_path, "test", size=16, cache=False)
    load_split("folder", tmp_path, "test", size=28)
    assert not list(tmp_path.glob("*.pt"))


# --------------------------------------------------------------------------------- loaders
def ids(loader) -> list[int]:
    return [int(i) for _, y in loader for i in y]


def test_make_loaders_split_disjoint_and_deterministic(tmp_path):
    write_folder(tmp_path, n_train=200, n_test=20)
    kw = dict(name="folder", root=tmp_path, val_size=50, batch_size=32, eval_batch_size=64)
    train, val, test = make_loaders(**kw, seed=3)
    tr, va = ids(train), ids(val)
    assert len(tr) == 150 and len(va) == 50
    assert not set(tr) & set(va) and set(tr) | set(va) == set(range(200))
    assert ids(test) == list(range(20))  # test keeps file order
    xb, yb = next(iter(train))
    assert xb.shape == (32, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert 0 <= xb.min() and xb.max() <= 1
    train2, val2, _ = make_loaders(**kw, seed=3)
    assert ids(val2) == va and ids(train2) == tr  # same seed: same split and same order
    assert ids(train) != tr  # next epoch reshuffles
    _, val3, _ = make_loaders(**kw, seed=4)
    assert set(ids(val3)) != set(va)


def test_make_loaders_subset_and_no_val(tmp_path):
    write_folder(tmp_path, n_train=200)
    _, val_full, _ = make_loaders("folder", tmp_path, val_size=50, seed=0)
    train, val, _ = make_loaders("folder", tmp_path, val_size=50, subset=40, seed=0)
    assert len(train.dataset) == 40 and len(ids(train)) == 40
    assert ids(val) == ids(val_full)  # subset leaves the validation set alone
    train, val, _ = make_loaders("folder", tmp_path, val_size=0, subset=200, size=16)
    assert val is None and sorted(ids(train)) == list(range(200))
    assert train.dataset.tensors[0].shape == (200, 1, 16, 16)


def test_make_loaders_drop_last(tmp_path):
    write_folder(tmp_path, n_train=100)
    train, _, _ = make_loaders("folder", tmp_path, val_size=0, batch_size=32, drop_last=True)
    assert [len(y) for _, y in train] == [32, 32, 32]


@pytest.mark.parametrize("kw,match", [
    (dict(name="cifar"), "name"), (dict(size=0), "size"), (dict(size=2.5), "size"),
    (dict(val_size=-1), "val_size"), (dict(val_size=200), "val_size"),
    (dict(subset=0), "subset"), (dict(val_size=50, subset=151), "subset"),
    (dict(batch_size=0), "batch_size"), (dict(eval_batch_size=True), "eval_batch_size"),
    (dict(shift=-1), "shift"), (dict(shift=1.5), "shift"),
])
def test_make_loaders_validates(tmp_path, kw, match):
    write_folder(tmp_path, n_train=200)
    with pytest.raises(ValueError, match=match):
        make_loaders(**{"name": "folder", "root": tmp_path, **kw})


def test_load_split_validates_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_split("folder", tmp_path, split="val")


def test_idxdata_matches_make_loaders(tmp_path):
    write_folder(tmp_path, n_train=120)
    cfg = IDXData(name="folder", root=str(tmp_path), val_size=20, subset=50, batch_size=16)
    a = [ids(dl) for dl in cfg.loaders(seed=7)]
    b = [ids(dl) for dl in make_loaders("folder", tmp_path, val_size=20, subset=50,
                                        batch_size=16, seed=7)]
    assert a == b
    with pytest.raises(ValueError, match="batch_size"):
        IDXData(batch_size=0)


def test_idxdata_hydra_instantiate(tmp_path):
    hydra_utils = pytest.importorskip("hydra.utils")
    write_folder(tmp_path, n_train=60)
    cfg = {"_target_": "spikegrad.data.IDXData", "name": "folder", "root": str(tmp_path),
           "size": 16, "val_size": 10, "mirrors": ["http://127.0.0.1:1/"]}
    obj = hydra_utils.instantiate(cfg)
    assert isinstance(obj, IDXData) and obj.mirrors == ("http://127.0.0.1:1/",)
    train, val, test = obj.loaders(0)
    assert len(train.dataset) == 50 and next(iter(test))[0].shape[1:] == (1, 16, 16)


# ---------------------------------------------------------------------------- augmentation
def slow_shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Pixel-by-pixel translation of one [C, H, W] image with zero fill."""
    out = torch.zeros_like(img)
    _, h, w = img.shape
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[:, i, j] = img[:, i - dy, j - dx]
    return out


def test_shift_images_matches_slow_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 2, 7, 5, generator=g)
    dy = torch.tensor([0, 1, -2, 3, -7, 0])
    dx = torch.tensor([0, -1, 2, 0, 1, 5])
    out = shift_images(x, dy, dx)
    for b in range(6):
        torch.testing.assert_close(out[b], slow_shift(x[b], int(dy[b]), int(dx[b])), rtol=0, atol=0)


def test_shift_images_hand_example():
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    out = shift_images(x, torch.tensor([1]), torch.tensor([-1]))  # one down, one left
    assert out[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]


def test_shift_images_rejects_bad_shapes():
    with pytest.raises(ValueError, match="B, C, H, W"):
        shift_images(torch.zeros(3, 4, 4), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="dy and dx"):
        shift_images(torch.zeros(3, 1, 4, 4), torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_make_loaders_shift_augments_train_only_and_replays(tmp_path):
    write_folder(tmp_path, n_train=100, n_test=10)
    kw = dict(name="folder", root=tmp_path, val_size=20, batch_size=16, eval_batch_size=16, seed=1)
    plain_train, plain_val, plain_test = make_loaders(**kw)
    train, val, test = make_loaders(**kw, shift=2)
    images = train.dataset.tensors[0]
    n_moved = 0
    for x, y in train:
        for xb, i in zip(x, y):  # labels are sample indices: find the original image
            src = images[(train.dataset.tensors[1] == i).nonzero()[0, 0]]
            hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                    if torch.equal(xb, slow_shift(src, dy, dx))]
            assert hits, "every training image is a translation of its source by at most 2 pixels"
            n_moved += (0, 0) not in hits
    assert n_moved > 50  # 24 of 25 offsets move the image
    for a, b in [(val, plain_val), (test, plain_test)]:
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # the shifts come from the loader's generator: restoring its state replays the epoch exactly
    state = train.generator.get_state()
    first = [x for x, _ in train]
    train.generator.set_state(state)
    assert all(torch.equal(a, b) for a, b, in zip(first, [x for x, _ in train]))
