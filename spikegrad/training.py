"""Config-free training: :func:`train_epoch`, :func:`evaluate` and :func:`fit`.

``fit`` takes built objects (model, loaders, optimizer, loss, encoder, regularizers, sharpener) and
returns a metrics dict. Its promises:

- **Checkpoints**: ``last.pt`` after every epoch, ``best.pt`` when the validation accuracy improves,
  written atomically (a failed write leaves the previous file and no temporary file). A checkpoint
  is never written from non-finite weights.
- **Interrupts**: Ctrl-C (SIGINT) and SIGTERM (what cluster schedulers send before killing a job)
  are honoured at the next safe point (between batches, during validation, test or a checkpoint
  write): the run saves ``interrupted.pt`` and prints how to resume. A second signal stops at once.
- **Exact resume**: ``resume=PATH`` with unchanged settings continues the run exactly: on CPU the
  final weights equal an uninterrupted run's bit for bit, for every encoder, sharpener, shuffling
  and augmentation (all random generators and the epoch's partial sums are in the checkpoint).
- **Changed settings on resume**: a larger ``epochs`` (an extended run with a new horizon) or other
  optimizer / scheduler hyperparameters apply from the resume point: the scheduler is rebuilt from
  the new settings and fast-forwarded over the completed epochs. ``fit`` logs what it restored and
  what was overridden; a change that cannot apply (another optimizer type, fewer epochs than
  completed, another model) is a :class:`ResumeError`.
- **Non-finite values**: a NaN/Inf loss or gradient, or a neuron state that became non-finite,
  stops the run with :class:`NonFiniteLossError` naming the epoch, batch and (for states) the
  layer and time step; the last good checkpoint is kept.
- ``use_best``: the test set is evaluated with the best-validation weights, kept in memory and in
  ``last.pt``, so the promise holds without ``out_dir`` and across resumes.

Messages go to the ``spikegrad.training`` logger (to stdout when logging is not configured).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on the loader eagerly

from .models import SpikingOutput, eval_mode, recording_v, spikes_per_input

__all__ = ["NonFiniteLossError", "ResumeError", "CheckpointWriteError", "resolve_device", "train_epoch", "evaluate",
           "fit", "save_checkpoint", "load_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2
_SCHEDULER_COUNTERS = ("base_lrs", "last_epoch", "_step_count", "_is_initial", "_get_lr_called_within_step",
                       "_last_lr", "verbose")


class NonFiniteLossError(RuntimeError):
    """The loss, a gradient or a neuron state became NaN or infinite; the run stopped and kept its last
    good checkpoint."""


class ResumeError(ValueError):
    """A checkpoint cannot be resumed with the given settings (the message names the setting and the fix)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous file at that path is unchanged."""


class _Stop(Exception):
    """Internal: a stop was requested by a signal; raised at a safe point."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; ``"cuda"`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use device=cpu or device=auto")
    return dev


# ------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename.

    Raises:
        CheckpointWriteError: the write failed (disk full, folder not writable); the temporary file
            is removed and the previous file at ``path`` is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
        except OSError:
            free = "free space unknown"
        kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
        raise CheckpointWriteError(f"could not write the checkpoint {path} ({free} on that disk; torch.save "
                                   f"reported: {str(err).strip().splitlines()[0]}); {kept}. Free disk space or "
                                   "choose another output folder (hydra.run.dir=...)") from None
    except BaseException:  # e.g. KeyboardInterrupt: never leave a half-written file behind
        tmp.unlink(missing_ok=True)
        raise


def _read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is a folder; pass the path of a last.pt, best.pt or "
                                "interrupted.pt file in it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the path of a last.pt or best.pt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated zip, garbage bytes, unpickling errors: all mean "not readable"
        raise ValueError(f"checkpoint {path} cannot be read: it is truncated or not a file written by torch.save "
                         f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}). "
                         "Use another checkpoint of the run (last.pt, best.pt) or start a new run") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a spikegrad checkpoint (no 'model' entry)")
    return ckpt


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer=None, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`fit` into ``model`` (and ``optimizer``), returning it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated or not a checkpoint, or it belongs to another architecture
            (the message names the mismatching keys).
        ResumeError: its optimizer state does not fit ``optimizer`` (another optimizer type).
    """
    ckpt = _read_checkpoint(path, map_location)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[:6]
        raise ValueError(f"checkpoint {path} was saved from a different model architecture and cannot be "
                         f"loaded into {type(model).__name__}: {' '.join(first)} ... Resume with the same model "
                         "configuration as the checkpoint's run, or start a new run without resume") from None
    if optimizer is not None and "optimizer" in ckpt:
        _load_optimizer(optimizer, ckpt, path)
    return ckpt


def _load_optimizer(optimizer: torch.optim.Optimizer, ckpt: dict, path) -> None:
    saved = ckpt.get("optimizer_type")
    groups = ckpt["optimizer"].get("param_groups", [])
    mine = type(optimizer).__name__
    same_keys = all(set(g) - {"params", "initial_lr"} == set(h) - {"params", "initial_lr"}
                    for g, h in zip(groups, optimizer.param_groups))
    if (saved is not None and saved != mine) or not same_keys:
        raise ResumeError(f"checkpoint {path} holds the state of a {saved or 'different'} optimizer, but this run "
                          f"built {mine}: its state (e.g. Adam's moments) cannot continue in {mine}. Resume with the "
                          f"checkpoint's optimizer (optim={(saved or 'the same').lower()}), or start a new run from its "
                          "weights only (ann_checkpoint=PATH in train.py, load_checkpoint(path, model) in Python)")
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as err:
        raise ResumeError(f"checkpoint {path}: the optimizer state does not fit this run's optimizer ({err}); "
                          "resume with the same model and optimizer configuration") from None


def _nonfinite_names(model: nn.Module) -> list[str]:
    return [name for name, t in list(model.named_parameters()) + list(model.named_buffers())
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


# ------------------------------------------------------------------------------- random generators
def _rng_state(train_loader, generator) -> dict:
    loader_gen = getattr(train_loader, "generator", None)
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": None if loader_gen is None else loader_gen.get_state(),
            "encoder": None if generator is None else generator.get_state()}


def _set_rng_state(state: dict, train_loader, generator) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    loader_gen = getattr(train_loader, "generator", None)
    if loader_gen is not None and state.get("loader") is not None:
        loader_gen.set_state(state["loader"])
    if generator is not None and state.get("encoder") is not None:
        generator.set_state(state["encoder"])


# ----------------------------------------------------------------------------------------- signals
class _StopRequest:
    """Turns the first SIGINT / SIGTERM into a request that the loops honour at the next safe point.

    ``bool(stop)`` is True once a signal arrived; ``stop.name`` is its name. A second signal raises
    ``KeyboardInterrupt`` at once (``stop.forced``). Handlers are installed only in the main thread
    and the previous ones are restored on exit.
    """

    def __init__(self):
        self.name: str | None = None
        self.forced = False
        self._previous: dict = {}

    def __bool__(self) -> bool:
        return self.name is not None

    def _handle(self, signum, frame) -> None:
        if self.name is not None:
            self.forced = True
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}): stopped at once")
        self.name = signal.Signals(signum).name
        print(f"\n{self.name} received: stopping at the next safe point to save a checkpoint "
              "(send it again to stop at once, without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise _Stop


# ---------------------------------------------------------------------------- non-finite detection
def _float_leaves(obj) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _float_leaves(item)]
    return []


class _StateWatch:
    """Forward hooks on every module returning ``(output, state)`` (the neurons): a device-side flag of
    whether all states stay finite, read once per batch. :meth:`diagnose` names the first such module
    whose state is non-finite and the first time step at which its input was non-finite."""

    def __init__(self, model: nn.Module):
        self.names = {m: name or type(m).__name__ for name, m in model.named_modules()}
        self.flags: list[Tensor] = []
        self.record: list[tuple[str, nn.Module, Tensor | None, bool]] | None = None
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()]

    def _hook(self, module, args, output) -> None:
        if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], tuple)):
            return
        leaves = _float_leaves(output[1])
        if not leaves:
            return
        if self.record is None:
            seq = output[0] if isinstance(output[0], Tensor) else None
            for t in leaves:  # a recorded state sequence [T, B, ...]: a NaN/Inf membrane stays so, the last step tells
                last = seq is not None and t.dim() == seq.dim() >= 3 and t.shape[0] == seq.shape[0]
                self.flags.append(torch.isfinite(t[-1] if last else t).all())
        else:
            x = args[0] if args and isinstance(args[0], Tensor) else None
            self.record.append((self.names[module], module, x, all(bool(torch.isfinite(t).all()) for t in leaves)))

    def finite(self) -> Tensor | None:
        """0-dim bool tensor (all states of the batches since the last call finite), or None."""
        flags, self.flags = self.flags, []
        return torch.stack(flags).all() if flags else None

    @torch.no_grad()
    def diagnose(self, model: nn.Module, x_seq: Tensor) -> str:
        self.record = []
        try:
            with eval_mode(model):
                model(x_seq)
        except Exception as err:  # the diagnosis itself must not hide the original problem
            return f"(the diagnosis run failed: {err})"
        finally:
            record, self.record = self.record, None
        for name, module, x, ok in record:
            if ok:
                continue
            where = f"layer '{name}' ({type(module).__name__}) has a non-finite state"
            if x is not None and x.dim() >= 1 and not bool(torch.isfinite(x).all()):
                steps = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero().flatten()  # [bad steps]
                kind = "NaN" if bool(torch.isnan(x).any()) else "Inf"
                return (f"{where}: its input holds {kind} from time step {int(steps[0])} on (input shape "
                        f"{tuple(x.shape)}, time first), and a NaN/Inf membrane stays so for the rest of the sequence")
            return f"{where} although its input is finite (an overflow: check the weights' scale and the learning rate)"
        return "no layer state is non-finite when the batch is run again"

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _encode(encoder, x: Tensor, generator) -> Tensor:
    return x if encoder is None else encoder(x, generator=generator)


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
                should_stop: Callable[[], bool] | None = None) -> dict:
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
    Returns:
        ``{"train_loss", "train_accuracy", "train_spikes_per_input", "train_samples"}``; loss and
        accuracy are means over samples.
    Raises:
        NonFiniteLossError: a NaN/Inf loss, gradient or neuron state (before the weights change).
    """
    model.train()
    device = torch.device(device)
    t = dict(totals) if totals else {"n": 0.0, "loss_sum": 0.0, "correct": 0.0, "spike_sum": 0.0, "spiking": False}
    params = [p for p in model.parameters() if p.requires_grad]
    watch = _StateWatch(model)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=_progress(progress), dynamic_ncols=True)
    try:
        for k, batch in enumerate(bar):
            if k < start_batch:
                if k == start_batch - 1 and resume_rng is not None:
                    _set_rng_state(resume_rng, None, generator)
                continue
            _check_stop(should_stop)
            x, y = _pair(batch, "train")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x_seq = _encode(encoder, x, generator)
            out = model(x_seq)
            loss = loss_fn(out, y)
            total = loss + _regularization(regularizers, out)
            ok = torch.isfinite(total.detach())
            states_ok = watch.finite()
            if not bool(ok if states_ok is None else ok & states_ok):  # one device sync for both checks
                where = f"at epoch {epoch + 1}, batch {k + 1}"
                data = ("" if bool(torch.isfinite(x_seq).all()) else
                        "; the input batch itself holds NaN/Inf (after encoding): check the data and the encoder")
                if states_ok is not None and not bool(states_ok):
                    raise NonFiniteLossError(f"a neuron state became non-finite {where}: "
                                             f"{watch.diagnose(model, x_seq)}{data}")
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
                sharpener.on_batch_end(epoch, k, float(loss.detach()))
            if position is not None:
                position.update(batch=k + 1, totals=dict(t), rng=_rng_state(None, generator))
            n = t["n"]
            bar.set_postfix(loss=f"{t['loss_sum'] / n:.4f}", acc=f"{t['correct'] / n:.4f}",
                            **({"spikes": f"{t['spike_sum'] / n:.1f}"} if t["spiking"] else {}), refresh=False)
    finally:
        bar.close()
        watch.remove()
    if not t["n"]:
        raise ValueError("the train loader yielded no samples; check the data split sizes (data.subset, data.val_size)")
    n = t["n"]
    return {"train_loss": t["loss_sum"] / n, "train_accuracy": t["correct"] / n,
            "train_spikes_per_input": t["spike_sum"] / n if t["spiking"] else None, "train_samples": int(t["n"])}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, loss_fn, *, encoder=None, device="cpu",
             generator: torch.Generator | None = None, progress: bool = False, desc: str = "eval",
             should_stop: Callable[[], bool] | None = None) -> dict:
    """Mean loss, accuracy (fraction in [0, 1]) and hidden spikes per input over ``loader``.

    Also returns ``rates``: per hidden layer, the mean firing rate (spikes per neuron per step).
    ``spikes_per_input`` is None for models that do not return a :class:`SpikingOutput`.

    Raises:
        NonFiniteLossError: a NaN/Inf loss or neuron state (an accuracy computed from it would be wrong).
    """
    device = torch.device(device)
    n = loss_sum = correct = spike_sum = 0.0
    rates: list[float] = []
    watch = _StateWatch(model)
    try:
        with eval_mode(model):
            for k, batch in enumerate(tqdm(loader, desc=desc, leave=False, disable=_progress(progress),
                                           dynamic_ncols=True)):
                _check_stop(should_stop)
                x, y = _pair(batch, desc)
                x, y = x.to(device), y.to(device)
                x_seq = _encode(encoder, x, generator)
                out = model(x_seq)
                b = y.shape[0]
                loss = float(loss_fn(out, y))
                states_ok = watch.finite()
                if not math.isfinite(loss) or (states_ok is not None and not bool(states_ok)):
                    detail = (f"the loss is {loss}" if not math.isfinite(loss)
                              else f"a neuron state became non-finite: {watch.diagnose(model, x_seq)}")
                    raise NonFiniteLossError(f"{desc}: {detail} at batch {k + 1}; its accuracy would be meaningless. "
                                             "Check the inputs for NaN/Inf and the weights")
                n += b
                loss_sum += loss * b
                correct += float((loss_fn.predict(out) == y).sum())
                spike_sum += _batch_spikes(out) * b
                if isinstance(out, SpikingOutput):
                    layer_rates = [float(s.float().mean()) * b for s in out.spikes]
                    rates = [a + r for a, r in zip(rates, layer_rates)] if rates else layer_rates
    finally:
        watch.remove()
    if n == 0:
        raise ValueError(f"{desc}: the data loader yielded no samples; check the data split sizes")
    return {"loss": loss_sum / n, "accuracy": correct / n, "spikes_per_input": spike_sum / n if rates else None,
            "rates": [r / n for r in rates], "samples": int(n)}


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
    from .plots import raster_figure, readout_figure, traces_figure

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
def _settings(epochs: int, optimizer, scheduler, grad_clip, train_loader) -> dict:
    """The settings a checkpoint records, to tell an exact continuation from an overridden one."""
    batches = len(train_loader) if hasattr(train_loader, "__len__") else None
    return {"epochs": epochs, "batches_per_epoch": batches, "optimizer": type(optimizer).__name__,
            "hyper": [{k: v for k, v in g.items() if k not in ("params", "initial_lr")} for g in optimizer.param_groups],
            "scheduler": None if scheduler is None else type(scheduler).__name__,
            "scheduler_params": None if scheduler is None else
            {k: v for k, v in scheduler.state_dict().items() if k not in _SCHEDULER_COUNTERS},
            "grad_clip": grad_clip}


def _changes(saved: dict, now: dict) -> list[str]:
    changed = []
    if saved["epochs"] != now["epochs"]:
        changed.append(f"epochs {saved['epochs']} -> {now['epochs']}")
    for i, (a, b) in enumerate(zip(saved["hyper"], now["hyper"])):
        for key in sorted(set(a) | set(b)):
            if repr(a.get(key)) != repr(b.get(key)):
                changed.append(f"optimizer {key}{f' (group {i})' if len(now['hyper']) > 1 else ''} "
                               f"{a.get(key)} -> {b.get(key)}")
    if saved["scheduler"] != now["scheduler"]:
        changed.append(f"scheduler {saved['scheduler']} -> {now['scheduler']}")
    elif repr(saved["scheduler_params"]) != repr(now["scheduler_params"]):
        changed.append(f"scheduler settings {saved['scheduler_params']} -> {now['scheduler_params']}")
    if saved.get("batches_per_epoch") != now["batches_per_epoch"]:
        changed.append(f"batches per epoch {saved.get('batches_per_epoch')} -> {now['batches_per_epoch']}")
    if saved["grad_clip"] != now["grad_clip"]:
        changed.append(f"grad_clip {saved['grad_clip']} -> {now['grad_clip']}")
    return changed


def _resume(path, ckpt: dict, optimizer, scheduler, sharpener, epochs: int, settings: dict) -> list[str]:
    """Restore the optimizer, scheduler and sharpener from ``ckpt``; apply changed settings; return a report."""
    done = ckpt["state"]["epoch"]
    if epochs < done:
        raise ResumeError(f"checkpoint {path} has completed {done} epochs, so epochs={epochs} cannot apply; pass "
                          f"epochs >= {done} (trainer.epochs={done} only runs the test, more extends the run)")
    saved = ckpt.get("settings")
    if ckpt["state"]["batch"] > 0 and saved is not None and saved.get("batches_per_epoch") != settings["batches_per_epoch"]:
        raise ResumeError(f"checkpoint {path} stopped after batch {ckpt['state']['batch']} of an epoch of "
                          f"{saved.get('batches_per_epoch')} batches, but this run's train loader has "
                          f"{settings['batches_per_epoch']} batches per epoch (other data.batch_size, data.subset or "
                          "data.val_size?), so the position cannot be found again. Resume with the data settings of "
                          "the checkpoint's run, or from its last.pt (an epoch boundary)")
    fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    _load_optimizer(optimizer, ckpt, path)
    changed = [] if saved is None else _changes(saved, settings)
    restored = ["weights", f"{type(optimizer).__name__} state", "random generators", "history"]
    if ckpt.get("best_model") is not None:
        restored.append(f"best weights (score {ckpt['state']['best_val']:.4f})")
    if saved is None:
        restored.append("(the checkpoint records no run settings: overrides cannot be detected)")
    if not changed:  # exact continuation
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
            restored.append(f"{type(scheduler).__name__} state")
    else:  # new settings from the resume point on: the schedule as if planned with them from the start
        for g, fresh in zip(optimizer.param_groups, fresh_groups):
            g.update(fresh)
        if scheduler is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
                for _ in range(done):
                    scheduler.step()
        changed.append(f"learning rate from here: {optimizer.param_groups[0]['lr']:.6g} "
                       + (f"({type(scheduler).__name__} with the new settings, fast-forwarded over {done} epochs)"
                          if scheduler is not None else "(no scheduler)"))
    if sharpener is not None and ckpt.get("sharpener") is not None:
        sharpener.load_state_dict(ckpt["sharpener"])
        restored.append(f"{type(sharpener).__name__} state")
    elif sharpener is not None:
        changed.append(f"{type(sharpener).__name__} starts now (the checkpoint's run had no sharpener)")
    elif ckpt.get("sharpener") is not None:
        changed.append("sharpening stops (the sharpness reached so far stays in the weights)")
    return [f"restored: {', '.join(restored)}",
            "overridden: " + ("; ".join(changed) if changed else "nothing (exact continuation)")]


# -------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, train_loader, val_loader, test_loader, optimizer: torch.optim.Optimizer, loss_fn, *,
        epochs: int, encoder=None, scheduler=None, regularizers: Sequence = (), sharpener=None,
        device: str | torch.device = "cpu", out_dir: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, writer=None, generator: torch.Generator | None = None,
        progress: bool = True, grad_clip: float | None = None, log_samples: int = 2,
        use_best: bool = True) -> dict[str, Any]:
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
    Returns:
        metrics: ``test_accuracy``, ``test_loss``, ``val_accuracy`` (best), ``spikes_per_input``
        (hidden spikes per test sample), ``epochs``, ``train_seconds``, ``train_samples_per_second``,
        ``history`` (per-epoch dicts, with the ``lr`` each epoch trained with).
    Raises:
        NonFiniteLossError, ResumeError, CheckpointWriteError; ``KeyboardInterrupt`` after Ctrl-C and
        ``SystemExit(143)`` after SIGTERM, both once ``interrupted.pt`` is saved.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if grad_clip is not None and (isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float))
                                  or not 0 < grad_clip < math.inf):
        raise ValueError(f"grad_clip must be a positive finite number (the maximum gradient norm) or None for no "
                         f"clipping, got {grad_clip!r} (trainer.grad_clip=1.0 or trainer.grad_clip=null)")
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError("fit steps the scheduler once per epoch without a metric, so ReduceLROnPlateau cannot be "
                         "used; choose an epoch-based scheduler (scheduler=cosine, scheduler=step)")
    if not isinstance(log_samples, int) or isinstance(log_samples, bool) or log_samples < 0:
        raise ValueError(f"log_samples must be an int >= 0 (test samples drawn to TensorBoard), got {log_samples!r}")
    device = resolve_device(device)
    model.to(device)
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(f"cannot write checkpoints to {out_dir}; choose a writable output folder "
                                  "(hydra.run.dir=...)")
    settings = _settings(epochs, optimizer, scheduler, grad_clip, train_loader)
    eval_seed = generator.initial_seed() if generator is not None else 0
    with _console_log(), _StopRequest() as stop:
        return _fit(model, train_loader, val_loader, test_loader, optimizer, loss_fn, epochs, encoder, scheduler,
                    regularizers, sharpener, device, out_dir, resume, writer, generator, progress, grad_clip,
                    log_samples, use_best, settings, stop, eval_seed)


def _fit(model, train_loader, val_loader, test_loader, optimizer, loss_fn, epochs, encoder, scheduler, regularizers,
         sharpener, device, out_dir, resume, writer, generator, progress, grad_clip, log_samples, use_best,
         settings, stop, eval_seed) -> dict[str, Any]:
    def eval_generator() -> torch.Generator:
        """Validation, test and sample figures draw their encoder noise (rate coding) from a fresh generator
        with a fixed seed: the same noise every epoch, and the training generators are left alone."""
        return torch.Generator(device=device).manual_seed(eval_seed)

    state = {"epoch": 0, "batch": 0, "best_val": -math.inf, "history": [], "train_seconds": 0.0,
             "train_samples": 0, "totals": None, "epoch_rng": None}
    best_model: dict | None = None
    boundary_rng = None  # random state after the completed batches of a resumed epoch
    if resume is not None:
        ckpt = load_checkpoint(resume, model)
        report = _resume(resume, ckpt, optimizer, scheduler, sharpener, epochs, settings)
        state.update(ckpt["state"])
        best_model = ckpt.get("best_model")
        _set_rng_state(ckpt["rng"], train_loader, generator)
        boundary_rng = ckpt["rng"] if state["batch"] > 0 else None
        log.info(f"resumed from {resume} at epoch {state['epoch'] + 1}, batch {state['batch']}\n  "
                 + "\n  ".join(report))

    def checkpoint(rng: dict) -> dict:
        return {"version": CHECKPOINT_VERSION, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "optimizer_type": type(optimizer).__name__,
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "sharpener": None if sharpener is None else sharpener.state_dict(),
                "best_model": best_model, "settings": settings, "state": dict(state), "rng": rng}

    def write(ckpt: dict, name: str, when: str) -> Path | None:
        if out_dir is None:
            return None
        bad = _nonfinite_names(model)
        if bad:
            raise NonFiniteLossError(f"the weights became non-finite {when} ({', '.join(bad[:5])}); no checkpoint "
                                     "is written from them")
        save_checkpoint(ckpt, out_dir / name)
        return out_dir / name

    samples = labels = None
    if writer is not None and log_samples and test_loader is not None:
        samples, labels = (t[:log_samples] for t in next(iter(test_loader)))
    phase, epoch = "train", state["epoch"]
    position: dict = {}
    epoch_rng: dict | None = None
    last_weights: dict | None = None  # the last epoch's weights while the test runs on the best ones
    try:
        for epoch in range(state["epoch"], epochs):
            phase = "train"
            lr = optimizer.param_groups[0]["lr"]
            if state["batch"] > 0:  # resuming inside an epoch: replay its shuffling, skip done batches
                epoch_rng = state["epoch_rng"]
                _set_rng_state({**epoch_rng, "encoder": None}, train_loader, None)
            else:
                epoch_rng = _rng_state(train_loader, generator)  # the epoch's shuffling is drawn from this
            position = {"batch": state["batch"], "totals": state["totals"],
                        "rng": boundary_rng or _rng_state(None, generator)}
            t0 = time.perf_counter()
            try:
                metrics = train_epoch(model, train_loader, optimizer, loss_fn, encoder=encoder,
                                      regularizers=regularizers, sharpener=sharpener, device=device,
                                      generator=generator, epoch=epoch, start_batch=state["batch"],
                                      totals=state["totals"], resume_rng=boundary_rng, position=position,
                                      progress=progress, grad_clip=grad_clip, should_stop=lambda: bool(stop))
            finally:
                state["train_seconds"] += time.perf_counter() - t0
            boundary_rng = None
            phase = "validation"
            val = (evaluate(model, val_loader, loss_fn, encoder=encoder, device=device, generator=eval_generator(),
                            desc="validation",
                            should_stop=lambda: bool(stop)) if val_loader is not None else {})
            phase = "epoch end"
            state["train_samples"] += metrics["train_samples"]
            state["batch"], state["totals"], state["epoch_rng"] = 0, None, None
            record = {"epoch": epoch + 1, "lr": lr, **metrics, **{f"val_{k}": v for k, v in val.items()}}
            state["history"].append(record)
            if scheduler is not None:
                scheduler.step()
            if sharpener is not None:
                sharpener.on_epoch_end(epoch, {"train_loss": metrics["train_loss"], "val_loss": val.get("loss"),
                                               "val_accuracy": val.get("accuracy")})
            score = val["accuracy"] if val else metrics["train_accuracy"]
            improved = score > state["best_val"]
            if improved:
                state["best_val"] = score
                best_model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            state["epoch"] = epoch + 1
            bad = _nonfinite_names(model)
            if bad:
                raise NonFiniteLossError(f"the weights became non-finite after epoch {epoch + 1} ({', '.join(bad[:5])}); "
                                         "no checkpoint is written from them")
            phase = "checkpoint write"
            ckpt = checkpoint(_rng_state(train_loader, generator))
            write(ckpt, "last.pt", f"after epoch {epoch + 1}")
            if improved:
                write(ckpt, "best.pt", f"after epoch {epoch + 1}")
            _check_stop(lambda: bool(stop))
            phase = "epoch end"
            if writer is not None:
                _log_epoch(writer, model, record, epoch, sharpener)
                if samples is not None:
                    _log_samples(writer, model, encoder, samples, labels, device, epoch + 1, eval_generator())
                writer.flush()
            log.info(f"epoch {epoch + 1}/{epochs}: train loss {metrics['train_loss']:.4f} acc "
                     f"{metrics['train_accuracy']:.4f}"
                     + (f" | val loss {val['loss']:.4f} acc {val['accuracy']:.4f}" if val else "")
                     + (f" spikes/input {val['spikes_per_input']:.1f}" if val and val["spikes_per_input"] is not None
                        else "") + f" | lr {lr:.3g}")
            if getattr(sharpener, "stop_training", False):  # Whetstone: training ends once every layer is sharp
                log.info(f"every layer is fully sharp: training stops after epoch {epoch + 1}")
                break

        result: dict[str, Any] = {"epochs": state["epoch"], "train_seconds": state["train_seconds"],
                                  "train_samples_per_second": state["train_samples"] / max(state["train_seconds"], 1e-9),
                                  "val_accuracy": (state["best_val"] if val_loader is not None and state["history"]
                                                   else None),
                                  "history": state["history"]}
        phase = "test"
        if test_loader is not None:
            if use_best and best_model is not None:
                last_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.load_state_dict(best_model)
            test = evaluate(model, test_loader, loss_fn, encoder=encoder, device=device, generator=eval_generator(),
                            progress=progress, desc="test", should_stop=lambda: bool(stop))
            result.update(test_accuracy=test["accuracy"], test_loss=test["loss"],
                          spikes_per_input=test["spikes_per_input"], test_rates=test["rates"])
            if writer is not None:
                writer.add_scalar("accuracy/test", test["accuracy"], state["epoch"])
                if test["spikes_per_input"] is not None:
                    writer.add_scalar("spikes_per_input/test", test["spikes_per_input"], state["epoch"])
        return result
    except NonFiniteLossError as err:
        kept = out_dir / "last.pt" if out_dir is not None and (out_dir / "last.pt").exists() else None
        raise NonFiniteLossError(f"{err}. The run stopped; " + (
            f"the last good checkpoint is kept at {kept}. " if kept else "no checkpoint was written yet. ") +
            "Lower the learning rate (optim.lr), add grad clipping (trainer.grad_clip=1.0) or check the "
            "inputs for NaNs.") from None
    except (_Stop, KeyboardInterrupt) as err:
        cause = stop.name or "KeyboardInterrupt"
        where = f"during {phase}" + (f" of epoch {epoch + 1}" if phase in ("train", "validation") else "")
        if stop.forced:
            log.warning(f"\nstopped at once by a second signal {where}; no checkpoint written"
                        + (f" (the last one is {out_dir / 'last.pt'})" if out_dir and (out_dir / "last.pt").exists()
                           else ""))
            raise
        if out_dir is None:
            log.warning(f"\n{cause} {where}; nothing saved (no out_dir)")
        else:
            if phase in ("train", "validation"):  # the last completed batch is the resume point
                state.update(batch=position["batch"], totals=position["totals"], epoch_rng=epoch_rng)
                ckpt = checkpoint(position["rng"])
            else:  # at an epoch boundary: the end-of-epoch checkpoint
                if last_weights is not None:
                    model.load_state_dict(last_weights)
                ckpt = checkpoint(_rng_state(train_loader, generator)) if phase != "checkpoint write" else ckpt
            path = write(ckpt, "interrupted.pt", where)
            what = (f"epoch {state['epoch'] + 1}, batch {state['batch']}" if phase in ("train", "validation")
                    else f"{state['epoch']} completed epochs")
            log.warning(f"\n{cause} {where}; checkpoint saved to {path} ({what})\n"
                        f"resume with the same command plus: resume={path}")
        if isinstance(err, KeyboardInterrupt):
            raise
        if stop.name == "SIGTERM":
            raise SystemExit(128 + signal.SIGTERM) from None
        raise KeyboardInterrupt(cause) from None
