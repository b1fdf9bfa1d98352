"""Checkpoints of :func:`~spikegrad.training.fit`: atomic writes, readable errors, random states, and
what a resume restores or overrides (see the package docstring for the semantics)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["ResumeError", "CheckpointWriteError", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_VERSION = 2
# run settings (flattened config keys) that fix the train / validation split: a resume may not change them
SPLIT_KEYS = ("seed", "data.name", "data.val_size", "data.subset")
_REPORTED_AS_SETTINGS = ("resume", "trainer.", "optim.", "scheduler.")  # compared from the built objects instead
_SCHEDULER_COUNTERS = ("base_lrs", "last_epoch", "_step_count", "_is_initial", "_get_lr_called_within_step",
                       "_last_lr", "verbose")


class ResumeError(ValueError):
    """A checkpoint cannot be resumed with the given settings (the message names the setting and the fix)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous file at that path is unchanged."""


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
        raise ResumeError(f"checkpoint {path} holds the state of the optimizer {saved or '(another type)'}, but "
                          f"this run built {mine}: its state (e.g. Adam's moments) cannot continue in {mine}. Resume with the "
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


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _settings(epochs: int, optimizer, scheduler, grad_clip, train_loader, config: dict | None = None) -> dict:
    """The settings a checkpoint records, to tell an exact continuation from an overridden one."""
    batches = len(train_loader) if hasattr(train_loader, "__len__") else None
    return {"config": None if config is None else _flatten(config),"epochs": epochs, "batches_per_epoch": batches, "optimizer": type(optimizer).__name__,
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
    old_cfg, new_cfg = (saved or {}).get("config"), settings.get("config")
    config_changes = [] if old_cfg is None or new_cfg is None else [
        (key, old_cfg.get(key), new_cfg.get(key)) for key in sorted(set(old_cfg) | set(new_cfg))
        if not key.startswith(_REPORTED_AS_SETTINGS) and repr(old_cfg.get(key)) != repr(new_cfg.get(key))]
    split = [f"{k} {a} -> {b}" for k, a, b in config_changes if k in SPLIT_KEYS]
    if split:
        raise ResumeError(f"checkpoint {path}: {'; '.join(split)} would change the train / validation split, so "
                          "samples the model was trained on could land in the validation set. Resume with the "
                          "checkpoint's values, or start a new run")
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
    changed += [f"{k} {a} -> {b}" for k, a, b in config_changes]
    exact = not changed
    return [f"restored: {', '.join(restored)}",
            "overridden: " + ("; ".join(changed) if not exact else "nothing (exact continuation)")]

