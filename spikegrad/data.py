"""MNIST-family datasets from the original IDX gzip files, as in-memory tensors and DataLoaders.

Supported names: ``"mnist"``, ``"fashion_mnist"``, ``"kmnist"`` (downloaded from public mirrors
and checked against the published MD5 sums) and ``"folder"`` (any folder holding the four IDX
files under their standard names; no checksums, never downloaded unless ``mirrors`` is given).

Layers, from the bottom up:

- :func:`read_idx` reads one IDX file (gzip or plain) into a numpy array, validating it.
- :func:`area_resize` downsamples images by exact area averaging (also used by the encoders).
- :func:`download` fetches missing files into ``root`` (temp file, MD5 check, atomic rename).
- :func:`load_split` returns ``(images, labels)`` tensors for one split, resized and cached in
  :func:`cache_root` (never in the data folder), keyed by the raw files' content.
- :func:`shift_images` / :class:`RandomShift` translate images (training-set augmentation).
- :func:`make_loaders` returns ``(train, val, test)`` DataLoaders; :class:`IDXData` holds the
  same arguments for Hydra (``_target_: spikegrad.data.IDXData``) and builds them with
  ``.loaders(seed)``.

Images are float32 in [0, 1], shape ``[N, H, W]`` (no channel axis); labels are int64 ``[N]``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

__all__ = [
    "DATASETS", "SPLIT_FILES", "DatasetInfo", "IDXData", "RandomShift", "area_matrix", "area_resize",
    "cache_root", "check_loader_args", "check_name", "default_root", "download", "fetch_to", "is_int", "load_split",
    "make_loaders", "read_idx", "sha256_files", "shift_images",
]

SPLIT_FILES: dict[str, tuple[str, str]] = {  # split -> (images file, labels file)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES: tuple[str, ...] = SPLIT_FILES["train"] + SPLIT_FILES["test"]


class DatasetInfo(NamedTuple):
    mirrors: tuple[str, ...]  # base URLs, tried in order; a file's URL is base + file name
    md5: dict[str, str]       # file name -> published MD5 (empty: files are not checksummed)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion_mnist": DatasetInfo(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    # KMNIST (Clanuwat et al. 2018, CODH): MD5s as published with torchvision.datasets.KMNIST.
    "kmnist": DatasetInfo(
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
         "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
         "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
         "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"}),
    "folder": DatasetInfo((), {}),
}

N_CLASSES: dict[str, int] = {"mnist": 10, "fashion_mnist": 10, "kmnist": 10}  # "folder": any labels

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IMAGES_MAGIC, _LABELS_MAGIC = 0x0803, 0x0801  # 2051: uint8 [N, rows, cols]; 2049: uint8 [N]
_RESIZE_METHOD = "area"  # tag in the cache file name; bump if area_resize ever changes


# --------------------------------------------------------------------------------------- IDX
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or plain), validating its header and size.

    Args:
        path: the file. Gzip is detected from its first bytes, not from its name.
    Returns:
        array with the file's dims and dtype (uint8 for MNIST-style files), native byte
        order, writable.
    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: bad gzip stream, unknown magic number, or a payload whose size does not
            match the header dims (truncated or trailing bytes); the message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({e}).") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        magic = int.from_bytes(raw[:4].ljust(4, b"\0"), "big")
        raise ValueError(
            f"{path}: not an IDX file (magic number {magic:#010x}; expected 0x0000TTDD with "
            f"type TT in {[f'{t:#04x}' for t in _IDX_DTYPES]} and DD >= 1 dims).")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header}).")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX payload is {len(raw) - header} bytes but dims {list(dims)} of "
            f"{dtype.name} need {expected} "
            f"({'truncated' if len(raw) - header < expected else 'trailing bytes'}).")
    data = np.frombuffer(raw, dtype, math.prod(dims), header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # native byte order, writable copy


# ---------------------------------------------------------------------------------- resizing
def area_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Overlap-fraction matrix of 1-D area resampling.

    Output cell ``i`` covers ``[i, i + 1) * n_in / n_out`` in input-pixel units; entry ``[i, j]``
    is the length of its overlap with input pixel ``[j, j + 1)`` divided by the cell length, so
    every row sums to 1 (computed in exact integer arithmetic, then divided once).

    Args:
        n_in: input length (pixels), >= 1.
        n_out: output length (pixels), >= 1.
        dtype: floating dtype of the result.
    Returns:
        M [n_out, n_in]; ``M @ x`` area-resamples a length-``n_in`` signal ``x``.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"area_matrix needs n_in >= 1 and n_out >= 1, got {n_in}, {n_out}.")
    i = torch.arange(n_out).unsqueeze(1)  # [n_out, 1]; cell i is [i*n_in, (i+1)*n_in) / n_out
    j = torch.arange(n_in).unsqueeze(0)   # [1, n_in];  pixel j is [j*n_out, (j+1)*n_out) / n_out
    overlap = (torch.minimum((i + 1) * n_in, (j + 1) * n_out)
               - torch.maximum(i * n_in, j * n_out)).clamp_min(0)  # integer, units of 1/n_out
    return overlap.to(dtype) / n_in


def area_resize(images: Tensor, size: int) -> Tensor:
    """Exact area resampling (box filter): each output pixel is the mean over its footprint.

    Computes ``M_h @ X @ M_w.T`` with the overlap matrices of :func:`area_matrix`, so constant
    images stay constant and the mean intensity is preserved for any sizes.

    Args:
        images: float tensor [..., H, W] (e.g. [N, H, W]), any units.
        size: output height and width (pixels), >= 1.
    Returns:
        [..., size, size], dtype and device of ``images``.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim < 2:
        raise ValueError("area_resize needs a floating-point tensor [..., H, W]; "
                         "convert uint8 images with images.to(torch.float32) / 255 first.")
    _check_size(size)
    m_h = area_matrix(images.shape[-2], size).to(images)  # [size, H]
    m_w = area_matrix(images.shape[-1], size).to(images)  # [size, W]
    return m_h @ images @ m_w.T                           # [..., size, size]


# -------------------------------------------------------------------------------- files, download
def default_root(name: str) -> Path:
    """Default folder of a dataset.

    Returns:
        ``$SPIKEGRAD_DATA/<name>`` if that variable is set, else ``~/.cache/spikegrad/<name>``.
    """
    check_name(name)
    base = os.environ.get("SPIKEGRAD_DATA")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "spikegrad") / name


def cache_root() -> Path:
    """Folder of the resized-image caches.

    Returns:
        ``$SPIKEGRAD_CACHE/resized`` if that variable is set, else ``~/.cache/spikegrad/resized``
        (the compiled kernels live beside it, in ``native``).
    """
    base = os.environ.get("SPIKEGRAD_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "spikegrad") / "resized"


def sha256_files(paths: Sequence[Path]) -> str:
    """SHA-256 (hex) of the concatenated contents of ``paths``: the key of a cache entry."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_to(url: str, dest: Path, timeout: float, progress: bool, check: Callable[[Path, str], None]) -> None:
    """Streams ``url`` to a temp file beside ``dest`` (with a progress bar), calls
    ``check(temp_path, md5_hex)``, which raises on a bad file, then renames the file to ``dest``.
    Nothing is left behind when the download or the check fails."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": "spikegrad"})
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(request, timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False,
                      disable=not progress) as bar:
                while chunk := r.read(1 << 16):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
        check(Path(tmp), h.hexdigest())
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fetch(url: str, dest: Path, md5: str | None, timeout: float, progress: bool) -> None:
    """Streams ``url`` to ``dest`` (:func:`fetch_to`), checking its MD5, or, without one, that it parses as IDX."""
    def check(tmp: Path, digest: str) -> None:
        if md5 is not None and digest != md5:
            raise ValueError(f"MD5 mismatch for {dest.name}: got {digest}, expected {md5}")
        if md5 is None:
            read_idx(tmp)  # no checksum to rely on: at least check that it parses

    fetch_to(url, dest, timeout, progress, check)


def download(name: str, root: str | os.PathLike | None = None,
             mirrors: Sequence[str] | None = None, files: Sequence[str] = ALL_FILES,
             timeout: float = 30.0, progress: bool = True) -> Path:
    """Downloads the IDX files of a dataset into ``root`` that are missing or fail their MD5.

    Mirrors are tried in order per file; each file goes to a temp file in ``root``, is checked
    against the published MD5 (or, for datasets without one, parsed with :func:`read_idx`) and
    only then renamed into place, so ``root`` never holds a partial or corrupt file.

    Args:
        name: a key of :data:`DATASETS`.
        root: target folder (created); None means :func:`default_root`.
        mirrors: base URLs (``http(s)://`` or ``file://``) replacing the dataset's defaults.
        files: the file names to ensure (default: all four).
        timeout: socket timeout per request (seconds).
        progress: show a tqdm progress bar per file.
    Returns:
        the resolved root folder.
    Raises:
        RuntimeError: a file could not be fetched from any mirror (each failure is listed).
    """
    info = DATASETS[check_name(name)]
    root = _resolve_root(name, root)
    mirrors = info.mirrors if mirrors is None else tuple(mirrors)
    root.mkdir(parents=True, exist_ok=True)
    missing, corrupt = _check_files(root, files, info.md5)
    for fname in missing + [f for f, _ in corrupt]:
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + fname
            try:
                _fetch(url, root / fname, info.md5.get(fname), timeout, progress)
                break
            except (OSError, ValueError, http.client.HTTPException) as e:
                errors.append(f"  {url}: {e}")
        else:
            raise RuntimeError(
                f"Could not download {fname} for {name!r} into {root}:\n"
                + ("\n".join(errors) or "  no mirrors given") + "\n"
                + _where_to_put(name, root))
    return root


def _check_files(root: Path, files: Sequence[str], md5: dict[str, str]
                 ) -> tuple[list[str], list[tuple[str, str]]]:
    """Returns (missing file names, [(corrupt file name, its actual MD5)])."""
    missing = [f for f in files if not (root / f).is_file()]
    corrupt = [(f, got) for f in files if f not in missing and f in md5
               and (got := _md5(root / f)) != md5[f]]
    return missing, corrupt


def _where_to_put(name: str, root: Path) -> str:
    return (f"Put the IDX files ({', '.join(ALL_FILES)}) in {root}, or point the run at a "
            f"folder that holds them with data.root=DIR (root=DIR in Python)"
            + (", or download them with data.download=true." if DATASETS[name].mirrors else "."))


def _ensure_files(name: str, root: Path, files: Sequence[str], download_: bool,
                  mirrors: Sequence[str] | None) -> None:
    info = DATASETS[name]
    if download_ and (info.mirrors or mirrors):
        download(name, root, mirrors, files)
        return
    missing, corrupt = _check_files(root, files, info.md5)
    if missing or corrupt:
        msg = f"Dataset {name!r} in {root}:"
        if missing:
            msg += f"\n  missing: {', '.join(missing)}"
        for f, got in corrupt:
            msg += f"\n  corrupted (MD5 {got}, expected {info.md5[f]}): {f}"
        raise (FileNotFoundError if missing else ValueError)(msg + "\n" + _where_to_put(name, root))


# ---------------------------------------------------------------------------------- splits
def load_split(name: str = "mnist", root: str | os.PathLike | None = None, split: str = "train",
               size: int | None = None, download: bool = True,
               mirrors: Sequence[str] | None = None, cache: bool = True,
               cache_dir: str | os.PathLike | None = None,
               num_classes: int | None = None) -> tuple[Tensor, Tensor]:
    """Loads one split of an IDX dataset into memory.

    The raw files are checked (MD5 when published, else IDX structure) and, if ``download`` is
    set, fetched when missing or corrupt; labels outside the data set's classes are an error that
    names the file. With ``size`` the images are area-resized once and cached in ``cache_dir``
    under a name holding the SHA-256 of the raw files' content, so replaced files are never served
    from a stale cache (an unwritable ``cache_dir`` only skips caching, with a warning). Nothing is
    written into ``root`` except downloaded files.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"``, ``"kmnist"`` or ``"folder"``.
        root: folder holding the IDX files; None means :func:`default_root` (required for
            ``"folder"``).
        split: ``"train"`` or ``"test"``.
        size: output height = width (pixels) via :func:`area_resize`; None keeps the originals.
        download: fetch missing/corrupt files from the mirrors (ignored for ``"folder"`` unless
            ``mirrors`` is given).
        mirrors: base URLs replacing the dataset's default mirrors.
        cache: read/write the resized-image cache file.
        cache_dir: folder of the cache files; None means :func:`cache_root`.
        num_classes: labels must lie in ``[0, num_classes)``; None: 10 for the MNIST family, no
            check for ``"folder"``.
    Returns:
        images float32 [N, H, W] in [0, 1] (H = W = ``size`` if given) and labels int64 [N].
    Raises:
        ValueError: bad arguments, corrupt files, or files of the wrong kind.
        FileNotFoundError: files missing and not downloadable; names them and the folder.
    """
    check_name(name)
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {list(SPLIT_FILES)}, got {split!r}.")
    if size is not None:
        _check_size(size)
    root = _resolve_root(name, root)
    files = SPLIT_FILES[split]
    _ensure_files(name, root, files, download, mirrors)

    n_classes = num_classes if num_classes is not None else N_CLASSES.get(name)
    cache_file = digest = None
    if size is not None and cache:
        digest = sha256_files([root / f for f in files])
        cache_file = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / \
            f"{name}_{split}_{size}px_{_RESIZE_METHOD}_{digest[:24]}.pt"
        cached = None
        if cache_file.is_file():
            try:
                cached = torch.load(cache_file, weights_only=True)
                cached = cached if cached["sha256"] == digest else None
            except Exception as e:  # unreadable cache: rebuild it
                warnings.warn(f"Ignoring unreadable cache {cache_file}: {e}", stacklevel=2)
                cached = None
        if cached is not None:
            _check_labels(cached["labels"], n_classes, root / files[1])
            return cached["images"], cached["labels"]

    images, labels = _read_pair(root, files)
    _check_labels(labels, n_classes, root / files[1])
    if size is not None and images.shape[1:] != (size, size):
        images = area_resize(images, size).clamp_(0.0, 1.0)  # float64 rounding can overshoot 1 by 1 ulp
        if cache_file is not None:
            _save_atomic({"images": images, "labels": labels, "sha256": digest}, cache_file)
    return images, labels


def _read_pair(root: Path, files: tuple[str, str]) -> tuple[Tensor, Tensor]:
    """Reads and cross-checks an (images, labels) pair of IDX files."""
    x, y = read_idx(root / files[0]), read_idx(root / files[1])
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"{root / files[0]}: expected uint8 images [N, rows, cols] (IDX magic "
                         f"{_IMAGES_MAGIC}), got {x.dtype} with shape {list(x.shape)}.")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise ValueError(f"{root / files[1]}: expected uint8 labels [N] (IDX magic "
                         f"{_LABELS_MAGIC}), got {y.dtype} with shape {list(y.shape)}.")
    if len(x) != len(y):
        raise ValueError(f"{root}: {files[0]} has {len(x)} images but {files[1]} has "
                         f"{len(y)} labels.")

    return torch.from_numpy(x).to(torch.float32) / 255, torch.from_numpy(y).to(torch.int64)


def _check_labels(labels: Tensor, n_classes: int | None, path: Path) -> None:
    """Labels int64 [N] must lie in ``[0, n_classes)`` (no check for None); the error names the file."""
    if n_classes is None or not len(labels) or int(labels.max()) < n_classes:
        return
    i = int((labels >= n_classes).nonzero()[0, 0])
    raise ValueError(f"{path}: label {int(labels[i])} at index {i} is outside the {n_classes} classes "
                     f"(0..{n_classes - 1}); the file is corrupt or belongs to another data set. Replace it, or "
                     "set data.num_classes (num_classes=) to the number of classes of your data")


def _save_atomic(obj: dict, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as e:
        warnings.warn(f"Not caching resized images in {path.parent} ({e}).", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- augmentation
def shift_images(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Translate each image by whole pixels, filling the uncovered border with zeros.

    Args:
        x: images ``[B, C, H, W]``.
        dy, dx: int64 ``[B]``, shift of each image in pixels (positive: down / right).
    Returns:
        ``[B, C, H, W]``, ``out[b, :, i, j] = x[b, :, i - dy[b], j - dx[b]]`` (0 outside the image).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}.")
    b, _, h, w = x.shape
    if dy.shape != (b,) or dx.shape != (b,):
        raise ValueError(f"dy and dx must have shape ({b},), got {tuple(dy.shape)} and {tuple(dx.shape)}.")
    pad = int(max(dy.abs().max(), dx.abs().max())) if b else 0
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(h, device=x.device) + pad - dy[:, None].to(x.device)  # [B, H]
    cols = torch.arange(w, device=x.device) + pad - dx[:, None].to(x.device)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return xp[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


class RandomShift:
    """Collate function that translates each training image by a random whole-pixel offset.

    Every image of a batch gets its own shift ``(dy, dx)``, uniform in ``[-max_shift, max_shift]``
    on each axis, drawn from ``generator``. :func:`make_loaders` passes the training loader's own
    generator, so a resumed run replays the same shifts.

    Args:
        max_shift: largest translation in pixels (>= 1).
        generator: random generator for the offsets (None: the global one).
    """

    def __init__(self, max_shift: int, generator: torch.Generator | None = None):
        if not is_int(max_shift) or max_shift < 1:
            raise ValueError(f"max_shift must be an int >= 1 (pixels), got {max_shift!r}; "
                             "use shift=0 for no augmentation.")
        self.max_shift, self.generator = int(max_shift), generator

    def __call__(self, batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        x = torch.stack([item[0] for item in batch])
        y = torch.stack([item[1] for item in batch])
        s = self.max_shift
        d = torch.randint(-s, s + 1, (2, len(batch)), generator=self.generator)
        return shift_images(x, d[0], d[1]), y


# --------------------------------------------------------------------------------- loaders
def make_loaders(name: str = "mnist", root: str | os.PathLike | None = None,
                 download: bool = True, size: int | None = None, val_size: int = 5000,
                 subset: int | None = None, batch_size: int = 128, eval_batch_size: int = 1000,
                 seed: int = 0, mirrors: Sequence[str] | None = None, drop_last: bool = False,
                 shift: int = 0, num_classes: int | None = None) -> tuple[DataLoader, DataLoader | None, DataLoader]:
    """Train / validation / test DataLoaders over in-memory tensors.

    A permutation of the training set drawn from ``seed`` holds out its first ``val_size``
    samples as the validation set; ``subset`` keeps only the first ``subset`` of the remaining
    (shuffled) training samples. The train loader reshuffles every epoch with a
    ``torch.Generator`` seeded by ``seed``; validation and test keep a fixed order. Batches are
    ``(images float32 [B, 1, H, W] in [0, 1], labels int64 [B])`` (one channel, as conv layers expect).

    Args:
        name, root, download, size, mirrors: as in :func:`load_split`.
        val_size: samples held out of the training split for validation (0: no val loader).
        subset: number of training samples to use (None: all that remain after ``val_size``).
        batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        seed: seeds the split, the subset and the training order.
        drop_last: drop the last incomplete training batch (constant shapes for compiled models).
        shift: augment the training set by random translations of up to ``shift`` pixels per
            axis (:class:`RandomShift`); 0: none. Validation and test images are never shifted.
        num_classes: as in :func:`load_split`.
    Returns:
        (train_loader, val_loader or None when ``val_size == 0``, test_loader).
    """
    check_loader_args(val_size, subset, batch_size, eval_batch_size, seed)
    if not is_int(shift) or shift < 0:
        raise ValueError(f"shift must be an int >= 0 (pixels of random translation), got {shift!r}.")
    if num_classes is not None and (not is_int(num_classes) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}.")
    x, y = load_split(name, root, "train", size, download, mirrors, num_classes=num_classes)
    x_test, y_test = load_split(name, root, "test", size, download, mirrors, num_classes=num_classes)
    x, x_test = x.unsqueeze(1), x_test.unsqueeze(1)  # [N, 1, H, W]
    n = len(y)
    if val_size >= n:
        raise ValueError(f"val_size={val_size} must be smaller than the {n} training samples.")
    if subset is not None and subset > n - val_size:
        raise ValueError(f"subset={subset} exceeds the {n - val_size} training samples left "
                         f"after val_size={val_size}; lower subset or val_size (None: all).")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:][:subset]
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(x[train_idx], y[train_idx]), batch_size=batch_size,
                       shuffle=True, drop_last=drop_last, generator=gen,
                       collate_fn=RandomShift(shift, gen) if shift else None)
    val = (DataLoader(TensorDataset(x[val_idx], y[val_idx]), batch_size=eval_batch_size)
           if val_size else None)
    test = DataLoader(TensorDataset(x_test, y_test), batch_size=eval_batch_size)
    return train, val, test


@dataclass
class IDXData:
    """Dataset settings for Hydra; ``.loaders(seed)`` calls :func:`make_loaders` with them.

    Example config (``conf/data/mnist.yaml``)::

        _target_: spikegrad.data.IDXData
        name: mnist
        root: null          # null: $SPIKEGRAD_DATA/mnist or ~/.cache/spikegrad/mnist
        size: null          # pixels; e.g. 16 for 16x16 area-resized images
        shift: 0            # pixels of random translation of training images (augmentation)
        val_size: 5000      # samples
        batch_size: 128
    """

    name: str = "mnist"
    root: str | None = None
    download: bool = True
    size: int | None = None
    val_size: int = 5000
    subset: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 1000
    mirrors: Sequence[str] | None = None
    drop_last: bool = False
    shift: int = 0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.size is not None:
            _check_size(self.size)
        check_loader_args(self.val_size, self.subset, self.batch_size, self.eval_batch_size, 0)
        if self.mirrors is not None:
            self.mirrors = tuple(self.mirrors)  # plain tuple, also from an OmegaConf ListConfig

    def loaders(self, seed: int = 0) -> tuple[DataLoader, DataLoader | None, DataLoader]:
        """(train, val or None, test) loaders; see :func:`make_loaders`."""
        return make_loaders(**asdict(self), seed=seed)


# ------------------------------------------------------------------------------ validation
def check_name(name: str) -> str:
    """``name`` if it is one of :data:`DATASETS`; else a ValueError listing them."""
    if name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}.")
    return name


def _resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    if root is None:
        if name == "folder":
            raise ValueError("name='folder' needs root=DIR (data.root=DIR), the folder with the "
                             f"four IDX files ({', '.join(ALL_FILES)}).")
        return default_root(name)
    return Path(root).expanduser()


def is_int(v: object) -> bool:
    """True for a Python or numpy integer that is not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_size(size: int) -> None:
    if not is_int(size) or size < 1:
        raise ValueError(f"size must be a positive int (pixels) or None, got {size!r}.")


def check_loader_args(val_size: int, subset: int | None, batch_size: int,
                      eval_batch_size: int, seed: int) -> None:
    """Raise a ValueError naming the argument unless the split and batch sizes are valid ints
    (``val_size >= 0``, ``batch_size, eval_batch_size >= 1``, ``seed >= 0``, ``subset`` None or >= 1)."""
    for arg, v, low in [("val_size", val_size, 0), ("batch_size", batch_size, 1),
                        ("eval_batch_size", eval_batch_size, 1), ("seed", seed, 0)]:
        if not is_int(v) or v < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {v!r}.")
    if subset is not None and (not is_int(subset) or subset < 1):
        raise ValueError(f"subset must be a positive int (samples) or None (all), got {subset!r}.")
