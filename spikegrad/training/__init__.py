"""Config-free training: :func:`train_epoch`, :func:`evaluate` and :func:`fit`.

``fit`` takes built objects (model, loaders, optimizer, loss, encoder, regularizers, sharpener) and
returns a metrics dict. Its promises:

- **Checkpoints**: ``last.pt`` after every epoch, ``best.pt`` when the validation accuracy improves,
  written atomically (a failed write leaves the previous file and no temporary file). A checkpoint
  is never written from non-finite weights.
- **Interrupts**: Ctrl-C (SIGINT) and SIGTERM (what cluster schedulers send before killing a job)
  are honoured at the next safe point (between batches, during validation, test or a checkpoint
  write): the run saves ``interrupted.pt`` and prints how to resume. A second signal stops at once.
- **Exact resume**: ``resume=PATH`` with unchanged settings continues the run exactly: on CPU the
  final weights equal an uninterrupted run's bit for bit, for every encoder, sharpener, shuffling
  and augmentation (all random generators and the epoch's partial sums are in the checkpoint).
- **Changed settings on resume**: a larger ``epochs`` (an extended run with a new horizon) or other
  optimizer / scheduler hyperparameters apply from the resume point: the scheduler is rebuilt from
  the new settings and fast-forwarded over the completed epochs. ``fit`` logs what it restored and
  what was overridden; a change that cannot apply (another optimizer type, fewer epochs than
  completed, a mid-epoch position in an epoch of another number of batches) is a
  :class:`ResumeError`, another model architecture a ``ValueError``.
- **Non-finite values**: a NaN/Inf loss or gradient, or a neuron state that became non-finite,
  stops the run with :class:`NonFiniteLossError` naming the epoch, batch and (for states) the
  layer and time step; the last good checkpoint is kept.
- ``use_best``: the test set is evaluated with the best-validation weights, kept in memory and in
  ``last.pt``, so the promise holds without ``out_dir`` and across resumes.

- **Several processes**: inside a ``torch.distributed`` process group (``torchrun``), with loaders from
  :func:`~spikegrad.training.distributed.shard_loaders`, ``fit`` trains data-parallel with DDP and keeps
  these promises (exact resume with the same number of processes); see
  :mod:`spikegrad.training.distributed` for what the batch, metrics and regularizers mean there.

Messages go to the ``spikegrad.training`` logger (to stdout when logging is not configured).
"""

from .checkpoints import CheckpointWriteError, ResumeError, load_checkpoint, save_checkpoint
from .guards import NonFiniteLossError
from .loop import evaluate, fit, resolve_device, train_epoch

__all__ = ["NonFiniteLossError", "ResumeError", "CheckpointWriteError", "resolve_device", "train_epoch", "evaluate",
           "fit", "save_checkpoint", "load_checkpoint"]
