"""Sparse spike-event data sets: samples kept as event lists until a batch is built.

A temporal data set (SHD, SSC, Randman) holds, for each sample, a list of events ``(step, unit)``
already binned to integer time steps. :class:`EventSamples` stores them concatenated (one int64
tensor per field plus per-sample offsets), so 8,000 SHD samples of 700 channels over 100 steps take
the memory of their spikes, not of ``8000 x 100 x 700`` floats. :meth:`EventSamples.dense` builds a
batch ``[B, T, units]`` float32 of spike counts (several events of a unit in one step add up, as
they do after summing neighbouring channels).

Batches are batch-first, as every loader of the project yields them; ``encoding=sequence``
(:class:`spikegrad.encoding.TimeFirst`) turns them into the time-first ``[T, B, units]`` that
the models take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["EventSamples", "event_loaders"]


@dataclass
class EventSamples:
    """``N`` samples of binned spike events.

    Attributes:
        steps: ``[E]``, the time step of every event (``0 <= step < n_steps``); stored as int16
            (int32 for ``n_steps > 32767``), 2 bytes per event.
        units: ``[E]``, the input unit (channel) of every event (``0 <= unit < n_units``); int16 or int32.
        offsets: int64 ``[N + 1]``: sample ``k``'s events are ``steps[offsets[k]:offsets[k + 1]]``.
        labels: int64 ``[N]``, class indices.
        n_steps: ``T``, steps per sample. n_units: input units per step.
    """

    steps: Tensor
    units: Tensor
    offsets: Tensor
    labels: Tensor
    n_steps: int
    n_units: int

    def __post_init__(self) -> None:
        self.steps, self.units = _compact(self.steps, self.n_steps), _compact(self.units, self.n_units)
        n = self.labels.shape[0]
        if self.offsets.shape != (n + 1,) or int(self.offsets[0]) != 0 or int(self.offsets[-1]) != self.steps.numel():
            raise ValueError(f"EventSamples: offsets must be [N + 1] = [{n + 1}] from 0 to the number of events "
                             f"({self.steps.numel()}), got shape {tuple(self.offsets.shape)}")
        if self.steps.shape != self.units.shape:
            raise ValueError(f"EventSamples: steps and units must have one entry per event, got "
                             f"{tuple(self.steps.shape)} and {tuple(self.units.shape)}")
        if self.steps.numel() and (int(self.steps.min()) < 0 or int(self.steps.max()) >= self.n_steps):
            raise ValueError(f"EventSamples: event steps must lie in [0, {self.n_steps}), got "
                             f"[{int(self.steps.min())}, {int(self.steps.max())}]")
        if self.units.numel() and (int(self.units.min()) < 0 or int(self.units.max()) >= self.n_units):
            raise ValueError(f"EventSamples: event units must lie in [0, {self.n_units}), got "
                             f"[{int(self.units.min())}, {int(self.units.max())}]")

    def __len__(self) -> int:
        return self.labels.shape[0]

    @classmethod
    def from_lists(cls, steps: Sequence[Tensor], units: Sequence[Tensor], labels: Tensor, n_steps: int,
                   n_units: int) -> EventSamples:
        """From per-sample event tensors (``steps[k]``, ``units[k]``: int ``[E_k]``)."""
        counts = torch.tensor([len(s) for s in steps], dtype=torch.int64)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        cat = (lambda ts: torch.cat([torch.as_tensor(t, dtype=torch.int64) for t in ts])
               if len(ts) else torch.zeros(0, dtype=torch.int64))
        return cls(cat(steps), cat(units), offsets, torch.as_tensor(labels, dtype=torch.int64), int(n_steps),
                   int(n_units))

    def subset(self, index: Tensor | Sequence[int]) -> EventSamples:
        """The samples ``index`` (int ``[M]``), in that order, as a new :class:`EventSamples`."""
        index = torch.as_tensor(index, dtype=torch.int64)
        lo, hi = self.offsets[index], self.offsets[index + 1]
        counts = hi - lo
        sel = _ranges(lo, counts)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return EventSamples(self.steps[sel], self.units[sel], offsets, self.labels[index], self.n_steps, self.n_units)

    def dense(self, index: Tensor | Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Spike counts ``[M, n_steps, n_units]`` of the samples ``index`` (int ``[M]``)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        lo, hi = self.offsets[index], self.offsets[index + 1]
        counts = hi - lo
        sel = _ranges(lo, counts)
        row = torch.repeat_interleave(torch.arange(index.numel()), counts)
        out = torch.zeros(index.numel(), self.n_steps, self.n_units, dtype=dtype)
        flat = (row * self.n_steps + self.steps[sel].long()) * self.n_units + self.units[sel].long()
        out.view(-1).index_add_(0, flat, torch.ones(flat.numel(), dtype=dtype))
        return out

    def collate(self, index: list[int]) -> tuple[Tensor, Tensor]:
        """DataLoader ``collate_fn`` over sample indices: ``(x [B, T, units] float32, y [B] int64)``."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return self.dense(index), self.labels[index]


def _compact(t: Tensor, bound: int) -> Tensor:
    """``t`` as int16 when every value below ``bound`` fits (else int32): SSC holds ~1e8 events."""
    t = torch.as_tensor(t)
    if t.is_floating_point():
        raise TypeError(f"EventSamples: event steps and units must be integers, got {t.dtype}")
    return t.to(torch.int16 if bound <= 32767 else torch.int32)


def _ranges(lo: Tensor, counts: Tensor) -> Tensor:
    """The concatenation of ``arange(lo[k], lo[k] + counts[k])`` over ``k`` (int64)."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64)
    starts = torch.repeat_interleave(lo - torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]]), counts)
    return starts + torch.arange(total)


class _Indices(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> int:
        return k


def event_loaders(train: EventSamples, val: EventSamples | None, test: EventSamples, batch_size: int,
                  eval_batch_size: int, seed: int, drop_last: bool = False
                  ) -> tuple[DataLoader, DataLoader | None, DataLoader]:
    """Train / validation / test DataLoaders that build dense batches ``(x [B, T, units], y [B])``.

    The training loader reshuffles every epoch with a ``torch.Generator`` seeded by ``seed``
    (a resumed run restores it); validation and test keep their order.
    """
    gen = torch.Generator().manual_seed(seed)
    make = lambda s, b, shuffle: DataLoader(_Indices(len(s)), batch_size=b, shuffle=shuffle,  # noqa: E731
                                             collate_fn=s.collate, generator=gen if shuffle else None,
                                             drop_last=drop_last and shuffle)
    return (make(train, batch_size, True), None if val is None else make(val, eval_batch_size, False),
            make(test, eval_batch_size, False))
