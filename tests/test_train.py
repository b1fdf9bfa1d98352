"""End-to-end runs of train.py (subprocesses, a few hundred real MNIST samples)."""

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # every test starts train.py in a subprocess

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.subset=200", "data.val_size=100", "data.batch_size=50", "data.eval_batch_size=2000", "T=8",
        "trainer.epochs=1", "trainer.progress=false", "trainer.log_samples=1", "model.sizes=[256,32,10]",
        "data.download=false", "device=cpu"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, request):
    from conftest import SHARED_DATA

    src = SHARED_DATA / "mnist"
    if not (src / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found in {src}")
    root = tmp_path_factory.mktemp("data") / "mnist"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("*.md", "cache_*"))
    return root


def train(*args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}  # threads and kernel cache: tests/conftest.py
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_single_run_writes_metrics_checkpoints_and_tensorboard(data_root, tmp_path):
    out = tmp_path / "run"
    r = train("experiment=mnist16", f"data.root={data_root}", f"hydra.run.dir={out}", *TINY,
              "trainer.progress=true", cwd=tmp_path)  # later overrides win: a progress bar, but no terminal
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "overrides: experiment=mnist16" in log and "epoch 1/1: train loss" in log and "test accuracy" in log
    assert "it/s" not in r.stderr + r.stdout + log and "\r" not in r.stderr + log  # no progress-bar refreshes
    m = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "test_loss", "spikes_per_input", "epochs", "train_seconds",
                "train_samples_per_second"):
        assert key in m, key
    assert 0 <= m["test_accuracy"] <= 1 and m["epochs"] == 1 and m["spikes_per_input"] > 0  # 4 steps: no accuracy claim
    assert math.isfinite(m["history"][0]["train_loss"]) and math.isfinite(m["test_loss"])
    assert (out / "last.pt").exists() and (out / "best.pt").exists()
    events = list((out / "tb").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = acc.Tags()
    assert {"loss/train", "accuracy/val", "spikes_per_input/val", "firing_rate/layer0"} <= set(tags["scalars"])
    assert any(t.startswith("raster/") for t in tags["images"]) and any(t.startswith("membrane/") for t in tags["images"])
    assert any(t.startswith("weights/") for t in tags["histograms"]) and any(t.startswith("grads/") for t in tags["histograms"])
    # resume from the checkpoint for one more epoch
    r = train("experiment=mnist16", f"data.root={data_root}", f"hydra.run.dir={out}", *TINY[:-6],
              "trainer.epochs=2", "trainer.progress=false", "model.sizes=[256,32,10]", "data.download=false",
              f"resume={out / 'last.pt'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert "overridden: epochs 1 -> 2" in (out / "train.log").read_text()


def test_failed_job_is_listed_in_the_sweep_summary(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    r = train("-m", "experiment=mnist16", "data.subset=200,100000", f"data.root={data_root}",
              f"hydra.sweep.dir={sweep}", *TINY[1:], cwd=tmp_path)
    assert r.returncode != 0
    rows = {row["job"]: row for row in csv.DictReader((sweep / "summary.csv").open())}
    assert rows["0"]["status"] == "ok" and 0 <= float(rows["0"]["val_accuracy"]) <= 1
    assert rows["1"]["status"] == "failed" and "subset=100000 exceeds" in rows["1"]["error"]
    assert "data.subset=100000" in rows["1"]["overrides"]
    assert "run failed: ValueError: subset=100000" in (sweep / "1" / "train.log").read_text()


def test_sigterm_saves_a_resumable_checkpoint_and_says_how_to_resume(data_root, tmp_path):
    out = tmp_path / "run"
    args = ["experiment=mnist16", f"data.root={data_root}", f"hydra.run.dir={out}", *TINY[:-6], "trainer.epochs=500",
            "trainer.progress=false", "model.sizes=[256,32,10]", "data.download=false", "device=cpu"]
    p = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not (out / "last.pt").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 143, stderr[-3000:]
    ckpt = out / "interrupted.pt"
    assert f"resume={ckpt}" in stdout and f"resume={ckpt}" in (out / "train.log").read_text()
    assert 1 <= torch.load(ckpt, weights_only=False)["state"]["epoch"] < 500


def test_objective_must_be_a_validation_metric(tmp_path):
    r = train("experiment=mnist16", "objective=test_accuracy", f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert r.returncode != 0 and "would select hyperparameters on the test set" in r.stderr


def test_multirun_joblib_two_workers_writes_summary(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    r = train("-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "experiment=mnist16",
              "surrogate=fast_sigmoid,atan", f"data.root={data_root}", f"hydra.sweep.dir={sweep}", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (sweep / "summary.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and "surrogate=fast_sigmoid" in rows[1] + rows[2] and "surrogate=atan" in rows[1] + rows[2]
    assert "test_accuracy" in rows[0]
    md = (sweep / "summary.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ")]
    assert len(table) == 3 and table[0].startswith("| job | surrogate | ")  # the swept key is a column
    assert sum(line.startswith("Fixed overrides:") and "`experiment=mnist16`" in line for line in md) == 1


def test_bad_inputs_fail_clearly(data_root, tmp_path):
    r = train("experiment=mnist16", f"data.root={data_root}", "data.size=28", f"hydra.run.dir={tmp_path / 'a'}",
              *TINY, cwd=tmp_path)
    assert r.returncode != 0 and "expects 256 input features but got 784" in r.stderr
    r = train("experiment=mnist16", f"data.root={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'b'}", *TINY,
              cwd=tmp_path)
    assert r.returncode != 0 and "data.root" in r.stderr and "train-images-idx3-ubyte.gz" in r.stderr
    r = train("experiment=mnist16", "surrogate=nope", cwd=tmp_path)
    assert r.returncode != 0 and "fast_sigmoid" in r.stderr
