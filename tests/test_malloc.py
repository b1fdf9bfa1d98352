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
print(json.dumps({"mmapped_during": during.hblkhd, "heap_after_free": after.arena}))
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


@pytest.mark.parametrize("bad", [0, 64 << 20, 1.5, True])
def test_retain_freed_memory_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="max_block"):
        retain_freed_memory(bad)
