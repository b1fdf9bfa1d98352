"""The loops: :func:`train_epoch`, :func:`evaluate` and :func:`fit` (TensorBoard logging included)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on the loader eagerly

from .. import checks
from ..models import SpikingOutput, eval_mode, recording_v, run_in_chunks, spikes_per_input, takes_state
from ..neurons import recomputing
from . import distributed as _dist
from .checkpoints import (CHECKPOINT_VERSION, ResumeError, _nonfinite_names, _resume, _rng_state, _set_rng_state,
                          _settings, load_checkpoint, save_checkpoint)
from .guards import NonFiniteLossError, _check_stop, _Stop, _StateWatch, _StopRequest
from .paths import layer_paths

__all__ = ["resolve_device", "train_epoch", "evaluate", "fit"]

log = logging.getLogger("spikegrad.training")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; ``"cuda"`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use device=cpu or device=auto")
    return dev


def _encode(encoder, x: Tensor, generator) -> Tensor:
    return x if encoder is None else encoder(x, generator=generator)


PRECISIONS = ("fp32", "bf16")


def _precision(precision: str, device) -> contextlib.AbstractContextManager:
    """The autocast context of a training precision (one of :data:`PRECISIONS`, checked by the
    caller): "fp32" (none) or "bf16" (``torch.autocast`` to bfloat16: matrix products in bfloat16;
    the neurons keep float32 constants and states)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _batch_spikes(out) -> float:
    return float(spikes_per_input(out)) if isinstance(out, SpikingOutput) else 0.0


def _regularization(regularizers: Sequence, out) -> Tensor | float:
    if not regularizers or not isinstance(out, SpikingOutput):
        return 0.0
    return sum(r(spikes=list(out.spikes), v=list(out.v)) for r in regularizers)


def _pair(batch, what: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        got = f"a {type(batch).__name__}" + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        raise TypeError(f"the {what} loader must yield (x, y) pairs (inputs, integer labels), got {got}")
    return batch[0], batch[1]


def _progress(progress: bool) -> bool | None:
    return None if progress else True  # tqdm's disable=None: no bar when the output is not a terminal


# -------------------------------------------------------------------------------------- the loops
def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, loss_fn, *,
                encoder=None, regularizers: Sequence = (), sharpener=None, device="cpu",
                generator: torch.Generator | None = None, epoch: int = 0, start_batch: int = 0,
                totals: dict | None = None, resume_rng: dict | None = None, position: dict | None = None,
                progress: bool = True, writer=None, grad_clip: float | None = None,
                should_stop: Callable[[], bool] | None = None, precision: str = "fp32",
                recompute: int | None = None) -> dict:
    """One pass over ``loader`` with backpropagation through time.

    Args:
        loader: yields ``(x [B, ...], y [B])``; x goes through ``encoder`` (``[T, B, ...]``) if given.
        regularizers: callables ``r(spikes=[...], v=[...]) -> scalar`` added to the loss.
        start_batch: skip this many batches (exact resume inside an epoch); ``totals`` holds their
            partial sums and ``resume_rng`` the random state after them (restored once they are skipped).
        position: a dict updated after every batch with ``batch`` (batches done), ``totals`` and
            ``rng`` (the random state at that point), what an interrupt checkpoint needs.
        grad_clip: maximum gradient norm, > 0 (None: no clipping).
        should_stop: polled before every batch; when it returns True the epoch stops there.
        precision: "fp32" or "bf16" (forward pass and loss under ``torch.autocast`` to bfloat16).
        recompute: steps per chunk of time-chunked recomputation for this epoch; None: off. A model
            that takes ``state=`` (:func:`~spikegrad.models.takes_state`) runs whole in chunks
            (:func:`~spikegrad.models.run_in_chunks`: what it keeps for backward grows with
            ``T / recompute`` instead of ``T``); any other model, and every model in a distributed
            run, chunks its neuron layers (:func:`~spikegrad.neurons.set_recompute`). Same gradients
            up to rounding, for about one more forward pass.
    In a distributed run (``model`` wrapped in DDP, see :mod:`~spikegrad.training.distributed`) the
    stop request and the finiteness check are agreed by all processes at every batch (one
    all-reduce), the sharpener sees the global-batch loss, and the returned metrics are over all
    processes' samples.
    Returns:
        ``{"train_loss", "train_accuracy", "train_spikes_per_input", "train_samples"}``; loss and
        accuracy are means over samples.
    Raises:
        NonFiniteLossError: a NaN/Inf loss, gradient or neuron state (before the weights change).
    """
    checks.one_of("train_epoch", "precision", precision, PRECISIONS)
    model.train()
    device = torch.device(device)
    sync = _dist.active()
    t = dict(totals) if totals else {"n": 0.0, "loss_sum": 0.0, "correct": 0.0, "spike_sum": 0.0, "spiking": False}
    params = [p for p in model.parameters() if p.requires_grad]
    watch = _StateWatch(model)
    # recomputation: the whole model in chunks where it carries its state (memory ~ T / recompute),
    # else (no state argument, or DDP's one forward per step) its neuron layers
    whole = recompute is not None and not sync and takes_state(model)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=_progress(progress), dynamic_ncols=True)
    try:
        for k, batch in enumerate(bar):
            if k < start_batch:
                if k == start_batch - 1 and resume_rng is not None:
                    _set_rng_state(resume_rng, None, generator)
                continue
            if not sync:
                _check_stop(should_stop)
            x, y = _pair(batch, "train")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x_seq = _encode(encoder, x, generator)
            with _precision(precision, device), recomputing(model, None if whole else recompute):
                out = run_in_chunks(model, x_seq, recompute) if whole else model(x_seq)
                loss = loss_fn(out, y)
                total = loss + _regularization(regularizers, out)
            ok = torch.isfinite(total.detach())
            states_ok = watch.finite()
            finite = ok if states_ok is None else ok & states_ok
            batch_loss = None
            if sync:  # all processes stop, or fail, at the same batch
                stop_now, all_finite, batch_loss = _dist.agree_batch(should_stop is not None and should_stop(),
                                                                     finite, loss, y.shape[0])
                if stop_now:
                    raise _Stop
                if not all_finite and bool(finite):
                    raise NonFiniteLossError(f"the loss or a neuron state became non-finite on another process at "
                                             f"epoch {epoch + 1}, batch {k + 1} (its log names the layer)")
            if not bool(finite):  # one device sync for both checks
                where = f"at epoch {epoch + 1}, batch {k + 1}"
                data = ("" if bool(torch.isfinite(x_seq).all()) else
                        "; the input batch itself holds NaN/Inf (after encoding): check the data and the encoder")
                if states_ok is not None and not bool(states_ok):
                    raise NonFiniteLossError(f"a neuron state became non-finite {where}: "
                                             f"{watch.diagnose(getattr(model, 'module', model), x_seq)}{data}")
                raise NonFiniteLossError(f"the loss became {float(total.detach())} {where} "
                                         f"(task loss {float(loss.detach())}){data}")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else None
            if norm is not None and not bool(torch.isfinite(norm)):
                bad = [n for n, p in model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
                raise NonFiniteLossError(f"the gradient became non-finite at epoch {epoch + 1}, batch {k + 1} "
                                         f"(parameters {', '.join(bad[:5])}); the weights were not updated")
            if grad_clip is not None and grads:
                torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
            optimizer.step()
            b = y.shape[0]
            with torch.no_grad():
                batch_correct = float((loss_fn.predict(out) == y).sum())
            t["n"] += b
            t["loss_sum"] += float(loss.detach()) * b
            t["correct"] += batch_correct
            t["spiking"] = isinstance(out, SpikingOutput)
            t["spike_sum"] += _batch_spikes(out) * b
            if sharpener is not None:
                sharpener.on_batch_end(epoch, k, float(loss.detach()) if batch_loss is None else batch_loss)
            if position is not None:
                position.update(batch=k + 1, totals=dict(t), rng=_rng_state(None, generator))
            n = t["n"]
            bar.set_postfix(loss=f"{t['loss_sum'] / n:.4f}", acc=f"{t['correct'] / n:.4f}",
                            **({"spikes": f"{t['spike_sum'] / n:.1f}"} if t["spiking"] else {}), refresh=False)
    finally:
        bar.close()
        watch.remove()
    if sync:
        t = _sum_totals(_dist.gather(t))
    if not t["n"]:
        raise ValueError("the train loader yielded no samples; check the data split sizes (data.subset, data.val_size)")
    n = t["n"]
    return {"train_loss": t["loss_sum"] / n, "train_accuracy": t["correct"] / n,
            "train_spikes_per_input": t["spike_sum"] / n if t["spiking"] else None, "train_samples": int(t["n"])}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, loss_fn, *, encoder=None, device="cpu",
             generator: torch.Generator | None = None, progress: bool = False, desc: str = "eval",
             should_stop: Callable[[], bool] | None = None, precision: str = "fp32") -> dict:
    """Mean loss, accuracy (fraction in [0, 1]) and hidden spikes per input over ``loader``.

    Also returns ``rates``: per hidden layer, the mean firing rate (spikes per neuron per step).
    ``precision``: "fp32" or "bf16" (the model under ``torch.autocast`` to bfloat16, as trained).
    ``spikes_per_input`` is None for models that do not return a :class:`SpikingOutput`.
    In a distributed run each process evaluates its shard of ``loader``; the sums and sample counts
    are added over the processes before dividing (the same numbers as one process on all samples),
    and ``should_stop`` is polled once, after the last batch, by all processes together.

    Raises:
        NonFiniteLossError: a NaN/Inf loss or neuron state (an accuracy computed from it would be wrong).
    """
    checks.one_of("evaluate", "precision", precision, PRECISIONS)
    device = torch.device(device)
    sync = _dist.active()
    n = loss_sum = correct = spike_sum = 0.0
    rates: list[float] = []
    error = None
    watch = _StateWatch(model, root_only=True)  # the output's final states: the fast inference paths stay on
    try:
        with eval_mode(model):
            for k, batch in enumerate(tqdm(loader, desc=desc, leave=False, disable=_progress(progress),
                                           dynamic_ncols=True)):
                if not sync:
                    _check_stop(should_stop)
                x, y = _pair(batch, desc)
                x, y = x.to(device), y.to(device)
                x_seq = _encode(encoder, x, generator)
                with _precision(precision, device):
                    out = model(x_seq)
                    loss = float(loss_fn(out, y))
                b = y.shape[0]
                states_ok = watch.finite()
                if not math.isfinite(loss) or (states_ok is not None and not bool(states_ok)):
                    detail = (f"the loss is {loss}" if not math.isfinite(loss)
                              else f"a neuron state became non-finite: {watch.diagnose(model, x_seq)}")
                    error = (f"{desc}: {detail} at batch {k + 1}" + (f" of process {_dist.rank()}" if sync else "")
                             + "; its accuracy would be meaningless. Check the inputs for NaN/Inf and the weights")
                    if not sync:
                        raise NonFiniteLossError(error)
                    break
                n += b
                loss_sum += loss * b
                correct += float((loss_fn.predict(out) == y).sum())
                spike_sum += _batch_spikes(out) * b
                if isinstance(out, SpikingOutput):
                    layer_rates = [float(s.float().mean()) * b for s in out.spikes]
                    rates = [a + r for a, r in zip(rates, layer_rates)] if rates else layer_rates
    finally:
        watch.remove()
    if sync:  # every process reaches this point, also after an error, so none waits forever
        parts = _dist.gather({"n": n, "loss_sum": loss_sum, "correct": correct, "spike_sum": spike_sum,
                              "rates": rates, "error": error})
        errors = [p["error"] for p in parts if p["error"]]
        if errors:
            raise NonFiniteLossError(errors[0])
        n, loss_sum, correct, spike_sum = (sum(p[key] for p in parts) for key in ("n", "loss_sum", "correct", "spike_sum"))
        rates = [sum(r) for r in zip(*[p["rates"] for p in parts if p["rates"]])]
        _check_stop(lambda: _dist.agree(should_stop is not None and should_stop()))
    if n == 0:
        raise ValueError(f"{desc}: the data loader yielded no samples; check the data split sizes")
    return {"loss": loss_sum / n, "accuracy": correct / n, "spikes_per_input": spike_sum / n if rates else None,
            "rates": [r / n for r in rates], "samples": int(n)}


def _sum_totals(parts: list[dict]) -> dict:
    """Training totals added over the processes."""
    return {**{key: sum(p[key] for p in parts) for key in ("n", "loss_sum", "correct", "spike_sum")},
            "spiking": any(p["spiking"] for p in parts)}


# ------------------------------------------------------------------------------------ TensorBoard
def _log_epoch(writer, model: nn.Module, record: dict, epoch: int, sharpener) -> None:
    step = epoch + 1
    writer.add_scalar("loss/train", record["train_loss"], step)
    writer.add_scalar("accuracy/train", record["train_accuracy"], step)
    if record["train_spikes_per_input"] is not None:
        writer.add_scalar("spikes_per_input/train", record["train_spikes_per_input"], step)
    if "val_loss" in record:
        writer.add_scalar("loss/val", record["val_loss"], step)
        writer.add_scalar("accuracy/val", record["val_accuracy"], step)
        if record["val_spikes_per_input"] is not None:
            writer.add_scalar("spikes_per_input/val", record["val_spikes_per_input"], step)
        for k, r in enumerate(record["val_rates"]):
            writer.add_scalar(f"firing_rate/layer{k}", r, step)
    writer.add_scalar("lr", record["lr"], step)  # the rate this epoch trained with
    for name, value in (getattr(sharpener, "scalars", lambda: {})() if sharpener is not None else {}).items():
        writer.add_scalar(f"sharpen/{name}", value, step)
    for name, p in model.named_parameters():
        _histogram(writer, f"weights/{name}", p, step)
        if p.grad is not None:
            _histogram(writer, f"grads/{name}", p.grad, step)


def _histogram(writer, tag: str, t: Tensor, step: int) -> None:
    """Histogram of the finite values of ``t`` (TensorBoard cannot bin NaN/Inf); warns when some are not."""
    values = t.detach().float().cpu().flatten()
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        warnings.warn(f"{tag}: {int((~finite).sum())} of {values.numel()} values are NaN/Inf at step {step}; "
                      "the histogram shows the finite ones only", RuntimeWarning, stacklevel=3)
        values = values[finite]
    if values.numel():
        writer.add_histogram(tag, values, step)


@torch.no_grad()
def _log_samples(writer, model: nn.Module, encoder, samples: Tensor, labels: Tensor, device, step: int,
                 generator: torch.Generator | None) -> None:
    """Spike raster, membrane traces and readout of fixed test samples, as figures."""
    from ..plots import raster_figure, readout_figure, traces_figure  # matplotlib only when figures are drawn

    with eval_mode(model), recording_v(model):
        out = model(_encode(encoder, samples.to(device), generator))
    if not isinstance(out, SpikingOutput):
        return
    for b in range(samples.shape[0]):
        for k, s in enumerate(out.spikes):
            writer.add_figure(f"raster/sample{b}/layer{k}", raster_figure(s[:, b], f"sample {b}, layer {k}"), step)
        for k, v in enumerate(out.v):
            writer.add_figure(f"membrane/sample{b}/layer{k}", traces_figure(v[:, b], f"sample {b}, layer {k}"), step)
        writer.add_figure(f"readout/sample{b}", readout_figure(out.readout[:, b], int(labels[b]), f"sample {b}"), step)


@contextlib.contextmanager
def _console_log() -> Iterator[None]:
    """Show this module's INFO messages on stdout when the application configured no logging."""
    if log.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


# --------------------------------------------------------------------------------------- resuming
# -------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, train_loader, val_loader, test_loader, optimizer: torch.optim.Optimizer, loss_fn, *,
        epochs: int, encoder=None, scheduler=None, regularizers: Sequence = (), sharpener=None,
        device: str | torch.device = "cpu", out_dir: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, writer=None, generator: torch.Generator | None = None,
        progress: bool = True, grad_clip: float | None = None, log_samples: int = 2,
        use_best: bool = True, config: dict | None = None, precision: str = "fp32",
        recompute: int | None = None) -> dict[str, Any]:
    """Train for ``epochs`` epochs, validating each, then test (see the module docstring for the promises).

    Args:
        train_loader: a ``DataLoader`` (its ``generator``, if any, is checkpointed for exact resume).
        val_loader: validation loader or None (then ``best.pt`` tracks training accuracy).
        test_loader: test loader or None.
        optimizer, scheduler: a torch optimizer and an optional epoch-level LR scheduler.
        loss_fn: see :mod:`spikegrad.losses`.
        encoder: maps ``x [B, ...]`` to ``[T, B, ...]`` (None: the model gets ``x``).
        sharpener: optional schedule with ``on_batch_end`` / ``on_epoch_end`` / ``state_dict`` hooks;
            training stops after the epoch at whose end its ``stop_training`` (if any) is True.
        out_dir: folder for ``last.pt`` / ``best.pt`` / ``interrupted.pt`` (None: no checkpoints).
        resume: checkpoint to continue from (model, optimizer, scheduler, sharpener, RNG, position,
            best weights). Unchanged settings continue exactly; changed ones apply from here on.
        writer: a TensorBoard ``SummaryWriter`` or None.
        generator: random generator of the encoder (e.g. rate coding), on the model's device.
        grad_clip: maximum gradient norm, a number > 0, or None for no clipping.
        log_samples: test samples whose rasters and traces go to TensorBoard (int >= 0).
        use_best: evaluate the test set with the best-validation weights (else the last ones).
        precision: "fp32" (default) or "bf16": training and evaluation under ``torch.autocast`` to
            bfloat16 (weights and optimizer in float32, neuron constants and states in float32).
        recompute: steps per chunk of time-chunked recomputation of the neuron layers in training
            (:func:`~spikegrad.neurons.set_recompute`): the memory they keep for backward grows with
            ``T / recompute`` instead of ``T``, the gradients are the same, a training step takes
            about one more forward pass of the neurons. None (default): off. Evaluation is unchanged.
        config: the run's settings as a plain nested dict (e.g. the composed Hydra config), kept in
            the checkpoints. On resume its changes are logged as overrides; a change of a key in
            :data:`~spikegrad.training.checkpoints.SPLIT_KEYS` (seed, data split) is a ResumeError.
    Returns:
        metrics: ``test_accuracy``, ``test_loss``, ``val_accuracy`` (best), ``spikes_per_input``
        (hidden spikes per test sample), ``epochs``, ``train_seconds``, ``train_samples_per_second``,
        ``history`` (per-epoch dicts, with the ``lr`` each epoch trained with), ``layer_paths``
        (the computational path of every neuron layer in training and in evaluation, and why:
        :func:`~spikegrad.training.paths.layer_paths`).
    Raises:
        NonFiniteLossError, ResumeError, CheckpointWriteError; ``KeyboardInterrupt`` after Ctrl-C and
        ``SystemExit(143)`` after SIGTERM, both once ``interrupted.pt`` is saved.

    Distributed (inside a ``torch.distributed`` process group of N > 1 processes, with loaders from
    :func:`~spikegrad.training.distributed.shard_loaders`): the model is wrapped in DDP, the training
    sampler is reseeded every epoch, metrics are over all processes, only rank 0 writes checkpoints,
    TensorBoard and log lines (``writer`` and ``progress`` are ignored on the other ranks), a stop on
    any process stops all at the same batch, and checkpoints hold every process's random state and
    partial sums, so a resume with the same N is exact; another N is a :class:`ResumeError`.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if grad_clip is not None and (isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float))
                                  or not 0 < grad_clip < math.inf):
        raise ValueError(f"grad_clip must be a positive finite number (the maximum gradient norm) or None for no "
                         f"clipping, got {grad_clip!r} (trainer.grad_clip=1.0 or trainer.grad_clip=null)")
    if recompute is not None and (isinstance(recompute, bool) or not isinstance(recompute, int) or recompute <= 0):
        raise ValueError(f"recompute must be a positive int (steps per chunk of recomputation) or None for off, got "
                         f"{recompute!r} (trainer.recompute=56 or trainer.recompute=null)")
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError("fit steps the scheduler once per epoch without a metric, so ReduceLROnPlateau cannot be "
                         "used; choose an epoch-based scheduler (scheduler=cosine, scheduler=step)")
    if not isinstance(log_samples, int) or isinstance(log_samples, bool) or log_samples < 0:
        raise ValueError(f"log_samples must be an int >= 0 (test samples drawn to TensorBoard), got {log_samples!r}")
    device = _dist.local_device(resolve_device(device))
    model.to(device)
    if _dist.rank() > 0:  # rank 0 reports and writes for all processes
        writer, progress = None, False
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(f"cannot write checkpoints to {out_dir}; choose a writable output folder "
                                  "(hydra.run.dir=...)")
    checks.one_of("fit", "precision", precision, PRECISIONS)
    settings = _settings(epochs, optimizer, scheduler, grad_clip, train_loader, config)
    eval_seed = generator.initial_seed() if generator is not None else 0
    with (_console_log() if _dist.rank() == 0 else contextlib.nullcontext(), _StopRequest() as stop,
          recomputing(model, recompute)):  # training only: evaluation runs without gradients
        run = _Run(model, train_loader, val_loader, test_loader, optimizer, loss_fn, epochs=epochs, encoder=encoder,
                   scheduler=scheduler, regularizers=regularizers, sharpener=sharpener, device=device,
                   out_dir=out_dir, writer=writer, generator=generator, progress=progress, grad_clip=grad_clip,
                   log_samples=log_samples, use_best=use_best, precision=precision, settings=settings, stop=stop,
                   eval_seed=eval_seed)
        metrics = run.run(resume)
    metrics["layer_paths"] = _layer_paths(model, test_loader, encoder, device, eval_seed)
    return metrics


def _layer_paths(model: nn.Module, loader, encoder, device, seed: int) -> dict:
    """:func:`~spikegrad.training.paths.layer_paths` on two samples of ``loader``'s first batch; a
    failure is logged and recorded, never raised (the run's results are already complete)."""
    try:
        x, _ = _pair(next(iter(loader)), "test")
        x_seq = _encode(encoder, x[:2].to(device), torch.Generator(device=device).manual_seed(seed))
        return layer_paths(model, x_seq, hooks=lambda train: _StateWatch(model, root_only=not train).remove)
    except Exception as err:  # noqa: BLE001 - a report, not a result
        log.warning(f"could not determine the layers' computational paths: {type(err).__name__}: {err}")
        return {"error": f"{type(err).__name__}: {err}"}


class _Run:
    """One call of :func:`fit`: its settings (checked by ``fit``) and the state that changes as it runs.

    The settings are the arguments of ``fit`` (``device`` resolved, ``out_dir`` a ``Path`` or None,
    ``writer``/``progress`` off on ranks > 0), plus ``settings`` (what the checkpoints keep), ``stop``
    (the :class:`~spikegrad.training.guards._StopRequest` of the run) and ``eval_seed``. The state:
    ``state`` (what a checkpoint records: epoch, batch, best score, history, timings, partial sums),
    ``best_model`` (the best weights, on the CPU), ``boundary_rng`` (the random state after the
    completed batches of a resumed epoch) and, for an interrupt checkpoint, ``phase``, ``epoch``,
    ``position``, ``epoch_rng``, ``last_weights`` and ``ckpt`` (the end-of-epoch checkpoint).
    """

    def __init__(self, model: nn.Module, train_loader, val_loader, test_loader, optimizer: torch.optim.Optimizer,
                 loss_fn, *, epochs: int, encoder, scheduler, regularizers: Sequence, sharpener, device: torch.device,
                 out_dir: Path | None, writer, generator: torch.Generator | None, progress: bool,
                 grad_clip: float | None, log_samples: int, use_best: bool, precision: str, settings: dict,
                 stop: _StopRequest, eval_seed: int):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.epochs, self.encoder, self.scheduler, self.regularizers = epochs, encoder, scheduler, regularizers
        self.sharpener, self.device, self.out_dir, self.writer = sharpener, device, out_dir, writer
        self.generator, self.progress, self.grad_clip = generator, progress, grad_clip
        self.log_samples, self.use_best, self.precision = log_samples, use_best, precision
        self.settings, self.stop, self.eval_seed = settings, stop, eval_seed
        self.sync, self.world = _dist.active(), _dist.world_size()
        # `net` trains; `model` evaluates and is saved
        self.net = nn.parallel.DistributedDataParallel(model) if self.sync else model
        self.state: dict[str, Any] = {"epoch": 0, "batch": 0, "best_val": -math.inf, "history": [],
                                      "train_seconds": 0.0, "train_samples": 0, "totals": None, "epoch_rng": None}
        self.best_model: dict | None = None
        self.boundary_rng: dict | None = None
        self.samples = self.labels = None
        self.phase, self.epoch = "train", 0
        self.position: dict = {}
        self.epoch_rng: dict | None = None
        self.last_weights: dict | None = None  # the last epoch's weights while the test runs on the best ones
        self.ckpt: dict | None = None

    # ------------------------------------------------------------------------------ helpers
    def eval_generator(self) -> torch.Generator:
        """Validation, test and sample figures draw their encoder noise (rate coding) from a fresh generator
        with a fixed seed: the same noise every epoch, and the training generators are left alone."""
        return torch.Generator(device=self.device).manual_seed(self.eval_seed)

    def stop_requested(self) -> bool:
        return bool(self.stop)

    def stop_agreed(self) -> bool:
        return _dist.agree(bool(self.stop)) if self.sync else bool(self.stop)

    def checkpoint(self, rng: dict, when: str) -> dict:
        """The checkpoint of this moment; never built from non-finite weights (checked here, once per checkpoint,
        on every process, also without out_dir)."""
        bad = _nonfinite_names(self.model)
        if bad:
            raise NonFiniteLossError(f"the weights became non-finite {when} ({', '.join(bad[:5])}); no checkpoint "
                                     "is written from them")
        state = self.state
        ranks = (_dist.gather({"rng": rng, "totals": state["totals"], "epoch_rng": state["epoch_rng"]})
                 if self.sync else None)
        return {"version": CHECKPOINT_VERSION, **({"world_size": self.world, "ranks": ranks} if self.sync else {}),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "optimizer_type": type(self.optimizer).__name__,
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "sharpener": None if self.sharpener is None else self.sharpener.state_dict(),
                "best_model": self.best_model, "settings": self.settings, "state": dict(state), "rng": rng}

    def write(self, ckpt: dict, name: str) -> Path | None:
        if self.out_dir is None or _dist.rank() > 0:
            return None
        save_checkpoint(ckpt, self.out_dir / name)
        return self.out_dir / name

    # ------------------------------------------------------------------------------ phases
    def restore(self, resume: str | os.PathLike) -> None:
        """Continue from the checkpoint ``resume``: weights, optimizer, scheduler, sharpener, random state, position."""
        ckpt = load_checkpoint(resume, self.model)
        saved_world = ckpt.get("world_size", 1)
        if saved_world != self.world:
            raise ResumeError(f"checkpoint {resume} was written by a run of {saved_world} process(es), and this run "
                              f"has {self.world}: the data shards, the random generators of each process and the "
                              f"position inside the epoch cannot be mapped. Resume with {saved_world} process(es) ("
                              + ("plain python train.py" if saved_world == 1 else f"torchrun --nproc_per_node={saved_world}")
                              + f" for one node), or start a new run from its weights (ann_checkpoint={resume})")
        report = _resume(resume, ckpt, self.optimizer, self.scheduler, self.sharpener, self.epochs, self.settings)
        state = self.state
        state.update(ckpt["state"])
        rng = ckpt["rng"]
        if self.sync:  # this process's own random state and partial sums
            own = ckpt["ranks"][_dist.rank()]
            rng, state["totals"], state["epoch_rng"] = own["rng"], own["totals"], own["epoch_rng"]
        self.best_model = ckpt.get("best_model")
        _set_rng_state(rng, self.train_loader, self.generator)
        self.boundary_rng = rng if state["batch"] > 0 else None
        log.info(f"resumed from {resume} at epoch {state['epoch'] + 1}, batch {state['batch']}\n  "
                 + "\n  ".join(report))

    def draw_samples(self) -> None:
        """The test samples whose rasters and traces go to TensorBoard every epoch."""
        test_loader = self.test_loader
        if self.writer is None or not self.log_samples or test_loader is None:
            return
        first = test_loader  # in a distributed run its shard: take the first samples of the whole test set
        if self.sync and isinstance(test_loader, DataLoader):
            first = DataLoader(test_loader.dataset, batch_size=self.log_samples, collate_fn=test_loader.collate_fn)
        self.samples, self.labels = (t[:self.log_samples] for t in next(iter(first)))

    def run(self, resume: str | os.PathLike | None) -> dict[str, Any]:
        """Resume if asked, train the remaining epochs, test; the metrics of :func:`fit`."""
        if resume is not None:
            self.restore(resume)
        self.draw_samples()
        self.phase, self.epoch = "train", self.state["epoch"]
        try:
            for epoch in range(self.state["epoch"], self.epochs):
                self.epoch = epoch
                # resumed after the sharp stop
                if self.state["batch"] == 0 and getattr(self.sharpener, "stop_training", False):
                    log.info(f"every layer is fully sharp: no training after epoch {epoch}")
                    break
                self.train_and_validate(epoch)
                if getattr(self.sharpener, "stop_training", False):  # Whetstone: training ends once every layer is sharp
                    log.info(f"every layer is fully sharp: training stops after epoch {epoch + 1}")
                    break
            return self.test()
        except NonFiniteLossError as err:
            raise self.nonfinite(err) from None
        except (_Stop, KeyboardInterrupt) as err:
            self.save_interrupted(err)
            if self.stop.forced or isinstance(err, KeyboardInterrupt):
                raise
            if self.stop.name == "SIGTERM":
                raise SystemExit(128 + signal.SIGTERM) from None
            raise KeyboardInterrupt(self.cause(err)) from None

    def train_and_validate(self, epoch: int) -> None:
        """One epoch: train, validate, step the schedules, checkpoint, log."""
        state, sharpener, writer = self.state, self.sharpener, self.writer
        self.phase = "train"
        lr = self.optimizer.param_groups[0]["lr"]
        if state["batch"] > 0:  # resuming inside an epoch: replay its shuffling, skip done batches
            self.epoch_rng = state["epoch_rng"]
            _set_rng_state({**self.epoch_rng, "encoder": None}, self.train_loader, None)
        else:
            self.epoch_rng = _rng_state(self.train_loader, self.generator)  # the epoch's shuffling is drawn from this
        if self.sync:
            _dist.set_epoch(self.train_loader, epoch)
        self.position = {"batch": state["batch"], "totals": state["totals"],
                         "rng": self.boundary_rng or _rng_state(None, self.generator)}
        t0 = time.perf_counter()
        try:
            metrics = train_epoch(self.net, self.train_loader, self.optimizer, self.loss_fn, encoder=self.encoder,
                                  regularizers=self.regularizers, sharpener=sharpener, device=self.device,
                                  generator=self.generator, epoch=epoch, start_batch=state["batch"],
                                  totals=state["totals"], resume_rng=self.boundary_rng, position=self.position,
                                  progress=self.progress, grad_clip=self.grad_clip, should_stop=self.stop_requested,
                                  precision=self.precision)
        finally:
            state["train_seconds"] += time.perf_counter() - t0
        self.boundary_rng = None
        self.phase = "validation"
        val = (evaluate(self.model, self.val_loader, self.loss_fn, encoder=self.encoder, device=self.device,
                        generator=self.eval_generator(), desc="validation", should_stop=self.stop_requested,
                        precision=self.precision) if self.val_loader is not None else {})
        self.phase = "epoch end"
        state["train_samples"] += metrics["train_samples"]
        state["batch"], state["totals"], state["epoch_rng"] = 0, None, None
        record = {"epoch": epoch + 1, "lr": lr, **metrics, **{f"val_{k}": v for k, v in val.items()}}
        state["history"].append(record)
        if self.scheduler is not None:
            self.scheduler.step()
        if sharpener is not None:
            sharpener.on_epoch_end(epoch, {"train_loss": metrics["train_loss"], "val_loss": val.get("loss"),
                                           "val_accuracy": val.get("accuracy")})
        score = val["accuracy"] if val else metrics["train_accuracy"]
        improved = score > state["best_val"]
        if improved:
            state["best_val"] = score
            self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        state["epoch"] = epoch + 1
        self.phase = "checkpoint write"
        self.ckpt = self.checkpoint(_rng_state(self.train_loader, self.generator), f"after epoch {epoch + 1}")
        self.write(self.ckpt, "last.pt")
        if improved:
            self.write(self.ckpt, "best.pt")
        _check_stop(self.stop_agreed)
        self.phase = "epoch end"
        if writer is not None:
            _log_epoch(writer, self.model, record, epoch, sharpener)
            if self.samples is not None:
                _log_samples(writer, self.model, self.encoder, self.samples, self.labels, self.device, epoch + 1,
                             self.eval_generator())
            writer.flush()
        log.info(f"epoch {epoch + 1}/{self.epochs}: train loss {metrics['train_loss']:.4f} acc "
                 f"{metrics['train_accuracy']:.4f}"
                 + (f" | val loss {val['loss']:.4f} acc {val['accuracy']:.4f}" if val else "")
                 + (f" spikes/input {val['spikes_per_input']:.1f}" if val and val["spikes_per_input"] is not None
                    else "") + f" | lr {lr:.3g}")

    def test(self) -> dict[str, Any]:
        """The result of the run, with the test metrics (on the best weights if ``use_best``)."""
        state, model = self.state, self.model
        result: dict[str, Any] = {"epochs": state["epoch"], "train_seconds": state["train_seconds"],
                                  "train_samples_per_second": state["train_samples"] / max(state["train_seconds"], 1e-9),
                                  "val_accuracy": (state["best_val"] if self.val_loader is not None and state["history"]
                                                   else None),
                                  "history": state["history"]}
        self.phase = "test"
        if self.test_loader is not None:
            if self.use_best and self.best_model is not None:
                self.last_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.load_state_dict(self.best_model)
            test = evaluate(model, self.test_loader, self.loss_fn, encoder=self.encoder, device=self.device,
                            generator=self.eval_generator(), progress=self.progress, desc="test",
                            should_stop=self.stop_requested, precision=self.precision)
            result.update(test_accuracy=test["accuracy"], test_loss=test["loss"],
                          spikes_per_input=test["spikes_per_input"], test_rates=test["rates"])
            if self.writer is not None:
                self.writer.add_scalar("accuracy/test", test["accuracy"], state["epoch"])
                if test["spikes_per_input"] is not None:
                    self.writer.add_scalar("spikes_per_input/test", test["spikes_per_input"], state["epoch"])
        return result

    # ------------------------------------------------------------------------------ endings
    def nonfinite(self, err: NonFiniteLossError) -> NonFiniteLossError:
        """``err`` with where the last good checkpoint is and what to try."""
        out_dir = self.out_dir
        kept = out_dir / "last.pt" if out_dir is not None and (out_dir / "last.pt").exists() else None
        return NonFiniteLossError(f"{err}. The run stopped; " + (
            f"the last good checkpoint is kept at {kept}. " if kept else "no checkpoint was written yet. ") +
            "Lower the learning rate (optim.lr), add grad clipping (trainer.grad_clip=1.0) or check the "
            "inputs for NaNs.")

    def cause(self, err: BaseException) -> str:
        return self.stop.name or ("a stop request of another process" if self.sync and isinstance(err, _Stop)
                                  else "KeyboardInterrupt")

    def save_interrupted(self, err: BaseException) -> None:
        """After a stop request: write ``interrupted.pt`` (unless a second signal forced the stop) and say how to
        resume. Every process builds the checkpoint (its random state goes in), rank 0 writes it and says where."""
        state, out_dir, phase = self.state, self.out_dir, self.phase
        cause = self.cause(err)
        where = f"during {phase}" + (f" of epoch {self.epoch + 1}" if phase in ("train", "validation") else "")
        if self.stop.forced:
            log.warning(f"\nstopped at once by a second signal {where}; no checkpoint written"
                        + (f" (the last one is {out_dir / 'last.pt'})" if out_dir and (out_dir / "last.pt").exists()
                           else ""))
            return
        if out_dir is None:
            log.warning(f"\n{cause} {where}; nothing saved (no out_dir)")
            return
        if phase in ("train", "validation"):  # the last completed batch is the resume point
            state.update(batch=self.position["batch"], totals=self.position["totals"], epoch_rng=self.epoch_rng)
            ckpt = self.checkpoint(self.position["rng"], where)
        else:  # at an epoch boundary: the end-of-epoch checkpoint
            if self.last_weights is not None:
                self.model.load_state_dict(self.last_weights)
            ckpt = (self.checkpoint(_rng_state(self.train_loader, self.generator), where)
                    if phase != "checkpoint write" else self.ckpt)
        path = self.write(ckpt, "interrupted.pt")
        what = (f"epoch {state['epoch'] + 1}, batch {state['batch']}" if phase in ("train", "validation")
                else f"{state['epoch']} completed epochs")
        if _dist.rank() == 0:
            log.warning(f"\n{cause} {where}; checkpoint saved to {path} ({what})\n"
                        f"resume with the same command plus: resume={path}")
