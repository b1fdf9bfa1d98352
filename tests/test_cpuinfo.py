"""Cache sizes read at run time (spikegrad.kernels.cpuinfo) and the pieces of work sized from them."""

from pathlib import Path

import pytest

from spikegrad.conversion import executor
from spikegrad.kernels import cpuinfo, events
from spikegrad.kernels.cpuinfo import ENV, FALLBACK, CacheSizes, detect, parse_override, parse_size, read_sysfs

K, M = 1 << 10, 1 << 20


def fake_sysfs(root: Path, caches: list[tuple[int, str, str, str | None]]) -> Path:
    """A ``cpu0/cache`` folder with one ``index<k>`` per ``(level, type, size, shared_cpu_list or None)``."""
    for k, (level, kind, size, shared) in enumerate(caches):
        d = root / f"index{k}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
        if shared is not None:
            (d / "shared_cpu_list").write_text(f"{shared}\n")
    return root


def test_sysfs_sizes_are_per_cpu_shares(tmp_path):
    root = fake_sysfs(tmp_path, [(1, "Data", "32K", "0"), (1, "Instruction", "32K", "0"),
                                 (2, "Unified", "1024K", "0"), (3, "Unified", "32768K", "0-1")])
    assert read_sysfs(root) == {"l1d": 32 * K, "l2": M, "l3": 16 * M}
    assert detect(root) == CacheSizes(32 * K, M, 16 * M, "sysfs")


def test_sysfs_shared_lists_missing_files_and_no_l3(tmp_path):
    root = fake_sysfs(tmp_path / "a", [(1, "Data", "48K", None), (2, "Unified", "2048K", "0,1"),
                                       (3, "Unified", "30M", "0-3,8-11")])  # 8 CPUs share the L3
    assert read_sysfs(root) == {"l1d": 48 * K, "l2": M, "l3": 30 * M // 8}
    root = fake_sysfs(tmp_path / "b", [(1, "Data", "64K", "0"), (2, "Unified", "4M", "0-3")])
    assert detect(root) == CacheSizes(64 * K, M, M, "sysfs")  # no L3: the L2 is the last level
    root = fake_sysfs(tmp_path / "c", [(2, "Unified", "garbage", "0"), (2, "Unified", "512K", "0")])
    assert read_sysfs(root) == {"l2": 512 * K}  # an unreadable entry is skipped


def test_sysconf_then_fallback_when_sysfs_has_nothing(tmp_path, monkeypatch):
    names = {"SC_LEVEL1_DCACHE_SIZE": 190, "SC_LEVEL2_CACHE_SIZE": 191, "SC_LEVEL3_CACHE_SIZE": 192}
    values = {"SC_LEVEL1_DCACHE_SIZE": 32 * K, "SC_LEVEL2_CACHE_SIZE": 256 * K, "SC_LEVEL3_CACHE_SIZE": 8 * M}
    monkeypatch.setattr(cpuinfo.os, "sysconf_names", names)
    monkeypatch.setattr(cpuinfo.os, "sysconf", values.__getitem__)
    monkeypatch.setattr(cpuinfo.os, "cpu_count", lambda: 4)
    assert detect(tmp_path / "none") == CacheSizes(32 * K, 256 * K, 2 * M, "sysconf")  # the L3 among all CPUs
    monkeypatch.setattr(cpuinfo.os, "sysconf_names", {})  # no such names (not glibc)
    assert detect(tmp_path / "none") == FALLBACK
    assert FALLBACK == CacheSizes(32 * K, 512 * K, 2 * M, "fallback")


def test_the_environment_overrides_any_size(tmp_path, monkeypatch):
    root = fake_sysfs(tmp_path, [(1, "Data", "32K", "0"), (2, "Unified", "1024K", "0"), (3, "Unified", "32M", "0-1")])
    assert detect(root, "l2=256K, l3=4M") == CacheSizes(32 * K, 256 * K, 4 * M, "sysfs+env")
    assert detect(root, "") == detect(root)
    assert parse_override("l1d=48K,l2=1.25M,l3=65536") == {"l1d": 48 * K, "l2": 1280 * K, "l3": 65536}
    assert parse_size("8 MiB") == 8 * M and parse_size("1g") == 1 << 30
    with pytest.raises(ValueError, match=f"{ENV}.*l4"):
        parse_override("l4=1M")
    with pytest.raises(ValueError, match=f"{ENV}.*not a cache size"):
        parse_override("l2=big")
    monkeypatch.setenv(ENV, "l3=3M")  # read at each call
    hw = cpuinfo._hardware()
    assert cpuinfo.cache_sizes() == hw._replace(l3=3 * M, source=hw.source + "+env")
    monkeypatch.delenv(ENV)
    assert cpuinfo.cache_sizes() == hw and "env" not in hw.source and hw.l2 > 0 and hw.l3 > 0


def test_the_pieces_of_work_follow_the_cache_sizes(monkeypatch):
    # event_linear: blocks of 4, 2, 1 vectors whose weights fill at most half the L2 (1024 inputs, float32)
    assert [events.linear_block(1024, 1024, 4, l2) for l2 in (2 * M, 512 * K, 256 * K, 128 * K)] == [64, 64, 32, 16]
    assert events.linear_block(1024, 10, 4, 2 * M) == 16 and events.linear_block(1024, 1024, 8, 2 * M) == 32
    # rows per pass: their events (12 bytes each at worst) in half the L3 share, 1 to 256
    assert [events.linear_group(1024, 4, l3) for l3 in (16 * M, 2 * M, 1 * K)] == [256, 85, 1]
    # fused IF + max-pool: the whole 24 x 24 x 32 image in a 1 MiB L2, bands of 5 output rows in 256 KiB
    assert events.pool_band(24, 32, 2, 4, M) >= 12 and events.pool_band(24, 32, 2, 4, 256 * K) == 5
    # the chunk of the executor: a quarter of the L3 of the threads, within [16 MiB, 64 MiB]
    assert executor.chunk_budget(4, 1, 2 * M) == executor.MIN_CHUNK_BYTES // 4
    assert executor.chunk_budget(4, 2, 128 * M) == executor.MAX_CHUNK_BYTES // 4
    assert executor.chunk_budget(4, 1, 96 * M) == 24 * M // 4 and executor.chunk_budget(8, 1, 96 * M) == 24 * M // 8
    # the defaults read cache_sizes(), so the environment reaches them
    monkeypatch.setenv(ENV, "l2=256K,l3=2M")
    sized = events.linear_block(1024, 1024, 4), events.linear_group(1024, 4), events.pool_band(24, 32, 2, 4)
    assert sized == (32, 85, 5)
    assert executor.chunk_budget(4, 1) == executor.MIN_CHUNK_BYTES // 4
    monkeypatch.setenv(ENV, "l2=2M,l3=256M")
    assert (events.linear_block(1024, 1024, 4), events.linear_group(1024, 4)) == (64, 256)
    assert executor.chunk_budget(4, 1) == executor.MAX_CHUNK_BYTES // 4
