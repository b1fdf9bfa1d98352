"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``): process group, shards, reductions.

One training run spread over ``N`` processes (``torchrun --nproc_per_node=N train.py ...``). What the
processes share and how the numbers keep their single-process meaning:

- **Batch**: ``data.batch_size`` is the *global* batch; each process trains on
  ``batch_size / N`` samples per step, and DDP averages the gradients. Every loss term of spikegrad
  is a mean over the samples of a batch, so the averaged gradient is the gradient of the mean over
  the global batch, as in one process with ``batch_size`` (the learning rate keeps its meaning).
- **Training shards**: a :class:`~torch.utils.data.DistributedSampler` seeded with the run's seed and
  reseeded every epoch (``set_epoch``). Its permutation interleaves the processes, so the union of
  the processes' k-th batches is the k-th block of ``batch_size`` samples of the permutation, what
  one process with that sampler and the global batch would train on. When the training set is not
  a multiple of ``N``, the sampler repeats up to ``N - 1`` samples per epoch so that every process
  runs the same number of steps.
- **Evaluation shards**: validation and test samples are split without repetition
  (process ``r`` takes samples ``r, r + N, ...``); sums of loss, correct predictions, spikes and
  firing rates and the sample counts are added over the processes before dividing, so the metrics
  equal a single-process evaluation of the same weights (exactly for deterministic encoders; a
  stochastic encoder such as rate coding draws other noise per process).
- **Regularizers** are computed per process on its part of the batch. The upper-rate, per-sample
  lower-rate and spike-count penalties are means over samples, so the averaged gradient is the
  global-batch one exactly. ``LowerRate(form="batch_mean")`` is a function of each neuron's mean
  count over the batch: it sees the process's ``batch_size / N`` samples (a noisier estimate of the
  same mean), not the global batch, which would need an all-gather of the spike counts inside the
  autograd graph at every step.
- **Stops**: a signal on any process becomes a stop that all processes agree on at the same batch
  (an all-reduced flag), so the one checkpoint written by rank 0 holds a consistent position.

Collectives of Python objects go through a ``gloo`` group, so they work whatever the main backend is.
"""

from __future__ import annotations

import datetime
import functools
import os
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

__all__ = ["DistributedError", "active", "rank", "world_size", "choose_backend", "init_from_env", "local_device",
           "shard_loaders", "launch_overrides"]

BACKENDS = ("auto", "gloo", "nccl")


class DistributedError(RuntimeError):
    """A distributed run cannot start or continue as asked (the message names the problem and the fix)."""


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if active() else 1


def choose_backend(requested: str = "auto") -> str:
    """The ``torch.distributed`` backend: ``auto`` is ``nccl`` for CUDA tensors (plus ``gloo`` for CPU ones)
    when a GPU and NCCL are there, else ``gloo``.

    Raises:
        DistributedError: an unknown name, or a backend this machine's PyTorch cannot use.
    """
    if requested not in BACKENDS:
        raise DistributedError(f"unknown distributed backend {requested!r}; choose one of {list(BACKENDS)} "
                               "(SPIKEGRAD_DIST_BACKEND=auto picks nccl on GPUs, gloo on CPUs)")
    gpu = torch.cuda.is_available() and dist.is_nccl_available()
    if requested == "nccl" and not gpu:
        raise DistributedError("the nccl backend needs CUDA GPUs and a PyTorch built with NCCL, and this machine "
                               f"has {'no CUDA device' if not torch.cuda.is_available() else 'no NCCL'}; use "
                               "SPIKEGRAD_DIST_BACKEND=gloo (CPU) or auto")
    if requested in ("gloo", "auto") and not gpu and not dist.is_gloo_available():
        raise DistributedError("this PyTorch build has no gloo backend, needed for distributed training on CPUs; "
                               "install a standard PyTorch wheel")
    if requested == "auto":
        return "cpu:gloo,cuda:nccl" if gpu else "gloo"
    return requested


def init_from_env(backend: str = "auto") -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...).

    Does nothing (returns False) when ``WORLD_SIZE`` is unset or 1, or the group already exists.
    On CUDA machines each process uses the GPU ``LOCAL_RANK``.

    Raises:
        DistributedError: the backend is not available (see :func:`choose_backend`).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return active()
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; install a standard PyTorch wheel")
    name = choose_backend(backend)
    if "nccl" in name:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(name)
    return True


def local_device(device: torch.device) -> torch.device:
    """A CUDA device without an index becomes this process's GPU (``LOCAL_RANK``) in a distributed run."""
    if active() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@functools.cache
def _object_group():
    return dist.new_group(backend="gloo")


def gather(obj: Any) -> list:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj, group=_object_group())
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_object_group())
    return box[0]


def agree_batch(stop: bool, finite: torch.Tensor, loss: torch.Tensor, batch: int) -> tuple[bool, bool, float]:
    """One all-reduce per training step: (any process asked to stop, every process's loss and states
    finite, mean loss over the global batch)."""
    t = torch.stack([torch.tensor(float(stop)), (~finite).to("cpu", torch.float64),
                     loss.detach().to("cpu", torch.float64) * batch, torch.tensor(float(batch))]).to(torch.float64)
    dist.all_reduce(t, group=_object_group())
    return bool(t[0] > 0), bool(t[1] == 0), float(t[2] / t[3])


def agree(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any."""
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_object_group())
    return bool(t[0] > 0)


class _EvalShard(Sampler[int]):
    """Samples ``rank, rank + N, ...`` of ``n``, no repetition (shards differ in size by at most one)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _like(loader: DataLoader, sampler: Sampler, batch_size: int) -> DataLoader:
    return DataLoader(loader.dataset, batch_size=batch_size, sampler=sampler, drop_last=loader.drop_last,
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      generator=loader.generator)


def shard_loaders(train: DataLoader, val: DataLoader | None, test: DataLoader | None,
                  seed: int) -> tuple[DataLoader, DataLoader | None, DataLoader | None]:
    """This process's share of the three loaders (unchanged outside a distributed run).

    ``train``'s batch size is the global batch: each process gets ``batch_size / N`` samples per step
    from a :class:`DistributedSampler` seeded with ``seed`` (:func:`fit` calls ``set_epoch`` every
    epoch). Validation and test keep their batch size per process, on disjoint shards.

    Raises:
        ValueError: the number of processes does not divide the training batch size.
    """
    if not active():
        return train, val, test
    n, r = world_size(), rank()
    if train.batch_size is None or train.batch_size % n:
        raise ValueError(f"data.batch_size={train.batch_size} is the global batch and must be a multiple of the "
                         f"{n} processes, so that each trains on the same number of samples; use data.batch_size="
                         f"{max(n, (train.batch_size or n) // n * n)} or another --nproc_per_node")
    sampler = DistributedSampler(train.dataset, num_replicas=n, rank=r, shuffle=True, seed=seed, drop_last=False)
    shards = [None if ld is None else _like(ld, _EvalShard(len(ld.dataset), r, n), ld.batch_size) for ld in (val, test)]
    return _like(train, sampler, train.batch_size // n), shards[0], shards[1]


def set_epoch(loader, epoch: int) -> None:
    """Reseed a distributed sampler's shuffling for ``epoch`` (no-op for other loaders)."""
    set_fn = getattr(getattr(loader, "sampler", None), "set_epoch", None)
    if set_fn is not None:
        set_fn(epoch)


RUN_DIR = "outputs/{:%Y-%m-%d}/{:%H-%M-%S}"  # hydra.run.dir of conf/train.yaml, pinned to rank 0's start time


def launch_overrides(args: Sequence[str]) -> list[str]:
    """Hydra overrides that give all processes of a torchrun launch one run folder (empty without torchrun).

    Joins the process group (backend from ``SPIKEGRAD_DIST_BACKEND``, default ``auto``); rank 0's start
    time fixes ``hydra.run.dir`` unless the command sets it; ranks above 0 write no ``.hydra/`` folder
    and no ``train.log`` (rank 0 writes them).

    Raises:
        DistributedError: a multirun (``-m``) under torchrun, or an unavailable backend.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return []
    if any(a in ("-m", "--multirun") for a in args):
        raise DistributedError("a sweep (-m) cannot run under torchrun: each process would launch every job. Run "
                               "each configuration as its own torchrun command, or sweep without torchrun")
    init_from_env(os.environ.get("SPIKEGRAD_DIST_BACKEND", "auto"))
    start = broadcast(datetime.datetime.now())
    overrides = [] if any(a.startswith("hydra.run.dir=") for a in args) else [f"hydra.run.dir={RUN_DIR.format(start, start)}"]
    if rank() > 0:
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return overrides


def shutdown() -> None:
    """Leave the process group (no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        _object_group.cache_clear()
        dist.destroy_process_group()
