"""
# Converting your own CNN

Rate-based ANN-to-SNN conversion (Rueckauer et al. 2017) trains a conventional ReLU network and
maps it onto integrate-and-fire neurons: a ReLU's output becomes a firing rate, weights and biases
are rescaled layer by layer so that rates stay below one spike per step (robust percentile
normalization), and the accuracy approaches the ANN's as the simulation runs longer. This
tutorial converts a small CNN of its own, trained for a minute on 4,000 MNIST images.

The MNIST IDX files are read from `$SPIKEGRAD_DATA/mnist` (or downloaded into
`~/.cache/spikegrad/mnist` when that variable is unset). The full experiment:

```bash
python train.py experiment=convert_mnist
```
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

from spikegrad.conversion import ann_to_snn, simulate
from spikegrad.data import make_loaders

torch.manual_seed(0)

# %%
# ## A CNN and a minute of training
#
# Anything `torch.fx` can trace from the supported layers converts: Conv2d, Linear, ReLU,
# BatchNorm, average and max pooling, Flatten, Dropout, residual additions. An unsupported layer
# raises an error that names it and what to use instead.

train_loader, _, test_loader = make_loaders("mnist", subset=4000, val_size=1000, batch_size=64, seed=0)
cnn = nn.Sequential(
    nn.Conv2d(1, 8, 5), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),   # [B, 8, 12, 12]
    nn.Conv2d(8, 16, 5), nn.ReLU(), nn.AvgPool2d(2),                     # [B, 16, 4, 4]
    nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10),
)
optimizer = torch.optim.Adam(cnn.parameters(), lr=2e-3)
for epoch in range(3):
    cnn.train()
    for x, y in train_loader:
        loss = nn.functional.cross_entropy(cnn(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch + 1}: training loss {loss.item():.3f}")
cnn.eval()

# %%
# ## Conversion
#
# `ann_to_snn` traces the network, folds batch-norm into the convolution, records the
# activations of every ReLU on calibration images, scales each layer by the 99.9th percentile of
# its activations and builds the spiking network of `IF` neurons (reset by subtraction; the
# first layer gets the analog image as a constant current; max-pooling passes the spikes of the
# most active input so far; the output layer integrates its membrane). The CNN is left unchanged.

calibration = torch.cat([x for _, (x, _) in zip(range(16), train_loader)])  # 16 batches: 1,024 images
snn = ann_to_snn(cnn, calibration, percentile=99.9)
print(snn)

# %%
# ## Simulation
#
# `simulate` runs the SNN for `T` steps on labelled data and reports the accuracy after every
# step, the synaptic operations and the firing rates, next to the ANN on the same images (here the
# first 1,000 test images).

result = simulate(snn, test_loader, T=100, ann=cnn, max_inputs=1000)
print(f"ANN {100 * result.ann_accuracy:.1f}%, SNN after {result.T} steps {100 * result.accuracy:.1f}%")
print("firing rates (spikes per neuron and step):", {k: round(v, 3) for k, v in result.firing_rates.items()})
print(f"the SNN first comes within 1 point of the ANN after {result.steps_within(0.01)} steps")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
steps = torch.arange(1, result.T + 1)
axes[0].plot(steps, 100 * result.accuracy_by_step, label="SNN")
axes[0].axhline(100 * result.ann_accuracy, color="k", linestyle="--", linewidth=0.8, label="ANN")
axes[0].set_xlabel("simulation steps")
axes[0].set_ylabel("test accuracy (%)")
axes[0].set_ylim(0, 100)
axes[0].legend()
axes[1].plot(steps, result.synops_by_step.cumsum(0) / 1e6)
axes[1].axhline(result.ann_macs / 1e6, color="k", linestyle="--", linewidth=0.8, label="ANN MACs / input")
axes[1].set_xlabel("simulation steps")
axes[1].set_ylabel("synaptic operations / input (millions)")
axes[1].legend()
for ax in axes:
    ax.grid(alpha=0.3)
fig.tight_layout()
