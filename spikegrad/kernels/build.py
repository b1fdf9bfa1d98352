"""Building and loading the C kernel library (``lif.c``, ``events.c`` and ``recurrent.c`` beside this file).

The library is compiled with the C compiler named by ``$CC`` (default ``cc``) into
``$SPIKEGRAD_CACHE`` (default ``~/.cache/spikegrad``)/native, once per source version (the file
name holds a digest of the sources, the flags and the machine kind). It is built with OpenMP when
the compiler has it (``-fopenmp``): its parallel regions then run on the OpenMP runtime PyTorch has
loaded (same ``libgomp.so.1``), on PyTorch's own intra-op threads; a compiler without OpenMP builds
it without. A loaded library must report the interface version :data:`ABI`, and gets the ctypes
signatures of its functions. :mod:`~spikegrad.kernels.native` keeps the process's library (built on
first use) and launches its functions.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["SOURCES", "HEADERS", "ABI", "FLAGS", "OPENMP", "cache_dir", "library_path", "load_library"]

SOURCES = tuple(Path(__file__).with_name(name) for name in ("lif.c", "events.c", "recurrent.c"))  # one library
HEADERS = (Path(__file__).with_name("kernels.h"),)  # included by the sources
ABI = 13  # lif.c's spikegrad_lif_abi()
# -ffp-contract=off: no fused multiply-adds (PyTorch's roundings); -fno-trapping-math lets the
# branch-free selects vectorize (it changes no result)
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math")
OPENMP = ("-fopenmp",)  # tried first; a compiler without OpenMP builds the library without it


def cache_dir() -> Path:
    """``$SPIKEGRAD_CACHE``, default ``~/.cache/spikegrad``."""
    root = os.environ.get("SPIKEGRAD_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "spikegrad"


def library_path() -> Path:
    """Where the library of these sources and flags, on this kind of machine, is cached."""
    key = (b"".join(p.read_bytes() for p in SOURCES + HEADERS)
           + " ".join((*FLAGS, platform.machine(), platform.system())).encode())
    digest = hashlib.sha256(key).hexdigest()[:16]  # a shared home across machines keeps one per kind
    return cache_dir() / "native" / f"spikegrad_lif_{digest}.so"


def _compile(path: Path, openmp: tuple[str, ...]) -> None:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler: {cc!r} is not on PATH (set CC to one)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        for extra in (openmp, ()):
            proc = subprocess.run([cc, *FLAGS, *extra, *map(str, SOURCES), "-o", tmp], capture_output=True,
                                  text=True)
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, path)  # atomic: parallel processes see the whole library or none
    finally:
        Path(tmp).unlink(missing_ok=True)


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        fwd = getattr(lib, f"lif_forward_{suffix}")
        fwd.argtypes = [i64, i64, i64, i64, c_int, p, p, p, p, p, p, p, p, i64, c_int, i64, p, p, p, p, p, i64]
        fwd.restype = None
        bwd = getattr(lib, f"lif_backward_{suffix}")
        bwd.argtypes = [i64, i64, i64, c_int, i64, i64, i64, c_int, p, p, i64, p, p, p, i64, p, c_int, real,
                        p, i64, p, i64, p, i64, p, p, p, p, i64, c_int, c_int, p, p, p, p]
        bwd.restype = c_int
        sur = getattr(lib, f"surrogate_grad_{suffix}")
        sur.argtypes = [i64, p, p, c_int, real]
        sur.restype = None
        lin = getattr(lib, f"event_linear_{suffix}")
        lin.argtypes = [i64, i64, c_int] + [i64] * 4 + [p] * 4 + [c_int]
        lin.restype = None
        conv = getattr(lib, f"event_conv2d_{suffix}")
        conv.argtypes = [i64, i64, c_int] + [i64] * 15 + [p] * 4 + [c_int]
        conv.restype = None
        mlp = getattr(lib, f"mlp_forward_{suffix}")
        mlp.argtypes = [i64, i64, c_int] + [i64] * 3 + [p] * 12
        mlp.restype = None
        pool = getattr(lib, f"if_maxpool_{suffix}")
        pool.argtypes = [i64, i64, c_int] + [i64] * 5 + [p, i64, p, p, p, real, real, c_int] + [i64] * 7 + [p]
        pool.restype = None
        rfwd = getattr(lib, f"rec_forward_{suffix}")
        rfwd.argtypes = [i64, i64, i64, c_int, p, i64] + [p] * 12 + [c_int] + [p] * 5
        rfwd.restype = i64
        rbwd = getattr(lib, f"rec_backward_at_{suffix}")
        rbwd.argtypes = [p, i64, real]
        rbwd.restype = c_int
    lib.spikegrad_openmp.restype = c_int


def load_library(openmp: tuple[str, ...] = OPENMP) -> ctypes.CDLL:
    """The kernel library from the cache, compiled first if it is not there (trying the flags ``openmp``,
    then none), with its interface version checked and its functions declared.

    Raises:
        RuntimeError: no compiler, a failed compilation, or another interface version.
        OSError: the library cannot be loaded.
    """
    path = library_path()
    if not path.is_file():
        _compile(path, openmp)
    lib = ctypes.CDLL(str(path))
    if lib.spikegrad_lif_abi() != ABI:
        raise RuntimeError(f"{path} has interface version {lib.spikegrad_lif_abi()}, expected {ABI}")
    _declare(lib)
    return lib
