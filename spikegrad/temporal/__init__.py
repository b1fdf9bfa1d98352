"""Temporal tasks: spike-sequence data sets as batch-first loaders of ``(x [B, T, units], y [B])``;
``encoding=sequence`` (:class:`spikegrad.encoding.TimeFirst`) makes them time-first.

* :mod:`~spikegrad.temporal.shd`: the Spiking Heidelberg Digits and Spiking Speech Commands
  (Cramer et al. 2020), read from the published HDF5 files.
* :mod:`~spikegrad.temporal.smnist`: sequential and permuted sequential MNIST, one pixel per step.
* :mod:`~spikegrad.temporal.randman`: Zenke's random-manifold spike-timing task.
* :mod:`~spikegrad.temporal.events`: the sparse event storage they share.
"""

from .events import EventSamples, event_loaders
from .randman import RandmanData, make_randman
from .shd import SHDData, load_events, speaker_split
from .smnist import SMNISTData, level_crossings, pixel_permutation

__all__ = ["EventSamples", "event_loaders", "RandmanData", "make_randman", "SHDData", "load_events", "speaker_split",
           "SMNISTData", "level_crossings", "pixel_permutation"]
