"""
# A surrogate sweep

The spike is a step function; its derivative is zero almost everywhere. Surrogate-gradient
training replaces that derivative in the backward pass by a smooth bump of the distance to
threshold `x = v - v_th`, with one sharpness `slope` for every shape. Zenke & Vogels (2021) found
learning robust to the shape and sensitive to the scale. This tutorial draws the built-in shapes,
then sweeps shape x slope on a small Randman task, the miniature of

```bash
python train.py -m experiment=randman_robustness
```

which trains every combination for 40 epochs over three seeds and writes `summary.md` and
`objective.png` (accuracy against slope, one line per shape) into the sweep folder.
"""

import time
from functools import partial

import matplotlib.pyplot as plt
import torch

import spikegrad as sg
from spikegrad.losses import MaxOverTime
from spikegrad.surrogates import SURROGATES
from spikegrad.temporal import RandmanData
from spikegrad.training import evaluate, train_epoch

# %%
# ## The shapes
#
# Every registered surrogate has a pure `grad(x, slope)`, the derivative used in backward. The
# forward pass is always the exact step `1[x > 0]`.

x = torch.linspace(-1.5, 1.5, 601)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharex=True)
for name, cls in SURROGATES.items():
    axes[0].plot(x, cls.grad(x, torch.tensor(cls.default_slope)), label=f"{name} ({cls.default_slope:g})")
for slope in (1.0, 3.0, 10.0):
    axes[1].plot(x, SURROGATES["fast_sigmoid"].grad(x, torch.tensor(slope)), label=f"slope {slope:g}")
axes[0].set_title("built-in surrogates at their default slope")
axes[1].set_title("fast_sigmoid (SuperSpike) at three slopes")
for ax in axes:
    ax.set_xlabel("v - v_th (threshold units)")
    ax.legend(fontsize=7)
axes[0].set_ylabel("surrogate derivative")
fig.tight_layout()

# %%
# ## The sweep
#
# A small Randman task (5 classes, 20 input units, 50 steps) and a 20 -> 64 LIF -> 5 LI network,
# trained for 6 epochs per setting from the same initial weights. A surrogate is passed to the
# neurons by name and keyword (`make_surrogate`), as the Hydra group `surrogate=` does.

data = RandmanData(n_classes=5, n_units=20, n_steps=50, step_frac=0.5, alpha=3.0, samples_per_class=100,
                   batch_size=50)
train_loader, val_loader, test_loader = data.loaders(seed=0)
encoder = sg.encoding.TimeFirst()
loss_fn = MaxOverTime()


def run(shape: str, slope: float, epochs: int = 6) -> float:
    torch.manual_seed(0)
    surrogate = sg.make_surrogate(shape, slope=slope)
    model = sg.SpikingMLP([20, 64, 5], neuron=partial(sg.LIF, tau_mem=10.0, tau_syn=5.0, reset="zero",
                                                      surrogate=surrogate),
                          readout=partial(sg.LI, tau_mem=50.0, tau_syn=5.0), record_v=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(epochs):
        train_epoch(model, train_loader, optimizer, loss_fn, encoder=encoder, epoch=epoch, progress=False)
    return evaluate(model, val_loader, loss_fn, encoder=encoder)["accuracy"]


shapes, slopes = ("fast_sigmoid", "atan", "triangle"), (0.3, 3.0, 30.0)
t0 = time.perf_counter()
results = {(shape, slope): run(shape, slope) for shape in shapes for slope in slopes}
print(f"{len(results)} runs in {time.perf_counter() - t0:.1f} s")
for (shape, slope), acc in results.items():
    print(f"{shape:>12s}  slope {slope:5.1f}: validation accuracy {acc:.3f}")

# %%
# ## Accuracy against slope
#
# One seed and a few epochs: a sketch of the study, not a measurement. The full sweep above
# reports the mean and range over seeds.

fig, ax = plt.subplots(figsize=(5.5, 3.5))
for k, shape in enumerate(shapes):
    ax.plot(slopes, [100 * results[shape, s] for s in slopes], marker="o", color=f"C{k}", label=shape)
ax.set_xscale("log")
ax.set_xlabel("surrogate slope")
ax.set_ylabel("validation accuracy (%)")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
