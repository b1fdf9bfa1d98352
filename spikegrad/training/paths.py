"""Which computational path each neuron layer of a model takes, and why: recorded in ``metrics.json``
(``layer_paths``) so that a layer that fell back to the slow reference loop is visible.

A layer's path depends on its input (dtype, device), on whether gradients are on, and on the model
around it (a :class:`~spikegrad.models.SpikingMLP` may run all its layers as one event-driven
kernel without gradients), so the paths are read from one forward pass of a real batch: once as
training runs it (gradients on) and once as evaluation runs it (``torch.no_grad``, eval mode).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..kernels import explain_backend, explain_li_backend
from ..models import SpikingMLP, eval_mode
from ..neurons import ALIF, LI, LIF

__all__ = ["layer_paths"]


def _explain(module: nn.Module, x: Tensor, state) -> str:
    if isinstance(module, (LIF, ALIF)):
        p = module.params(x.dtype)
        backend, why = explain_backend(module.backend, x, p, module.surrogate, getattr(state, "neuron", state),
                                       module.w_rec)
    else:
        backend, why = explain_li_backend(module.backend, x, module.params(x.dtype))
    return f"{backend}: {why}"


def _trace(model: nn.Module, x_seq: Tensor, hooks: Callable[[bool], Callable[[], None]] | None,
           train: bool) -> dict[str, str]:
    """Run ``model(x_seq)`` with a pre-hook on every neuron layer (and the caller's ``hooks(train)``
    installed); ``{layer name: "path: reason"}``."""
    paths: dict[str, str] = {}
    names = {m: name for name, m in model.named_modules()}

    def hook(module, args):
        if args and isinstance(args[0], Tensor) and names[module] not in paths:
            paths[names[module]] = _explain(module, args[0], args[1] if len(args) > 1 else None)

    remove = hooks(train) if hooks is not None else None
    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, (LIF, ALIF, LI))]
    try:
        model(x_seq)
    finally:
        for h in handles:
            h.remove()
        if remove is not None:
            remove()
    return paths


def layer_paths(model: nn.Module, x_seq: Tensor,
                hooks: Callable[[bool], Callable[[], None]] | None = None) -> dict[str, dict[str, str]]:
    """The path of every neuron layer of ``model`` on the input ``x_seq [T, B, ...]``.

    ``hooks(train)``: installs what training (``train=True``) or evaluation installs on the model
    (the training loop's state watch) and returns a function that removes it, so that the paths
    are those taken with those hooks in place (a hook can send a layer to the reference scan).

    Returns:
        ``{"train": {layer: "path: reason"}, "eval": {...}}``; paths are those of
        :func:`~spikegrad.kernels.explain_backend` (``"native"``, ``"fused"``, ``"triton"``, ...,
        ``"torch"`` for the reference loop), and in ``"eval"`` a :class:`~spikegrad.models.SpikingMLP`
        that runs as one event-driven kernel is listed under its own name as ``"events: ..."``.
    """
    with torch.enable_grad():
        train = _trace(model, x_seq, hooks, True)
    evaluation: dict[str, str] = {}
    with torch.no_grad(), eval_mode(model):
        for name, m in model.named_modules():
            if isinstance(m, SpikingMLP) and m._event_constants(x_seq.dtype, (None,) * len(m.neurons)) is not None:
                evaluation[name or type(m).__name__] = "events: the whole MLP as one event-driven C kernel"
        if not evaluation:
            evaluation = _trace(model, x_seq, hooks, False)
    return {"train": train, "eval": evaluation}
