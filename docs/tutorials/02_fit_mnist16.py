"""
# Training mnist16 with fit

`python train.py experiment=mnist16` builds its objects from the Hydra configs and hands them to
`spikegrad.training.fit`. This tutorial builds the same objects in plain Python: 16x16
latency-coded MNIST, 256 -> 246 LIF -> 10 leaky integrators, max-over-time cross-entropy, the
activity regularizers of BrainScaleS-2. It trains on 3,000 images for three epochs, so the
accuracy is far from the full run's.

The MNIST IDX files are read from `$SPIKEGRAD_DATA/mnist` (or downloaded into
`~/.cache/spikegrad/mnist` when that variable is unset).
"""

from functools import partial

import matplotlib.pyplot as plt
import torch

import spikegrad as sg
from spikegrad.data import make_loaders
from spikegrad.losses import MaxOverTime
from spikegrad.plots import raster_figure, readout_figure
from spikegrad.regularizers import LowerRate, UpperRate
from spikegrad.training import fit

torch.manual_seed(0)

# %%
# ## Data
#
# `size=16` area-resizes the images once and caches them (in `$SPIKEGRAD_CACHE/resized`, never
# in the data folder). Batches are `(images [B, 1, 16, 16] in [0, 1], labels [B])`.

train_loader, val_loader, test_loader = make_loaders("mnist", size=16, subset=3000, val_size=1000, batch_size=100,
                                                     seed=0)
print(len(train_loader.dataset), "training,", len(val_loader.dataset), "validation,",
      len(test_loader.dataset), "test images")

# %%
# ## The objects that `conf/experiment/mnist16.yaml` describes
#
# The latency encoder fires every pixel brighter than 0.2 once, brighter pixels earlier
# (`[B, 1, 16, 16]` -> `[T=32, B, 1, 16, 16]`). `sparse_input=True` computes the first layer on the
# non-zeros of that code.

encoder = sg.LatencyEncoder(T=32, tau=8.0)
model = sg.SpikingMLP([256, 246, 10], neuron=partial(sg.LIF, tau_mem=8.0, tau_syn=4.0),
                      readout=partial(sg.LI, tau_mem=8.0, tau_syn=4.0), sparse_input=True, record_v=False)
regularizers = [UpperRate(weight=0.05, theta=0.5), LowerRate(weight=1.0, theta=0.01)]
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
print(model)

# %%
# ## Training
#
# `fit` validates after every epoch, keeps the best-validation weights and evaluates the test set
# with them (here the whole 10k test set). With `out_dir` it would also write `last.pt` / `best.pt`
# and resume from them; `progress=False` keeps the output to one line per epoch.

metrics = fit(model, train_loader, val_loader, test_loader, optimizer, MaxOverTime(), epochs=3, encoder=encoder,
              regularizers=regularizers, progress=False)
print(f"test accuracy {metrics['test_accuracy']:.4f}, {metrics['spikes_per_input']:.1f} hidden spikes per image")

fig, ax = plt.subplots(figsize=(5, 3))
epochs = [h["epoch"] for h in metrics["history"]]
ax.plot(epochs, [100 * h["train_accuracy"] for h in metrics["history"]], marker="o", label="train")
ax.plot(epochs, [100 * h["val_accuracy"] for h in metrics["history"]], marker="o", label="validation")
ax.set_xticks(epochs)
ax.set_xlabel("epoch")
ax.set_ylabel("accuracy (%)")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()

# %%
# ## One test image
#
# `spikegrad.plots` returns plain matplotlib figures (for TensorBoard); `plt.figure(fig)` shows
# one. The readout of the true class should reach the highest membrane.

images, labels = next(iter(test_loader))
model.eval()
with torch.no_grad():
    out = model(encoder(images[:1]))
plt.figure(raster_figure(out.spikes[0][:, 0], title="hidden LIF layer"))
plt.figure(readout_figure(out.readout[:, 0], label=int(labels[0]), title="test image 0"))

# %%
# ## Fast inference
#
# Without gradients a `SpikingMLP` of LIF layers and an LI readout runs as one event-driven
# kernel. Given one spike time per pixel (`LatencyEncoder.times`) instead of a dense `[T, B, 256]`
# tensor it gives the same predictions.

with torch.no_grad():
    dense = MaxOverTime().predict(model(encoder(images)))
    events = MaxOverTime().predict(model(encoder.times(images), record_spikes=False))
print("same predictions from spike times:", torch.equal(dense, events))
