"""Data-parallel training (spikegrad.training.distributed): 2 gloo processes on 127.0.0.1 against one process."""

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from spikegrad.encoding import LatencyEncoder, RateEncoder
from spikegrad.losses import MaxOverTime
from spikegrad.models import SpikingMLP
from spikegrad.neurons import LIF
from spikegrad.regularizers import LowerRate, UpperRate
from spikegrad.training import ResumeError, fit
from spikegrad.training import distributed as sgdist

REPO = Path(__file__).resolve().parents[1]
SEED = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic(n=96):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 3, 3, generator=g) * 0.3
    x[torch.arange(n), 0, y, :] += 0.7  # class = bright row
    return x.clamp(0, 1), y


def loaders(batch, sampler_seed=None):
    """64 training samples (batch `batch`), 15 validation, 17 test: odd sizes give uneven evaluation shards."""
    x, y = synthetic()
    train_set = TensorDataset(x[:64], y[:64])
    if sampler_seed is None:
        train = DataLoader(train_set, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(SEED))
    else:  # one process, the permutation a distributed sampler draws
        train = DataLoader(train_set, batch_size=batch,
                           sampler=DistributedSampler(train_set, num_replicas=1, rank=0, seed=sampler_seed))
    return train, DataLoader(TensorDataset(x[64:79], y[64:79]), batch_size=4), \
        DataLoader(TensorDataset(x[79:], y[79:]), batch_size=4)


def build():
    torch.manual_seed(0)
    model = SpikingMLP([9, 12, 3], neuron=functools.partial(LIF, tau_mem=5.0, tau_syn=2.0), weight_gain=3.0,
                       readout_gain=1.0)
    return model, torch.optim.SGD(model.parameters(), lr=0.5)


def run_fit(out, epochs, *, encoder="latency", resume=None, interrupt_at=None, sampler_seed=None):
    """One fit with the global batch 16: sharded over the process group if there is one."""
    model, opt = build()
    train, val, test = loaders(16, sampler_seed)
    train, val, test = sgdist.shard_loaders(train, val, test, SEED)
    if interrupt_at is not None:  # a SIGINT on rank 1 only, when it requests batch `interrupt_at` of epoch 2
        train = Interrupting(train, interrupt_at)
    enc = LatencyEncoder(T=6) if encoder == "latency" else RateEncoder(T=6, max_rate=0.8)
    gen = torch.Generator().manual_seed(5 + sgdist.rank())
    res = fit(model, train, val, test, opt, MaxOverTime(), epochs=epochs, encoder=enc, out_dir=out, resume=resume,
              regularizers=[UpperRate(0.1, 1.0), LowerRate(0.5, 0.05)], generator=gen, progress=False,
              log_samples=0)
    return model, res


class Interrupting:
    """A loader that sends SIGINT to its own process (rank 1 only) before batch `at` of its second pass."""

    def __init__(self, loader, at):
        self.loader, self.at, self.passes = loader, at, 0
        self.sampler, self.generator = loader.sampler, loader.generator

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for k, batch in enumerate(self.loader):
            if self.passes == 1 and k == self.at and sgdist.rank() == 1:
                os.kill(os.getpid(), 2)
            yield batch
        self.passes += 1


def _worker(rank, world, port, out, task):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # OMP_NUM_THREADS: inherited (conftest.py)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = task(out)
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        result = {"error": f"{type(err).__name__}: {err}"}
    finally:
        sgdist.shutdown()
    torch.save(result, Path(out) / f"result{rank}.pt")


def spawn(task, out, world=2):
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world, free_port(), str(out), task), nprocs=world)
    return [torch.load(out / f"result{r}.pt", weights_only=False) for r in range(world)]


def _one_epoch(out):
    model, res = run_fit(Path(out) / "ckpt", 1)
    return {"weights": model.state_dict(), "res": res}


def _train(epochs, interrupt_at=None, resume=None, encoder="rate"):
    def task(out):
        try:
            model, res = run_fit(Path(out) / "ckpt", epochs, encoder=encoder, resume=resume, interrupt_at=interrupt_at)
        except KeyboardInterrupt as err:
            return {"interrupted": str(err)}
        return {"weights": model.state_dict(), "res": res}
    return task


def _three_epochs(out):
    return _train(3)(out)


def _interrupted(out):
    return _train(3, interrupt_at=2)(out)


def _resumed(out):
    return _train(3, resume=Path(out) / "ckpt" / "interrupted.pt")(out)


def _bad_batch(out):
    model, opt = build()
    train, val, test = loaders(15)
    try:
        sgdist.shard_loaders(train, val, test, SEED)
    except ValueError as err:
        return {"message": str(err)}
    return {"message": None}


def _resume_single(out):
    try:
        run_fit(Path(out) / "other", 1, resume=Path(out) / "single" / "last.pt")
    except ResumeError as err:
        return {"message": str(err)}
    return {"message": None}


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    """2 x batch 8 == 1 x batch 16 in the same sample order, after one epoch of SGD (4 steps), with the
    upper and lower rate regularizers (means over samples) in the loss. Tolerance: 1e-6 on weights of
    order 1 (float32 rounding of the gradient average; measured differences up to 1.2e-7)."""
    ranks = spawn(_one_epoch, tmp_path / "ddp")
    assert "error" not in ranks[0], ranks[0]
    ref_model, ref = run_fit(tmp_path / "single", 1, sampler_seed=SEED)
    for key, value in ref_model.state_dict().items():
        torch.testing.assert_close(ranks[0]["weights"][key], value, rtol=0, atol=1e-6)
        torch.testing.assert_close(ranks[1]["weights"][key], ranks[0]["weights"][key], rtol=0, atol=0)
    ddp = ranks[0]["res"]
    assert ddp["history"][0]["val_samples"] == 15 and ddp["history"][0]["train_samples"] == 64
    assert ddp["val_accuracy"] == ref["val_accuracy"] and ddp["test_accuracy"] == ref["test_accuracy"]
    assert ddp["test_loss"] == pytest.approx(ref["test_loss"], abs=1e-6)  # weights equal to ~1e-8, not bitwise
    assert ddp["spikes_per_input"] == pytest.approx(ref["spikes_per_input"], rel=1e-6)
    assert ddp["test_rates"] == pytest.approx(ref["test_rates"], rel=1e-6)
    assert ddp["history"][0]["train_loss"] == pytest.approx(ref["history"][0]["train_loss"], rel=1e-5)
    assert ranks[1]["res"]["test_accuracy"] == ddp["test_accuracy"]
    ckpt = torch.load(tmp_path / "ddp" / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2


@pytest.mark.slow
def test_sigint_on_one_rank_leaves_a_checkpoint_that_resumes_exactly(tmp_path):
    """Rate coding (each process its own noise), SIGINT on rank 1 inside epoch 2: both processes stop at the same
    batch, rank 0 writes interrupted.pt, and the resumed run ends with the uninterrupted run's weights."""
    full = spawn(_three_epochs, tmp_path / "full")
    stopped = spawn(_interrupted, tmp_path / "cut")
    assert all("interrupted" in r for r in stopped), stopped
    ckpt = torch.load(tmp_path / "cut" / "ckpt" / "interrupted.pt", weights_only=False)
    assert ckpt["state"]["epoch"] == 1 and ckpt["state"]["batch"] == 2  # rank 1 stopped before its batch 3
    resumed = spawn(_resumed, tmp_path / "cut")
    assert "error" not in resumed[0], resumed[0]
    for key, value in full[0]["weights"].items():
        torch.testing.assert_close(resumed[0]["weights"][key], value, rtol=0, atol=0)
    assert resumed[0]["res"]["history"] == full[0]["res"]["history"]


@pytest.mark.slow
def test_bad_use_is_explained(tmp_path):
    bad = spawn(_bad_batch, tmp_path / "batch")
    assert "data.batch_size=15 is the global batch and must be a multiple of the 2 processes" in bad[0]["message"]
    run_fit(tmp_path / "single", 1)  # a one-process checkpoint, resumed by two processes
    other = spawn(_resume_single, tmp_path)
    assert "written by a run of 1 process(es), and this run has 2" in other[0]["message"]
    with pytest.raises(sgdist.DistributedError, match="nccl backend needs CUDA GPUs"):
        if torch.cuda.is_available():
            pytest.skip("this machine has GPUs")
        sgdist.choose_backend("nccl")
    with pytest.raises(sgdist.DistributedError, match="unknown distributed backend 'mpi'"):
        sgdist.choose_backend("mpi")


def test_outside_a_process_group_nothing_changes(monkeypatch):
    train, val, test = loaders(16)
    assert sgdist.shard_loaders(train, val, test, SEED) == (train, val, test)
    assert (sgdist.rank(), sgdist.world_size(), sgdist.active()) == (0, 1, False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert sgdist.launch_overrides(["trainer.epochs=1"]) == []


def test_a_sweep_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(sgdist.DistributedError, match=r"a sweep \(-m\) cannot run under torchrun"):
        sgdist.launch_overrides(["-m", "seed=0,1"])


@pytest.mark.slow
def test_torchrun_train_py_writes_one_run_folder_once(tmp_path):
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST files not found in {SHARED_DATA / 'mnist'}")
    from test_train import TINY

    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                        f"--master_port={free_port()}", str(REPO / "train.py"), "experiment=mnist16",
                        f"data.root={SHARED_DATA / 'mnist'}", *TINY, "trainer.epochs=2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1, runs  # both processes in rank 0's folder, whatever their clocks said
    out = runs[0]
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    log = (out / "train.log").read_text()
    assert log.count("epoch 2/2: train loss") == 1 and log.count("test accuracy") == 1
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 2  # scalars and add_hparams, as in one process
    assert torch.load(out / "last.pt", weights_only=False)["world_size"] == 2
