"""spikegrad.malloc: where glibc puts a large tensor in a fresh process, with and without it."""

import subprocess
import sys

import pytest

from spikegrad.malloc import retain_freed_memory

PROBE = """
import ctypes, ctypes.util, json, sys
if sys.argv[1] == "1":
    from spikegrad.malloc import retain_freed_memory
    assert retain_freed_memory()
import torch

class MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
a = torch.ones(20 << 18)                       # a 20 MiB [T, B, N]-sized tensor
during = libc.mallinfo2()
del a
after = libc.mallinfo2()
b = torch.ones(100 << 18)                      # 100 MiB: above the 32 MiB older glibc versions allow
during_large = libc.mallinfo2()
del b
large_allowed = libc.mallopt(-3, 1 << 30) == 1  # this C library takes a 1 GiB threshold
print(json.dumps({"mmapped_during": during.hblkhd, "heap_after_free": after.arena,
                  "mmapped_during_large": during_large.hblkhd, "large_allowed": large_allowed}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retain_freed_memory_keeps_large_blocks_in_the_heap():
    import json

    def probe(flag: str) -> dict:
        out = subprocess.run([sys.executable, "-c", PROBE, flag], capture_output=True, text=True)
        if "mallinfo2" in out.stderr:
            pytest.skip("the C library has no mallinfo2")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.split("\n")[-2])

    mib20 = 20 << 20
    default, retained = probe("0"), probe("1")
    # glibc's defaults: a fresh 20 MiB block is its own mmap, unmapped again on free (paged in anew
    # every time); with the setting it comes from the heap, which keeps it after the free
    assert default["mmapped_during"] >= mib20, default
    assert retained["mmapped_during"] < mib20, retained
    assert retained["heap_after_free"] >= mib20, retained
    # 100 MiB: fresh pages by default; from the heap with the setting where the C library takes a
    # threshold that large (glibc 2.36 does), else fresh pages again (the 32 MiB fallback)
    mib100 = 100 << 20
    assert default["mmapped_during_large"] >= mib100, default
    if retained["large_allowed"]:
        assert retained["mmapped_during_large"] < mib100, retained
    else:
        assert retained["mmapped_during_large"] >= mib100, retained


@pytest.mark.parametrize("bad", [0, -1, 2**31, 1.5, True])
def test_retain_freed_memory_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="max_block"):
        retain_freed_memory(bad)


def test_retain_freed_memory_falls_back_where_the_block_is_refused(monkeypatch):
    import ctypes

    from spikegrad import malloc

    calls = []

    class OldGlibc:                      # a C library whose mallopt refuses thresholds above 32 MiB
        @staticmethod
        def mallopt(param, value):
            calls.append((param, value))
            return int(not (param == malloc.M_MMAP_THRESHOLD and value > 32 << 20))

    monkeypatch.setattr(ctypes, "CDLL", lambda name: OldGlibc)
    assert retain_freed_memory(1 << 30)
    assert calls == [(malloc.M_MMAP_THRESHOLD, 1 << 30), (malloc.M_MMAP_THRESHOLD, 32 << 20),
                     (malloc.M_TRIM_THRESHOLD, 2**31 - 1)]
    calls.clear()
    assert retain_freed_memory(16 << 20)  # accepted as asked: no second try
    assert calls == [(malloc.M_MMAP_THRESHOLD, 16 << 20), (malloc.M_TRIM_THRESHOLD, 2**31 - 1)]
