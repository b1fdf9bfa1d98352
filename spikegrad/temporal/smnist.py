"""Sequential and permuted sequential MNIST: one pixel per step, 784 steps of a 28x28 image.

The image is read row by row (PS-MNIST: in one fixed random order of the 784 positions) and fed
either as an input current (``input="current"``: ``x [B, 784, 1]``, the gray value in [0, 1]) or
through level-crossing input neurons as in Bellec et al. 2018 (LSNN, "Long short-term memory and
learning-to-learn in networks of spiking neurons"; ``input="spikes"``: ``x [B, 784, n_levels]``,
see :func:`level_crossings`).

Images stay in memory as uint8 ``[N, 784]`` (47 MB for the training set); each batch's input is
built in the DataLoader's ``collate_fn``, since the dense spike tensor of the whole set would take
15 GB. Batches are batch-first like every loader of :mod:`spikegrad.temporal`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from spikegrad.data import check_loader_args, check_name, is_int, load_split

__all__ = ["N_PIXELS", "SMNISTData", "SequenceCollate", "level_crossings", "level_thresholds", "pixel_permutation"]

SIDE = 28
N_PIXELS = SIDE * SIDE  # steps per sample
INPUTS = ("current", "spikes")


def level_thresholds(n_levels: int) -> Tensor:
    """Thresholds ``(j + 1/2) / n_levels``, ``j = 0 .. n_levels - 1``: evenly spaced in (0, 1), float32.

    They are never equal to a gray value ``k / 255`` (``255 (2j + 1)`` is odd, ``2 n_levels k`` even,
    and the gap of at least ``1 / (510 n_levels)`` is far above float32 rounding), so whether a pixel
    lies above or below a threshold does not depend on how either is rounded.
    """
    _check_levels(n_levels)
    return (torch.arange(n_levels, dtype=torch.float64) + 0.5).div(n_levels).to(torch.float32)


def level_crossings(images: Tensor, n_levels: int) -> Tensor:
    """Level-crossing spikes of pixel sequences (Bellec et al. 2018).

    Input neuron ``j`` spikes at step ``t`` when the gray value crosses threshold ``j``
    (:func:`level_thresholds`) between pixel ``t - 1`` and pixel ``t``, going up or down; the
    sequence starts from black (pixel ``-1`` is 0), so a first pixel above a threshold spikes at
    step 0.

    Args:
        images: gray values [B, L] in [0, 1], floating (L = 784 for MNIST).
        n_levels: input neurons (thresholds).
    Returns:
        spikes [B, L, n_levels], dtype of ``images``, values in {0, 1}.
    """
    if images.dim() != 2 or not images.is_floating_point():
        raise ValueError(f"level_crossings: images must be floating [B, L] gray values in [0, 1], got "
                         f"{images.dtype} with shape {tuple(images.shape)}")
    above = images.unsqueeze(-1) > level_thresholds(n_levels).to(images.device, images.dtype)  # [B, L, n]
    before = torch.cat([torch.zeros_like(above[:, :1]), above[:, :-1]], 1)                    # [B, L, n]
    return (above != before).to(images.dtype)


def pixel_permutation(seed: int) -> Tensor:
    """The PS-MNIST pixel order of ``seed``: int64 [784], a permutation of ``0 .. 783``
    (``torch.randperm`` with a ``torch.Generator`` seeded by ``seed``)."""
    return torch.randperm(N_PIXELS, generator=torch.Generator().manual_seed(seed))


class SequenceCollate:
    """DataLoader ``collate_fn`` over sample indices: builds one batch of pixel sequences.

    Args:
        images: uint8 [N, 784] gray values (0..255).
        labels: int64 [N].
        permutation: int64 [784] pixel order (step ``t`` shows pixel ``permutation[t]``), or None
            for row-by-row order.
        input: ``"current"`` or ``"spikes"`` (see :class:`SMNISTData`).
        n_levels: thresholds of the ``"spikes"`` input.
    Returns (on call with a list of ``B`` indices):
        ``(x [B, 784, 1 or n_levels] float32, y [B] int64)``.
    """

    def __init__(self, images: Tensor, labels: Tensor, permutation: Tensor | None, input: str, n_levels: int):
        self.images, self.labels, self.permutation = images, labels, permutation
        self.input, self.n_levels = input, n_levels

    def __call__(self, index: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(index, dtype=torch.int64)
        pixels = self.images[index].to(torch.float32) / 255  # [B, 784], the values load_split returns
        if self.permutation is not None:
            pixels = pixels[:, self.permutation]
        x = pixels.unsqueeze(-1) if self.input == "current" else level_crossings(pixels, self.n_levels)
        return x, self.labels[index]


@dataclass
class SMNISTData:
    """Sequential MNIST settings for Hydra (``_target_: spikegrad.temporal.smnist.SMNISTData``).

    ``.loaders(seed)`` splits and orders the data as :func:`spikegrad.data.make_loaders` does (a
    permutation of the training set drawn from ``seed`` holds out ``val_size`` samples; ``subset``
    keeps the first of the rest) and yields ``(x [B, 784, n_units] float32, y [B] int64)``.

    Attributes:
        name, root, download: the IDX data set, as in :func:`spikegrad.data.load_split`; its
            images must be 28x28.
        permute: PS-MNIST, the pixels in the fixed order :attr:`permutation`.
        permutation_seed: seed of that order (independent of the training seed).
        input: ``"current"`` (gray value as input current, one unit) or ``"spikes"``
            (:func:`level_crossings`, ``n_levels`` units).
        n_levels: level-crossing input neurons.
        val_size, subset, batch_size, eval_batch_size, drop_last: as in
            :func:`spikegrad.data.make_loaders`.
    """

    name: str = "mnist"
    root: str | None = None
    download: bool = True
    permute: bool = False
    permutation_seed: int = 0
    input: str = "spikes"
    n_levels: int = 80
    val_size: int = 5000
    subset: int | None = None
    batch_size: int = 256
    eval_batch_size: int = 1000
    drop_last: bool = False

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.input not in INPUTS:
            raise ValueError(f"SMNISTData: input must be one of {list(INPUTS)} (gray value as current, or "
                             f"level-crossing spikes), got {self.input!r}")
        _check_levels(self.n_levels)
        if not is_int(self.permutation_seed) or self.permutation_seed < 0:
            raise ValueError(f"SMNISTData: permutation_seed must be an int >= 0, got {self.permutation_seed!r}")
        check_loader_args(self.val_size, self.subset, self.batch_size, self.eval_batch_size, 0)

    @property
    def n_units(self) -> int:
        """Input units per step: 1 (``input="current"``) or ``n_levels``."""
        return 1 if self.input == "current" else self.n_levels

    @property
    def n_classes(self) -> int:
        return 10

    @property
    def n_steps(self) -> int:
        """Steps per sample (784, one pixel each)."""
        return N_PIXELS

    @property
    def permutation(self) -> Tensor | None:
        """int64 [784] pixel order when ``permute`` (step ``t`` shows pixel ``permutation[t]``), else None."""
        return pixel_permutation(self.permutation_seed) if self.permute else None

    def save(self, out_dir: str | os.PathLike) -> Path | None:
        """Writes the pixel order to ``out_dir/permutation.json`` (``{"permutation_seed": s,
        "permutation": [784 ints]}``) when ``permute`` is on, so a run folder records it.

        Returns:
            the file written, or None when ``permute`` is off (nothing to record).
        """
        if not self.permute:
            return None
        path = Path(out_dir) / "permutation.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"permutation_seed": self.permutation_seed,
                                    "permutation": self.permutation.tolist()}))
        return path

    def loaders(self, seed: int = 0) -> tuple[DataLoader, DataLoader | None, DataLoader]:
        """(train, val or None when ``val_size == 0``, test) loaders of pixel sequences."""
        check_loader_args(self.val_size, self.subset, self.batch_size, self.eval_batch_size, seed)
        x, y = self._split("train")
        x_test, y_test = self._split("test")
        n = len(y)
        if self.val_size >= n:
            raise ValueError(f"SMNISTData: val_size={self.val_size} must be smaller than the {n} training samples")
        if self.subset is not None and self.subset > n - self.val_size:
            raise ValueError(f"SMNISTData: subset={self.subset} exceeds the {n - self.val_size} training samples "
                             f"left after val_size={self.val_size}; lower subset or val_size (None: all)")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = perm[:self.val_size], perm[self.val_size:][:self.subset]
        gen = torch.Generator().manual_seed(seed)
        train = self._loader(x[train_idx], y[train_idx], self.batch_size, gen)
        val = self._loader(x[val_idx], y[val_idx], self.eval_batch_size, None) if self.val_size else None
        return train, val, self._loader(x_test, y_test, self.eval_batch_size, None)

    def _split(self, split: str) -> tuple[Tensor, Tensor]:
        """uint8 images [N, 784] and int64 labels [N] of one split."""
        images, labels = load_split(self.name, self.root, split, None, self.download)
        if images.shape[1:] != (SIDE, SIDE):
            raise ValueError(f"SMNISTData: {self.name!r} {split} images are {tuple(images.shape[1:])} pixels; "
                             f"sequential MNIST needs {SIDE}x{SIDE} images (784 steps)")
        return (images * 255).round_().to(torch.uint8).reshape(-1, N_PIXELS), labels  # exact: load_split gives k/255

    def _loader(self, images: Tensor, labels: Tensor, batch_size: int, generator: torch.Generator | None) -> DataLoader:
        collate = SequenceCollate(images, labels, self.permutation, self.input, self.n_levels)
        shuffle = generator is not None
        return DataLoader(range(len(labels)), batch_size=batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=collate, drop_last=self.drop_last and shuffle)


def _check_levels(n_levels: int) -> None:
    if not is_int(n_levels) or n_levels < 1:
        raise ValueError(f"n_levels must be an int >= 1 (level-crossing input neurons), got {n_levels!r}")
