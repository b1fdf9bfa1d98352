"""The temporal experiments end to end through train.py, on small data (subprocesses: marked slow)."""

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikegrad import data
from spikegrad.temporal.smnist import pixel_permutation

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def train(*args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def write_idx(root: Path, n_train=40, n_test=20) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for split, n in [("train", n_train), ("test", n_test)]:
        arrays = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8))
        for f, arr in zip(data.SPLIT_FILES[split], arrays):
            header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            (root / f).write_bytes(gzip.compress(header + arr.tobytes()))
    return root


def test_randman_trains_and_reports(tmp_path):
    out = tmp_path / "run"
    r = train("experiment=randman", "data.samples_per_class=30", "model.sizes=[20,16,10]", "trainer.epochs=2",
              "trainer.progress=false", "trainer.log_samples=1", "device=cpu", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["history"]) == 2 and 0 <= m["test_accuracy"] <= 1 and m["spikes_per_input"] > 0


def test_psmnist_saves_its_permutation_in_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))
    root, out = write_idx(tmp_path / "idx"), tmp_path / "run"
    r = train("experiment=psmnist", "data.name=folder", f"data.root={root}", "data.download=false", "data.val_size=10", "data.subset=10",
              "data.batch_size=10", "data.eval_batch_size=20", "model.sizes=[80,8,10]", "trainer.epochs=1",
              "trainer.progress=false", "trainer.log_samples=0", "device=cpu", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads((out / "permutation.json").read_text())
    assert saved["permutation"] == pixel_permutation(0).tolist()
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


def test_randman_trains_in_the_loop_on_a_chip_with_recurrent_synapses(tmp_path):
    out = tmp_path / "run"
    r = train("experiment=randman_hil", "data.samples_per_class=20", "model.model.sizes=[20,12,10]",
              "substrate.mismatch=0.3", "trainer.epochs=1", "trainer.progress=false", "trainer.log_samples=0",
              "device=cpu", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["substrate_mismatch"] == 0.3 and 0 <= m["substrate_test_accuracy"] <= 1
