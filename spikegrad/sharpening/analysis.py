"""Post-training Whetstone analysis, the ``analysis`` hook of ``train.py`` (``conf/analysis/whetstone.yaml``)."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .activations import sharpenable_layers
from .export import compare, export_binary
from .plots import log_activation_figure

__all__ = ["whetstone_analysis"]


def _checkpoint_info(out_dir: Path | None) -> tuple[dict | None, int]:
    """``(sharpener state, epochs trained)`` from the run's ``last.pt`` (None, 0 if unavailable)."""
    path = None if out_dir is None else out_dir / "last.pt"
    if path is None or not path.is_file():
        return None, 0
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unreadable checkpoint only costs the "before" accuracy
        warnings.warn(f"whetstone_analysis: could not read {path} ({err}); accuracy_before_sharpening is skipped")
        return None, 0
    return ckpt.get("sharpener"), int(ckpt.get("state", {}).get("epoch", 0))


@torch.no_grad()
def whetstone_analysis(model: nn.Module, train_loader: Iterable | None = None, val_loader: Iterable | None = None,
                       test_loader: Iterable | None = None, device: str | torch.device = "cpu", writer=None,
                       out_dir: str | os.PathLike | None = None, dtype: str = "float64",
                       require_sharp: bool = False, save_net: bool = True) -> dict[str, Any]:
    """Export the sharpened model to threshold neurons, check it, and report the Whetstone metrics.

    Args:
        model: the trained Whetstone model (run with ``trainer.use_best=false`` so that it is the
            final, fully sharpened one).
        val_loader, test_loader: evaluation data (``train_loader`` is unused).
        device: where to evaluate. writer: TensorBoard ``SummaryWriter`` or None.
        out_dir: the run folder: ``last.pt`` there gives the accuracy before sharpening (recorded by
            the schedule), and ``binary_net.pt`` (the pickled :class:`BinaryNet`) is written there.
        dtype: ``"float64"`` (default) or ``"float32"``: precision of the export and the comparison.
        require_sharp: raise if some activation is not fully sharp; otherwise warn, and evaluate the
            model's fully sharp limit (all sharpness set to 1).
        save_net: write ``binary_net.pt`` to ``out_dir``.
    Returns:
        ``accuracy_sharpened`` (sharpened torch model, test set), ``accuracy_binary`` (exported net),
        ``agreement`` (same predictions, test set, in ``dtype``), ``agreement_float32``,
        ``fraction_active`` (mean fraction of hidden units spiking per test input),
        ``min_sharpness`` (at the end of training), and when the schedule recorded it,
        ``accuracy_before_sharpening`` (validation accuracy of the last epoch at sharpness 0),
        ``sharpening_started_epoch`` (1-based), ``val_accuracy_sharpened`` and ``sharpening_loss``
        (``accuracy_before_sharpening - val_accuracy_sharpened``, same validation set).
    """
    if test_loader is None:
        raise ValueError("whetstone_analysis needs a test_loader")
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}.get(str(dtype))
    if torch_dtype is None:
        raise ValueError(f"whetstone_analysis: dtype must be 'float64' or 'float32', got {dtype!r}")
    layers = sharpenable_layers(model)
    if not layers:
        raise ValueError(f"whetstone_analysis: {type(model).__name__} has no sharpenable layers; use a Whetstone model "
                         "(model=whetstone_mlp or whetstone_conv)")
    min_sharpness = min(a.get_sharpness() for a in layers)
    if min_sharpness < 1.0:
        msg = (f"the model is not fully sharpened (min sharpness {min_sharpness:.4f}); train longer, start sharpening "
               "earlier, and keep trainer.use_best=false so that the final weights are analysed")
        if require_sharp:
            raise ValueError(f"whetstone_analysis: {msg}")
        warnings.warn(f"whetstone_analysis: {msg}. Evaluating its fully sharp limit instead.")
        model = copy.deepcopy(model)
        for a in sharpenable_layers(model):
            a.set_sharpness(1.0)
    net = export_binary(model, dtype=torch_dtype)
    test = compare(model, net, test_loader, device, torch_dtype)
    result: dict[str, Any] = {
        "accuracy_sharpened": test["accuracy_model"], "accuracy_binary": test["accuracy_binary"],
        "agreement": test["agreement"], "fraction_active": test["fraction_active"],
        "min_sharpness": min_sharpness,
        "agreement_float32": compare(model, net, test_loader, device, torch.float32)["agreement"],
    }
    out_dir = Path(out_dir) if out_dir is not None else None
    state, epochs = _checkpoint_info(out_dir)
    before = (state or {}).get("before")
    if before and before.get("val_accuracy") is not None:
        result["accuracy_before_sharpening"] = before["val_accuracy"]
        result["sharpening_started_epoch"] = int(before["epoch"]) + 2  # 1-based epoch after the last soft one
        if val_loader is not None:
            result["val_accuracy_sharpened"] = compare(model, net, val_loader, device, torch_dtype)["accuracy_model"]
            result["sharpening_loss"] = result["accuracy_before_sharpening"] - result["val_accuracy_sharpened"]
    if writer is not None:
        log_activation_figure(writer, layers, epochs)
        for key, value in result.items():
            writer.add_scalar(f"whetstone/{key}", value, epochs)
    if save_net and out_dir is not None:
        torch.save(net.cpu(), out_dir / "binary_net.pt")
    return result
