"""Temporal tasks: spike-sequence data sets (SHD, SSC, sequential MNIST, Randman) as batch-first
loaders of ``(x [B, T, units], y [B])``; ``encoding=sequence`` makes them time-first."""

from .events import EventSamples, event_loaders

__all__ = ["EventSamples", "event_loaders"]
