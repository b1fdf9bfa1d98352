"""The CPU's cache sizes, read at run time, to size blocks of work to the caches of the machine at hand.

:func:`cache_sizes` gives the bytes of L1 data, L2 and L3 cache one CPU can count on: each cache's
size divided by the number of CPUs that share it (``lscpu``'s "L3 cache: 32 MiB (1 instance)" on
2 CPUs is 16 MiB per CPU). It reads, in this order:

* Linux sysfs, ``/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size,shared_cpu_list}``;
* else the C library's ``sysconf`` names (``SC_LEVEL2_CACHE_SIZE``, ...), the L3 divided among all CPUs;
* else a conservative guess: L1d 32 KiB, L2 512 KiB, L3 2 MiB per CPU.

A CPU without an L3 gets its L2 as ``l3`` (the last level). ``$SPIKEGRAD_CACHE_SIZES`` overrides
any of the three, per CPU, e.g. ``SPIKEGRAD_CACHE_SIZES="l2=256K,l3=2M"`` (suffixes K, M, G: binary;
keys ``l1d``, ``l2``, ``l3``), so a user can force the sizes that a smaller-cache CPU gets. The
hardware is read once per process; the override is read at each call.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import NamedTuple

__all__ = ["CacheSizes", "ENV", "FALLBACK", "cache_sizes", "detect", "read_sysfs", "parse_size", "parse_override"]

ENV = "SPIKEGRAD_CACHE_SIZES"
SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")
_KEYS = ("l1d", "l2", "l3")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class CacheSizes(NamedTuple):
    """Bytes of cache per CPU (a cache's size / the CPUs sharing it), and where the numbers came from."""

    l1d: int     # L1 data cache
    l2: int      # L2 (unified)
    l3: int      # L3, or the last level if there is none (then the L2)
    source: str  # "sysfs", "sysconf" or "fallback", with "+env" when $SPIKEGRAD_CACHE_SIZES changed any


FALLBACK = CacheSizes(32 << 10, 512 << 10, 2 << 20, "fallback")


def parse_size(text: str) -> int:
    """Bytes of ``"32K"``, ``"1024K"``, ``"32M"``, ``"1.5M"``, ``"65536"`` (suffixes binary; ``KiB``, ``MB`` too).

    Raises:
        ValueError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a cache size: {text!r} (expected e.g. 256K, 4M or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _count_cpus(cpu_list: str) -> int:
    """Number of CPUs in a list like ``"0-3,8-11"``."""
    n = 0
    for part in cpu_list.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
    return n


def read_sysfs(root: Path = SYSFS) -> dict[str, int]:
    """Per-CPU bytes of the data / unified caches listed under ``root`` (a ``cpuN/cache`` folder):
    ``{"l1d": ..., "l2": ..., "l3": ...}`` for the levels found; empty if nothing can be read."""
    out: dict[str, int] = {}
    for index in sorted(Path(root).glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = parse_size((index / "size").read_text())
            shared = index / "shared_cpu_list"
            cpus = _count_cpus(shared.read_text()) if shared.exists() else 1
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and 1 <= level <= 3 and size > 0:
            out[f"l{level}d" if level == 1 else f"l{level}"] = size // max(1, cpus)
    return out


def _read_sysconf() -> dict[str, int]:
    """Per-CPU bytes from the C library's ``sysconf`` names where it has them (glibc), the L3 divided among all CPUs."""
    names = {"l1d": "SC_LEVEL1_DCACHE_SIZE", "l2": "SC_LEVEL2_CACHE_SIZE", "l3": "SC_LEVEL3_CACHE_SIZE"}
    out = {}
    for key, name in names.items():
        try:
            size = os.sysconf(name) if name in os.sysconf_names else 0
        except (OSError, ValueError):
            size = 0
        if size > 0:
            out[key] = size // (os.cpu_count() or 1) if key == "l3" else size
    return out


def parse_override(text: str) -> dict[str, int]:
    """``"l2=256K,l3=2M"`` -> ``{"l2": 262144, "l3": 2097152}`` (keys ``l1d``, ``l2``, ``l3``).

    Raises:
        ValueError: an unknown key or a bad size, naming ``$SPIKEGRAD_CACHE_SIZES``.
    """
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in _KEYS:
            raise ValueError(f"${ENV}: {item!r} is not one of {', '.join(k + '=SIZE' for k in _KEYS)}")
        try:
            out[key] = parse_size(value)
        except ValueError as e:
            raise ValueError(f"${ENV}: {e}") from None
    return out


def detect(root: Path = SYSFS, override: str | None = None) -> CacheSizes:
    """The sizes read from sysfs under ``root``, else ``sysconf``, else :data:`FALLBACK`, level by
    level, then ``override`` (the text of ``$SPIKEGRAD_CACHE_SIZES``) on top."""
    found, source = read_sysfs(root), "sysfs"
    if "l2" not in found:
        found, source = _read_sysconf(), "sysconf"
    if "l2" not in found:
        found, source = {}, "fallback"
    sizes = {k: found.get(k, getattr(FALLBACK, k)) for k in _KEYS}
    if "l3" not in found and source != "fallback":
        sizes["l3"] = sizes["l2"]  # no L3: the L2 is the last level
    return _overridden(CacheSizes(**sizes, source=source), override)


def _overridden(sizes: CacheSizes, override: str | None) -> CacheSizes:
    forced = parse_override(override or "")
    return sizes._replace(**forced, source=sizes.source + "+env") if forced else sizes


@functools.lru_cache(maxsize=None)
def _hardware() -> CacheSizes:
    return detect()


def cache_sizes() -> CacheSizes:
    """This machine's :class:`CacheSizes` (read once per process), with ``$SPIKEGRAD_CACHE_SIZES`` applied."""
    return _overridden(_hardware(), os.environ.get(ENV))
