"""spikegrad.malloc: page faults of large tensor churn in a fresh process, with and without it."""

import subprocess
import sys

import pytest

from spikegrad.malloc import retain_freed_memory

CHURN = """
import resource, sys
if sys.argv[1] == "1":
    from spikegrad.malloc import retain_freed_memory
    assert retain_freed_memory()
import torch

def churn():  # [T, B, N]-sized tensors (20-30 MB) allocated and freed, as in a training step
    a = torch.ones(30 << 18); b = torch.ones(30 << 18); c = torch.ones(30 << 18); del a, b, c
    a = torch.ones(20 << 18); b = torch.ones(20 << 18); del a; c = torch.ones(24 << 18); del b, c

for _ in range(3):
    churn()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    churn()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 10)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retain_freed_memory_stops_page_faults():
    def faults(flag: str) -> float:
        out = subprocess.run([sys.executable, "-c", CHURN, flag], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    default = faults("0")
    if default < 1000:
        pytest.skip(f"this C library reuses the memory already ({default} faults per round)")
    # 4 KiB pages: about 30,000 are touched per round. Usually none fault with the setting; where
    # the heap cannot grow in place (address-space layout), a few still do.
    retained = min(faults("1") for _ in range(2))
    assert retained < 0.2 * default, (default, retained)


@pytest.mark.parametrize("bad", [0, 64 << 20, 1.5, True])
def test_retain_freed_memory_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="max_block"):
        retain_freed_memory(bad)
