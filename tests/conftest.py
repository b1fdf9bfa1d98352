"""Settings shared by every test, made once here.

Threads: one intra-op thread (``torch.set_num_threads``) and ``OMP_NUM_THREADS=1`` for every process a test
starts (train.py runs, torchrun, spawned workers, probes), so float sums are done in the same order on any
machine and small tensors do not oversubscribe a busy one. A test that needs several threads asks for them
in a block and restores them after (``num_threads`` in test_kernels.py).

Kernel build cache: ``SPIKEGRAD_CACHE`` points at ``.pytest_cache/spikegrad`` in the repository, so the C
kernels are compiled once for the whole run and its subprocesses (not per test, and never into the user's
``~/.cache``); the resized-image caches go there too. Tests of the cache itself pass their own folder.

Both are set before torch is imported.
"""

import contextlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
THREADS = 1
CACHE = REPO / ".pytest_cache" / "spikegrad"

os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ["SPIKEGRAD_CACHE"] = str(CACHE)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)


def pytest_report_header(config):
    return (f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} thread(s), SPIKEGRAD_CACHE={CACHE}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _threads():
    """Each test starts with THREADS threads, whatever the previous one left."""
    torch.set_num_threads(THREADS)


@pytest.fixture
def mnist_root() -> Path:
    root = SHARED_DATA / "mnist"
    if not (root / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found in {root}")
    return root


@contextlib.contextmanager
def num_threads(n):
    """``torch.set_num_threads(n)`` for the block, restored after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
