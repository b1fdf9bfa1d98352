"""Guards of the training loop: signals turned into a stop at a safe point, and non-finite neuron states."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable

import torch
from torch import Tensor, nn

from ..models import SpikingOutput, eval_mode, layer_by_layer
from ..surrogates import Surrogate

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """The loss, a gradient or a neuron state became NaN or infinite; the run stopped and kept its last
    good checkpoint."""


class _Stop(Exception):
    """Internal: a stop was requested by a signal; raised at a safe point."""


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

    def __init__(self, model: nn.Module, root_only: bool = False):
        """``root_only``: hook only ``model`` and check the final states of the
        :class:`~spikegrad.models.SpikingOutput` it returns (evaluation: hooks on the neuron modules
        would make a :class:`~spikegrad.models.SpikingMLP` leave its event-driven inference path)."""
        self.names = {m: name or type(m).__name__ for name, m in model.named_modules()}
        self.flags: list[Tensor] = []
        self.record: list[tuple[str, nn.Module, Tensor | None, bool]] | None = None
        self.root_only = root_only
        # not on the surrogates: they return spikes, never a state, and a hook there sends every fused layer to
        # the reference scan (a fast path cannot call hooks it does not run)
        modules = [model] if root_only else [m for m in model.modules() if not isinstance(m, Surrogate)]
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module, args, output) -> None:
        if isinstance(output, SpikingOutput):  # the final state of every layer
            output = (output.readout, output.state)
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
        layers = [m.register_forward_hook(self._hook) for m in model.modules() if m is not model] if self.root_only else []
        try:
            with eval_mode(model), layer_by_layer(model):  # every neuron module runs (and is hooked)
                model(x_seq)
        except Exception as err:  # the diagnosis itself must not hide the original problem
            return f"(the diagnosis run failed: {err})"
        finally:
            for h in layers:
                h.remove()
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

