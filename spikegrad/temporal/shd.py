"""Readers of the Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC) data sets.

Cramer, Stradmann, Schemmel & Zenke (2020), "The Heidelberg spiking data sets for the systematic
evaluation of spiking neural networks", IEEE TNNLS. Spoken words passed through a model of the
inner ear give spike trains on 700 channels, about 1 s per word. The data are CC BY 4.0; this
reader is plain h5py (no ``tonic``, which is GPL).

Files, one HDF5 file per split, each also published gzipped as ``NAME.h5.gz`` (both are read; a
``.gz`` is decompressed once into ``$SPIKEGRAD_CACHE/heidelberg`` (``~/.cache/spikegrad/heidelberg``), never into
the data folder)::

    shd: shd_train.h5, shd_test.h5                  20 classes (digits 0-9, English and German)
    ssc: ssc_train.h5, ssc_valid.h5, ssc_test.h5    35 classes (speech commands)

    spikes/times   [N] variable-length float arrays: spike times of sample k, seconds
    spikes/units   [N] variable-length uint16 arrays: channel ids 0..699 of the same spikes
    labels         [N] uint16 class indices
    extra/speaker  [N] speaker ids (extra/keys, extra/meta_info: unused here)

The files are checked for this layout (keys, lengths, value ranges), not against checksums: no
published MD5 sums are recorded here.

- :func:`load_events` reads one file into :class:`~spikegrad.temporal.events.EventSamples`
  (spikes binned to steps of ``dt_s`` seconds, optionally summed over groups of channels).
- :func:`speaker_split` holds out whole speakers for validation (SHD has no validation file).
- :func:`download` fetches the ``.h5.gz`` files (optional; the documented path is offline:
  put the files in a folder and set ``data.root=DIR``).
- :class:`SHDData` holds the settings for Hydra (``_target_: spikegrad.temporal.shd.SHDData``)
  and builds ``(train, val, test)`` loaders with ``.loaders(seed)``.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..data import cache_root, check_loader_args, fetch_to, is_int, sha256_files
from .events import EventSamples, event_loaders

__all__ = ["BASE_URL", "FILES", "N_CHANNELS", "N_CLASSES", "SHDData", "download", "load_events", "speaker_split"]

log = logging.getLogger("spikegrad.data")

N_CHANNELS = 700  # channels of the cochlea model in every SHD / SSC file
N_CLASSES: dict[str, int] = {"shd": 20, "ssc": 35}
FILES: dict[str, dict[str, str]] = {  # data set -> split -> file name (also read as NAME.gz)
    "shd": {"train": "shd_train.h5", "test": "shd_test.h5"},
    "ssc": {"train": "ssc_train.h5", "valid": "ssc_valid.h5", "test": "ssc_test.h5"},
}
BASE_URL = "https://zenkelab.org/datasets/"  # a file's URL is BASE_URL + NAME.h5.gz
_KEYS = ("spikes/times", "spikes/units", "labels")  # required datasets
_SPEAKER_KEY = "extra/speaker"
_DIVISORS = [d for d in range(1, N_CHANNELS + 1) if N_CHANNELS % d == 0]


# ------------------------------------------------------------------------------- one file
def load_events(path: str | os.PathLike, n_steps: int, dt_s: float, channels: int = N_CHANNELS,
                n_classes: int | None = None) -> tuple[EventSamples, Tensor]:
    """Reads one SHD / SSC file (``.h5`` or ``.h5.gz``) and bins its spikes to time steps.

    A spike at ``t`` seconds on channel ``c`` becomes the event ``(floor(t / dt_s),
    c // (700 // channels))``. Spikes at step ``>= n_steps`` (after ``n_steps * dt_s`` seconds)
    are dropped; their number is logged at INFO on the ``spikegrad.data`` logger. Several spikes
    of one unit in one step (neighbouring channels summed, or a short ``dt_s``) add up in
    :meth:`EventSamples.dense`. Vectorised: 10k samples load in seconds.

    Args:
        path: the file; gzip is detected from its first bytes, and a gzipped file is decompressed
            once into ``$SPIKEGRAD_CACHE/heidelberg`` under a name holding its SHA-256.
        n_steps: ``T``, steps per sample (>= 1).
        dt_s: step length in seconds (> 0); ``n_steps * dt_s`` is the window kept.
        channels: input units after summing groups of ``700 // channels`` neighbouring channels;
            must divide 700 (700: no reduction).
        n_classes: labels must lie in ``[0, n_classes)``; None: no check.
    Returns:
        ``(events, speakers)``: :class:`EventSamples` of the ``N`` samples (``n_steps`` steps,
        ``channels`` units, int64 labels ``[N]``) and the speaker ids int64 ``[N]`` (all -1 when
        the file has no ``extra/speaker``).
    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: bad arguments; a truncated or corrupt file (re-download it); a missing key
            (the message lists the keys found); channel ids outside 0..699, negative or
            non-finite times, labels outside ``n_classes``.
    """
    _check_binning(n_steps, dt_s, channels)
    path = Path(path)
    with _open_h5(path) as f:
        times, units, labels, speakers = _read(f, path)
    n = len(labels)
    counts = np.fromiter(map(len, times), np.int64, n)  # [N] spikes per sample
    t = np.concatenate(times).astype(np.float64)  # [E] seconds
    c = np.concatenate(units).astype(np.int64)    # [E] channel ids
    sample = np.repeat(np.arange(n), counts)      # [E] sample of each spike
    _check_values(path, t, c, labels, n_classes, sample)

    step = np.floor(t / dt_s)  # float64, compared before the cast so huge times cannot overflow
    keep = step < n_steps
    dropped = int(keep.size - keep.sum())
    log.info("%s: %s of %s spikes (%.2f%%) fall after the %d-step window (%g s) and were dropped",
             path.name, f"{dropped:,}", f"{keep.size:,}", 100 * dropped / max(keep.size, 1), n_steps,
             n_steps * dt_s)
    sample = sample[keep]
    offsets = np.concatenate([[0], np.bincount(sample, minlength=n).cumsum()])  # [N + 1]
    events = EventSamples(torch.from_numpy(step[keep].astype(np.int64)),
                          torch.from_numpy(c[keep] // (N_CHANNELS // channels)),
                          torch.from_numpy(offsets.astype(np.int64)), torch.from_numpy(labels.astype(np.int64)),
                          int(n_steps), int(channels))
    speakers = np.full(n, -1, np.int64) if speakers is None else speakers.astype(np.int64)
    return events, torch.from_numpy(speakers)


def _check_binning(n_steps: int, dt_s: float, channels: int) -> None:
    if not is_int(n_steps) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1 (steps per sample), got {n_steps!r}.")
    if (isinstance(dt_s, bool) or not isinstance(dt_s, (int, float, np.integer, np.floating))
            or not math.isfinite(dt_s) or dt_s <= 0):
        raise ValueError(f"dt_s must be a finite number > 0 (seconds per step, e.g. 0.01 for 100 steps "
                         f"over 1 s), got {dt_s!r}.")
    if not is_int(channels) or channels < 1 or N_CHANNELS % channels:
        raise ValueError(f"channels must divide {N_CHANNELS} (groups of {N_CHANNELS} // channels neighbouring "
                         f"channels are summed): one of {_DIVISORS}; got {channels!r}.")


def _open_h5(path: Path, label: str | None = None) -> h5py.File:
    """Opens ``path`` for reading, through a decompressed cache copy if it is gzipped.

    ``label``: the file name used in messages and in the cache name (default ``path.name``).
    """
    label = label or path.name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if not gzipped:
        try:
            return h5py.File(path, "r")
        except OSError as e:
            raise ValueError(_corrupt(path, e)) from e
    for _ in range(2):  # a damaged cache copy is removed and decompressed once more
        h5 = _decompressed(path, label)
        try:
            return h5py.File(h5, "r")
        except OSError as e:
            h5.unlink(missing_ok=True)
            error = e
    raise ValueError(_corrupt(path, error)) from error


def _decompressed(path: Path, label: str) -> Path:
    """The decompressed copy of the gzipped ``path`` in the cache (made once, atomically)."""
    stem = label.removesuffix(".gz").removesuffix(".h5")
    out = cache_root().parent / "heidelberg" / f"{stem}_{sha256_files([path])[:24]}.h5"
    if out.is_file():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    except OSError as e:
        raise OSError(f"Cannot decompress {label} into the cache folder {out.parent} ({e}). Set SPIKEGRAD_CACHE "
                      f"to a writable folder, or decompress it beside the .gz yourself (gunzip -k {path}).") from e
    try:
        with os.fdopen(fd, "wb") as dst, gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, out)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(_corrupt(path, e, f"could not be decompressed into {out.parent}")) from e
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def _corrupt(path: Path, error: BaseException, what: str = "is not a readable HDF5 file") -> str:
    return (f"{path} {what} ({type(error).__name__}: {error}). The file is truncated or corrupt: delete it and "
            f"re-download it ({BASE_URL}{Path(path).name.removesuffix('.gz')}.gz, or data.download=true).")


def _read(f: h5py.File, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(times [N] object, units [N] object, labels [N] int, speakers [N] int or None)``, checked."""
    for key in _KEYS:
        if not isinstance(f.get(key), h5py.Dataset):
            found = []
            f.visit(lambda name: found.append(name) if isinstance(f[name], h5py.Dataset) else None)
            raise ValueError(f"{path}: no dataset {key!r}; found {sorted(found)[:20]}. An SHD / SSC file holds "
                             f"{', '.join(_KEYS)} and {_SPEAKER_KEY}: is this the right file?")
    try:
        times, units, labels = (f[key][()] for key in _KEYS)
        speakers = f[_SPEAKER_KEY][()] if isinstance(f.get(_SPEAKER_KEY), h5py.Dataset) else None
    except OSError as e:
        raise ValueError(_corrupt(path, e)) from e
    for key, a in zip(_KEYS[:2], (times, units)):
        if a.ndim != 1 or a.dtype != object:
            raise ValueError(f"{path}: {key} must be a variable-length dataset (one array per sample), got "
                             f"dtype {a.dtype} with shape {list(a.shape)}.")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: labels must be integers [N], got dtype {labels.dtype} shape {list(labels.shape)}.")
    n = len(labels)
    if n == 0:
        raise ValueError(f"{path}: the file holds no samples (labels is empty).")
    shapes = {"spikes/times": times.shape, "spikes/units": units.shape, "labels": labels.shape}
    if speakers is not None:
        shapes[_SPEAKER_KEY] = speakers.shape
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{path}: datasets must all have one entry per sample, got shapes {shapes}.")
    n_t, n_u = np.fromiter(map(len, times), np.int64, n), np.fromiter(map(len, units), np.int64, n)
    if not np.array_equal(n_t, n_u):
        k = int(np.flatnonzero(n_t != n_u)[0])
        raise ValueError(f"{path}: sample {k} has {n_t[k]} spike times but {n_u[k]} channel ids.")
    return times, units, labels, speakers


def _check_values(path: Path, t: np.ndarray, c: np.ndarray, labels: np.ndarray, n_classes: int | None,
                  sample: np.ndarray) -> None:
    """Times finite and >= 0, channels in 0..699, labels in ``[0, n_classes)``; errors name the sample."""
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        e = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: sample {sample[e]} has the spike time {t[e]} s; times must be finite and >= 0.")
    bad = (c < 0) | (c >= N_CHANNELS)
    if bad.any():
        e = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: sample {sample[e]} has the channel id {c[e]}, outside 0..{N_CHANNELS - 1}; the "
                         "file is corrupt or not an SHD / SSC file.")
    if n_classes is not None and (labels.min() < 0 or labels.max() >= n_classes):
        k = int(np.flatnonzero((labels < 0) | (labels >= n_classes))[0])
        raise ValueError(f"{path}: label {labels[k]} of sample {k} is outside the {n_classes} classes "
                         f"(0..{n_classes - 1}); is this a file of another data set?")


# --------------------------------------------------------------------------------- splits
def speaker_split(speakers: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Training and validation indices that hold out whole speakers.

    The distinct speakers, in a random order drawn from ``torch.Generator().manual_seed(seed)``,
    are held out one by one; the number ``k`` taken (1 <= k < number of speakers) is the one
    whose held-out sample count is closest to ``val_fraction * N``.

    Args:
        speakers: int ``[N]``, the speaker of every sample.
        val_fraction: wanted fraction of samples in the validation set, in ``[0, 1)``; 0: none.
        seed: seeds the order of the speakers.
    Returns:
        ``(train_idx int64 [N - M], val_idx int64 [M])``, ascending, disjoint, together ``0..N-1``;
        no speaker has samples in both.
    """
    speakers = torch.as_tensor(speakers, dtype=torch.int64)
    _check_fraction(val_fraction)
    n = speakers.numel()
    if val_fraction == 0:
        return torch.arange(n), torch.zeros(0, dtype=torch.int64)
    ids, counts = torch.unique(speakers, return_counts=True)
    if len(ids) < 2:
        raise ValueError(f"Holding out whole speakers needs at least 2 speakers, got {ids.tolist()}; "
                         "set val_fraction=0 (data.val_fraction=0) for no validation set.")
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    held = counts[order].cumsum(0)[:-1]  # [S - 1] samples held out with the first 1, 2, ... speakers
    k = int((held.double() - val_fraction * n).abs().argmin()) + 1
    in_val = torch.isin(speakers, ids[order[:k]])
    return (~in_val).nonzero().flatten(), in_val.nonzero().flatten()


def _check_fraction(val_fraction: float) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1) (fraction of training samples held out by "
                         f"speaker; 0: no validation set), got {val_fraction!r}.")


# ---------------------------------------------------------------------------- files, download
def _resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    """``root``, or ``$SPIKEGRAD_DATA/<name>`` if set, else ``~/.cache/spikegrad/<name>``."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get("SPIKEGRAD_DATA")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "spikegrad") / name


def _where_to_put(name: str, root: Path) -> str:
    files = ", ".join(FILES[name].values())
    return (f"Put the files ({files}; plain or gzipped as NAME.h5.gz) in {root}, or point the run at a folder "
            f"that holds them with data.root=DIR (root=DIR in Python), or download them from {BASE_URL} with "
            "data.download=true.")


def _locate(name: str, root: Path) -> dict[str, Path]:
    """split -> the file of that split in ``root`` (plain ``.h5`` before ``.h5.gz``)."""
    found, missing = {}, []
    for split, fname in FILES[name].items():
        path = next((p for p in (root / fname, root / f"{fname}.gz") if p.is_file()), None)
        if path is None:
            missing.append(f"{fname} (or {fname}.gz)")
        found[split] = path
    if missing:
        raise FileNotFoundError(f"Data set {name!r} in {root}:\n  missing: {', '.join(missing)}\n"
                                + _where_to_put(name, root))
    return found


def download(name: str, root: str | os.PathLike | None = None, base_url: str = BASE_URL, timeout: float = 60.0,
             progress: bool = True) -> Path:
    """Downloads the ``NAME.h5.gz`` files of ``name`` that ``root`` lacks (neither plain nor gzipped).

    Each file goes to a temp file in ``root``, is checked for the SHD / SSC layout (there are no
    checksums to check it against) and only then renamed into place, so ``root`` never holds a
    partial file.

    Args:
        name: ``"shd"`` or ``"ssc"``.
        root: target folder (created); None: ``$SPIKEGRAD_DATA/<name>`` or ``~/.cache/spikegrad/<name>``.
        base_url: folder URL (``http(s)://`` or ``file://``); a file's URL is ``base_url + NAME.h5.gz``.
        timeout: socket timeout per request (seconds).
        progress: show a tqdm progress bar per file.
    Returns:
        the resolved root folder.
    Raises:
        RuntimeError: a file could not be fetched or is not a valid file (names the URL and the cause).
    """
    _check_name(name)
    root = _resolve_root(name, root)
    root.mkdir(parents=True, exist_ok=True)
    for fname in FILES[name].values():
        if (root / fname).is_file() or (root / f"{fname}.gz").is_file():
            continue
        url = f"{base_url.rstrip('/')}/{fname}.gz"
        try:
            _fetch(url, root / f"{fname}.gz", timeout, progress)
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise RuntimeError(f"Could not download {url} into {root}: {e}\n" + _where_to_put(name, root)) from e
    return root


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> None:
    """Streams ``url`` to ``dest`` (:func:`spikegrad.data.fetch_to`), checking its layout: these
    files have no published checksum, so the check is opening them and finding the SHD / SSC keys."""
    def check(tmp: Path, digest: str) -> None:
        with _open_h5(tmp, label=dest.name) as h5:
            missing = [key for key in _KEYS if not isinstance(h5.get(key), h5py.Dataset)]
        if missing:
            raise ValueError(f"the downloaded file lacks {missing}")

    fetch_to(url, dest, timeout, progress, check)


def _check_name(name: str) -> str:
    if name not in FILES:
        raise ValueError(f"name must be one of {list(FILES)}, got {name!r}.")
    return name


# -------------------------------------------------------------------------------- loaders
@dataclass
class SHDData:
    """SHD / SSC settings for Hydra; ``.loaders(seed)`` builds the DataLoaders.

    Batches are ``(x float32 [B, n_steps, channels] spike counts, y int64 [B])``, batch-first
    (``encoding=sequence`` makes them time-first). SHD has no validation file: ``val_fraction``
    of its training samples are held out by whole speakers (:func:`speaker_split`, seeded). SSC's
    validation set is ``ssc_valid.h5`` (``val_fraction`` is unused).

    Attributes:
        name: ``"shd"`` or ``"ssc"``.
        root: folder holding the files; None: ``$SPIKEGRAD_DATA/<name>`` or ``~/.cache/spikegrad/<name>``.
        download: fetch missing files from :data:`BASE_URL` first (default: offline).
        n_steps: steps per sample. dt_s: seconds per step (``n_steps * dt_s``: window kept, seconds).
        channels: input units (divides 700; groups of ``700 // channels`` channels summed).
        val_fraction: SHD: fraction of training samples held out by speaker (0: no val loader).
        subset: use only this many training samples (seeded choice; None: all).
        batch_size, eval_batch_size: training and validation / test batch sizes.
        drop_last: drop the last incomplete training batch.
        n_units, n_classes: input width (= channels) and number of classes (20 or 35); filled in
            when None and checked when given, so configs can refer to ``${data.n_units}``.
    """

    name: str = "shd"
    root: str | None = None
    download: bool = False
    n_steps: int = 100
    dt_s: float = 0.01
    channels: int = N_CHANNELS
    val_fraction: float = 0.1
    subset: int | None = None
    batch_size: int = 256
    eval_batch_size: int = 1000
    drop_last: bool = False
    n_units: int | None = None
    n_classes: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_binning(self.n_steps, self.dt_s, self.channels)
        _check_fraction(self.val_fraction)
        check_loader_args(0, self.subset, self.batch_size, self.eval_batch_size, 0)
        for field, want in [("n_units", self.channels), ("n_classes", N_CLASSES[self.name])]:
            got = getattr(self, field)
            if got is not None and got != want:
                raise ValueError(f"{field}={got!r} does not match {self.name!r} with channels={self.channels} "
                                 f"({field} = {want}); leave {field} unset (null) or set it to {want}.")
            setattr(self, field, want)

    def loaders(self, seed: int = 0) -> tuple[DataLoader, DataLoader | None, DataLoader]:
        """(train, val or None, test) loaders; see :func:`~spikegrad.temporal.events.event_loaders`."""
        root = _resolve_root(self.name, self.root)
        if self.download:
            download(self.name, root)
        paths = _locate(self.name, root)
        read = lambda split: load_events(paths[split], self.n_steps, self.dt_s, self.channels,  # noqa: E731
                                         self.n_classes)
        train, speakers = read("train")
        test, _ = read("test")
        if self.name == "ssc":
            val, _ = read("valid")
        elif self.val_fraction == 0:
            val = None
        else:
            if bool((speakers < 0).any()):
                raise ValueError(f"{paths['train']}: no {_SPEAKER_KEY!r} dataset, needed to hold out whole speakers "
                                 "for validation; set data.val_fraction=0 for no validation set.")
            train_idx, val_idx = speaker_split(speakers, self.val_fraction, seed)
            train, val = train.subset(train_idx), train.subset(val_idx)
        if self.subset is not None:
            if self.subset > len(train):
                raise ValueError(f"subset={self.subset} exceeds the {len(train)} training samples; lower it "
                                 "(None: all).")
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:self.subset]
            train = train.subset(pick.sort().values)
        return event_loaders(train, val, test, self.batch_size, self.eval_batch_size, seed, self.drop_last)
