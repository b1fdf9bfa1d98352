"""Config-free training: :func:`train_epoch`, :func:`evaluate` and :func:`fit`.

``fit`` takes built objects (model, loaders, optimizer, loss, encoder, regularizers, sharpener) and
returns a metrics dict. It writes ``last.pt`` after every epoch and ``best.pt`` when the
validation accuracy improves (atomically: a crash never leaves a half-written checkpoint), resumes
exactly from either (``resume=PATH``; on CPU an interrupted and resumed run ends with the same
weights as an uninterrupted one, also after a mid-epoch Ctrl-C), and stops with
:class:`NonFiniteLossError` on a NaN/Inf loss without touching the last good checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on the loader eagerly

from .models import SpikingOutput, eval_mode, recording_v, spikes_per_input

__all__ = ["NonFiniteLossError", "resolve_device", "train_epoch", "evaluate", "fit", "save_checkpoint",
           "load_checkpoint"]

CHECKPOINT_VERSION = 1


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; ``"cuda"`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use device=cpu or device=auto")
    return dev


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer=None, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`fit` into ``model`` (and ``optimizer``), returning it.

    Raises a ``ValueError`` naming the mismatching keys when the checkpoint belongs to another
    architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the path of a last.pt or best.pt file")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a spikegrad checkpoint (no 'model' entry)")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[:6]
        raise ValueError(f"checkpoint {path} was saved from a different model architecture and cannot be "
                         f"loaded into {type(model).__name__}: {' '.join(first)} ... Resume with the same model "
                         "configuration as the checkpoint's run, or start a new run without resume") from None
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt


def _encode(encoder, x: Tensor, generator) -> Tensor:
    return x if encoder is None else encoder(x, generator=generator)


def _batch_spikes(out) -> float:
    return float(spikes_per_input(out)) if isinstance(out, SpikingOutput) else 0.0


def _regularization(regularizers: Sequence, out) -> Tensor | float:
    if not regularizers or not isinstance(out, SpikingOutput):
        return 0.0
    return sum(r(spikes=list(out.spikes), v=list(out.v)) for r in regularizers)


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, loss_fn, *,
                encoder=None, regularizers: Sequence = (), sharpener=None, device="cpu",
                generator: torch.Generator | None = None, epoch: int = 0, start_batch: int = 0,
                position: dict | None = None, progress: bool = True, writer=None,
                grad_clip: float | None = None) -> dict:
    """One pass over ``loader`` with backpropagation through time.

    Args:
        loader: yields ``(x [B, ...], y [B])``; x goes through ``encoder`` (``[T, B, ...]``) if given.
        regularizers: callables ``r(spikes=[...], v=[...]) -> scalar`` added to the loss.
        start_batch: skip this many batches (exact resume inside an epoch).
        position: a dict updated with ``{"batch": k}`` after every optimizer step (for Ctrl-C).
    Returns:
        ``{"train_loss", "train_accuracy", "train_spikes_per_input", "train_samples"}``; loss and
        accuracy are means over samples.
    """
    model.train()
    device = torch.device(device)
    n = loss_sum = correct = spike_sum = 0.0
    spiking = False
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress, dynamic_ncols=True)
    for k, (x, y) in enumerate(bar):
        if k < start_batch:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(_encode(encoder, x, generator))
        loss = loss_fn(out, y)
        total = loss + _regularization(regularizers, out)
        if not torch.isfinite(total):
            raise NonFiniteLossError(f"the loss became {float(total.detach())} at epoch {epoch + 1}, "
                                     f"batch {k + 1} (task loss {float(loss.detach())})")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if position is not None:
            position["batch"] = k + 1
        b = y.shape[0]
        with torch.no_grad():
            batch_correct = float((loss_fn.predict(out) == y).sum())
        n += b
        loss_sum += float(loss.detach()) * b
        correct += batch_correct
        spiking = isinstance(out, SpikingOutput)
        spike_sum += _batch_spikes(out) * b
        if sharpener is not None:
            sharpener.on_batch_end(epoch, k, float(loss.detach()))
        bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{correct / n:.4f}",
                        **({"spikes": f"{spike_sum / n:.1f}"} if spiking else {}), refresh=False)
    bar.close()
    n = max(n, 1)
    return {"train_loss": loss_sum / n, "train_accuracy": correct / n,
            "train_spikes_per_input": spike_sum / n if spiking else None, "train_samples": int(n)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, loss_fn, *, encoder=None, device="cpu",
             generator: torch.Generator | None = None, progress: bool = False, desc: str = "eval") -> dict:
    """Mean loss, accuracy (fraction in [0, 1]) and hidden spikes per input over ``loader``.

    Also returns ``rates``: per hidden layer, the mean firing rate (spikes per neuron per step).
    ``spikes_per_input`` is None for models that do not return a :class:`SpikingOutput`.
    """
    device = torch.device(device)
    n = loss_sum = correct = spike_sum = 0.0
    rates: list[float] = []
    with eval_mode(model):
        for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
            x, y = x.to(device), y.to(device)
            out = model(_encode(encoder, x, generator))
            b = y.shape[0]
            n += b
            loss_sum += float(loss_fn(out, y)) * b
            correct += float((loss_fn.predict(out) == y).sum())
            spike_sum += _batch_spikes(out) * b
            if isinstance(out, SpikingOutput):
                layer_rates = [float(s.float().mean()) * b for s in out.spikes]
                rates = [a + r for a, r in zip(rates, layer_rates)] if rates else layer_rates
    if n == 0:
        raise ValueError(f"{desc}: the data loader yielded no samples; check the data split sizes")
    return {"loss": loss_sum / n, "accuracy": correct / n, "spikes_per_input": spike_sum / n if rates else None,
            "rates": [r / n for r in rates], "samples": int(n)}


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


def _log_epoch(writer, model: nn.Module, metrics: dict, val: dict, epoch: int, optimizer, sharpener) -> None:
    step = epoch + 1
    writer.add_scalar("loss/train", metrics["train_loss"], step)
    writer.add_scalar("accuracy/train", metrics["train_accuracy"], step)
    if metrics["train_spikes_per_input"] is not None:
        writer.add_scalar("spikes_per_input/train", metrics["train_spikes_per_input"], step)
    if val:
        writer.add_scalar("loss/val", val["loss"], step)
        writer.add_scalar("accuracy/val", val["accuracy"], step)
        if val["spikes_per_input"] is not None:
            writer.add_scalar("spikes_per_input/val", val["spikes_per_input"], step)
        for k, r in enumerate(val["rates"]):
            writer.add_scalar(f"firing_rate/layer{k}", r, step)
    writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
    for name, value in (getattr(sharpener, "scalars", lambda: {})() if sharpener is not None else {}).items():
        writer.add_scalar(f"sharpen/{name}", value, step)
    for name, p in model.named_parameters():
        writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), step)
        if p.grad is not None:
            writer.add_histogram(f"grads/{name}", p.grad.detach().float().cpu(), step)


@torch.no_grad()
def _log_samples(writer, model: nn.Module, encoder, samples: Tensor, device, step: int) -> None:
    """Spike raster and membrane traces of fixed test samples, as figures."""
    from .plots import raster_figure, traces_figure

    with eval_mode(model), recording_v(model):
        out = model(_encode(encoder, samples.to(device), None))
    if not isinstance(out, SpikingOutput):
        return
    for b in range(samples.shape[0]):
        for k, s in enumerate(out.spikes):
            writer.add_figure(f"raster/sample{b}/layer{k}", raster_figure(s[:, b], f"sample {b}, layer {k}"), step)
        for k, v in enumerate(out.v):
            writer.add_figure(f"membrane/sample{b}/layer{k}", traces_figure(v[:, b], f"sample {b}, layer {k}"), step)
        writer.add_figure(f"readout/sample{b}", traces_figure(out.readout[:, b], f"sample {b}, readout", None), step)


def fit(model: nn.Module, train_loader, val_loader, test_loader, optimizer: torch.optim.Optimizer, loss_fn, *,
        epochs: int, encoder=None, scheduler=None, regularizers: Sequence = (), sharpener=None,
        device: str | torch.device = "cpu", out_dir: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, writer=None, generator: torch.Generator | None = None,
        progress: bool = True, grad_clip: float | None = None, log_samples: int = 2,
        use_best: bool = True) -> dict[str, Any]:
    """Train for ``epochs`` epochs, validating each, then test.

    Args:
        train_loader: a ``DataLoader`` (its ``generator``, if any, is checkpointed for exact resume).
        val_loader: validation loader or None (then ``best.pt`` tracks training accuracy).
        test_loader: test loader or None.
        optimizer, scheduler: a torch optimizer and an optional epoch-level LR scheduler.
        loss_fn: see :mod:`spikegrad.losses`.
        encoder: maps ``x [B, ...]`` to ``[T, B, ...]`` (None: the model gets ``x``).
        sharpener: optional schedule with ``on_batch_end`` / ``on_epoch_end`` / ``state_dict`` hooks;
            training stops after the epoch at whose end its ``stop_training`` (if any) is True.
        out_dir: folder for ``last.pt`` / ``best.pt`` (None: no checkpoints).
        resume: checkpoint to continue from (model, optimizer, scheduler, sharpener, RNG, position).
        writer: a TensorBoard ``SummaryWriter`` or None.
        generator: random generator of the encoder (e.g. rate coding), on the model's device.
        use_best: evaluate the test set with the best-validation weights (else the last ones).
    Returns:
        metrics: ``test_accuracy``, ``test_loss``, ``val_accuracy`` (best), ``spikes_per_input``
        (hidden spikes per test sample), ``epochs``, ``train_seconds``, ``train_samples_per_second``,
        ``history`` (per-epoch dicts).
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    device = resolve_device(device)
    model.to(device)
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(f"cannot write checkpoints to {out_dir}; choose a writable output folder "
                                  "(hydra.run.dir=...)")
    state = {"epoch": 0, "batch": 0, "best_val": -math.inf, "history": [], "train_seconds": 0.0,
             "train_samples": 0}
    if resume is not None:
        ckpt = load_checkpoint(resume, model, optimizer)
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if sharpener is not None and ckpt.get("sharpener") is not None:
            sharpener.load_state_dict(ckpt["sharpener"])
        state.update(ckpt["state"])
        _set_rng_state(ckpt["rng"], train_loader, generator)
        print(f"resumed from {resume} at epoch {state['epoch'] + 1}, batch {state['batch']}")

    def checkpoint(rng: dict) -> dict:
        return {"version": CHECKPOINT_VERSION, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "sharpener": None if sharpener is None else sharpener.state_dict(),
                "state": dict(state), "rng": rng}

    samples = None
    if writer is not None and log_samples and test_loader is not None:
        samples = next(iter(test_loader))[0][:log_samples]
    position = {"batch": state["batch"]}
    for epoch in range(state["epoch"], epochs):
        epoch_rng = _rng_state(train_loader, generator)  # the epoch's shuffling is drawn from this
        if state["batch"] > 0:  # resuming inside an epoch: replay its shuffling, skip done batches
            epoch_rng = state.pop("epoch_rng")
            loader_gen = getattr(train_loader, "generator", None)
            if loader_gen is not None:
                loader_gen.set_state(epoch_rng["loader"])
        t0 = time.perf_counter()
        try:
            metrics = train_epoch(model, train_loader, optimizer, loss_fn, encoder=encoder, regularizers=regularizers,
                                  sharpener=sharpener, device=device, generator=generator, epoch=epoch,
                                  start_batch=state["batch"], position=position, progress=progress,
                                  grad_clip=grad_clip)
        except KeyboardInterrupt:
            state["train_seconds"] += time.perf_counter() - t0
            if out_dir is not None:
                state["batch"] = position["batch"]
                state["epoch_rng"] = epoch_rng
                path = out_dir / "interrupted.pt"
                save_checkpoint(checkpoint(_rng_state(train_loader, generator)), path)
                print(f"\ninterrupted at epoch {epoch + 1}, batch {position['batch']}; checkpoint saved to {path}\n"
                      f"resume with the same command plus: resume={path}")
            raise
        except NonFiniteLossError as err:
            kept = out_dir / "last.pt" if out_dir is not None and (out_dir / "last.pt").exists() else None
            raise NonFiniteLossError(f"{err}. The run stopped; " + (
                f"the last good checkpoint is kept at {kept}. " if kept else "no checkpoint was written yet. ") +
                "Lower the learning rate (optim.lr), add grad clipping (trainer.grad_clip=1.0) or check the "
                "inputs for NaNs.") from None
        state["train_seconds"] += time.perf_counter() - t0
        state["train_samples"] += metrics["train_samples"]
        state["batch"] = position["batch"] = 0
        val = evaluate(model, val_loader, loss_fn, encoder=encoder, device=device) if val_loader is not None else {}
        record = {"epoch": epoch + 1, **metrics, **{f"val_{k}": v for k, v in val.items() if k != "rates"}}
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
        state["epoch"] = epoch + 1
        if out_dir is not None:
            ckpt = checkpoint(_rng_state(train_loader, generator))
            save_checkpoint(ckpt, out_dir / "last.pt")
            if improved:
                save_checkpoint(ckpt, out_dir / "best.pt")
        if writer is not None:
            _log_epoch(writer, model, metrics, val, epoch, optimizer, sharpener)
            if samples is not None:
                _log_samples(writer, model, encoder, samples, device, epoch + 1)
            writer.flush()
        print(f"epoch {epoch + 1}/{epochs}: train loss {metrics['train_loss']:.4f} acc {metrics['train_accuracy']:.4f}"
              + (f" | val loss {val['loss']:.4f} acc {val['accuracy']:.4f}" if val else "")
              + (f" spikes/input {val['spikes_per_input']:.1f}" if val and val["spikes_per_input"] is not None else ""),
              flush=True)
        if getattr(sharpener, "stop_training", False):  # Whetstone: training ends once every layer is sharp
            print(f"every layer is fully sharp: training stops after epoch {epoch + 1}", flush=True)
            break

    result: dict[str, Any] = {"epochs": state["epoch"], "train_seconds": state["train_seconds"],
                              "train_samples_per_second": state["train_samples"] / max(state["train_seconds"], 1e-9),
                              "val_accuracy": state["best_val"] if val_loader is not None and state["history"] else None,
                              "history": state["history"]}
    if test_loader is not None:
        if use_best and out_dir is not None and (out_dir / "best.pt").exists() and state["history"]:
            model.load_state_dict(torch.load(out_dir / "best.pt", map_location=device, weights_only=False)["model"])
        test = evaluate(model, test_loader, loss_fn, encoder=encoder, device=device, progress=progress, desc="test")
        result.update(test_accuracy=test["accuracy"], test_loss=test["loss"], spikes_per_input=test["spikes_per_input"],
                      test_rates=test["rates"])
        if writer is not None:
            writer.add_scalar("accuracy/test", test["accuracy"], state["epoch"])
            if test["spikes_per_input"] is not None:
                writer.add_scalar("spikes_per_input/test", test["spikes_per_input"], state["epoch"])
    return result
