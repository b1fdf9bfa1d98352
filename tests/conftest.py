from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _cache_outside_the_data(tmp_path_factory):
    """Resized-image caches go to a fresh folder (also for train.py subprocesses), never into a data folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SPIKEGRAD_CACHE", str(tmp_path_factory.mktemp("spikegrad_cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def mnist_root() -> Path:
    root = SHARED_DATA / "mnist"
    if not (root / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found in {root}")
    return root
