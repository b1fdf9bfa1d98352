"""Tiny synthetic classification data shared by the training tests."""

import torch


def synthetic(n=96, seed=0):
    """``n`` 1x3x3 images of 3 classes (class = bright row), values in [0, 1]; returns ``(x, y)``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 3, 3, generator=g) * 0.3
    x[torch.arange(n), 0, y, :] += 0.7  # class = bright row
    return x.clamp(0, 1), y
