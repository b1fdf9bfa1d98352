"""
# Training in the loop on a simulated chip

An analog neuromorphic chip does not compute what its software model says: every neuron's time
constants and threshold and every synapse's gain are off by a fixed, chip-specific amount
(fixed-pattern mismatch), weights are small integers, membranes are noisy and are read through
an 8-bit converter. Training *in the loop* (Cramer et al. 2022) runs the forward pass on the chip
and takes the gradient from the software model evaluated at the chip's recorded spikes, so the
weights learn to work on that chip.

`spikegrad.hardware.AnalogSubstrate` simulates such a chip; `InTheLoop` wraps a `SpikingMLP` for
training on it. This tutorial trains a small Randman network in software and in the loop at a
few mismatch levels and draws the accuracy on the chip against mismatch, the miniature of the
paper's Fig. 4B sweep:

```bash
python train.py -m experiment=mnist16_hil substrate.mismatch=0,0.1,0.2,0.3,0.5 model.train_on=substrate,software
```
"""

from functools import partial

import matplotlib.pyplot as plt
import torch

import spikegrad as sg
from spikegrad.hardware import AnalogSubstrate, InTheLoop
from spikegrad.hardware.analysis import mismatch_figure
from spikegrad.losses import MaxOverTime
from spikegrad.temporal import RandmanData
from spikegrad.training import evaluate, train_epoch

# %%
# ## Data, model and chip
#
# The chip settings are those of `conf/substrate/analog.yaml` (6-bit signed weights, membrane
# noise 0.02 per step, 8-bit membrane readout with per-neuron gain and offset spread and 1 LSB of
# readout noise); `mismatch` is the relative spread of `tau_mem`, `tau_syn`, the threshold, the
# leak potential and the synapse gains, drawn from the `chip` seed.

data = RandmanData(n_classes=5, n_units=20, n_steps=50, step_frac=0.5, alpha=3.0, samples_per_class=200,
                   batch_size=50)
train_loader, val_loader, test_loader = data.loaders(seed=0)
encoder = sg.encoding.TimeFirst()
loss_fn = MaxOverTime()


def new_model():
    torch.manual_seed(0)
    return sg.SpikingMLP([20, 64, 5], neuron=partial(sg.LIF, tau_mem=10.0, tau_syn=5.0, reset="zero",
                                                     surrogate=sg.make_surrogate("fast_sigmoid", slope=20.0)),
                         readout=partial(sg.LI, tau_mem=50.0, tau_syn=5.0), record_v=False)


def chip(mismatch: float, seed: int = 0) -> AnalogSubstrate:
    return AnalogSubstrate(mismatch=mismatch, chip=seed, weight_bits=6, noise=0.02, cadc_bits=8,
                           cadc_gain=0.02, cadc_offset=2.0, readout_noise=1.0)


def train(model, epochs: int = 8):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(epochs):
        train_epoch(model, train_loader, optimizer, loss_fn, encoder=encoder, epoch=epoch, progress=False)
    return model


def on_chip(model, mismatch: float, seed: int = 0) -> float:
    """Test accuracy of the model's weights run on a chip (evaluation mode: the chip only)."""
    hil = InTheLoop(model.model if isinstance(model, InTheLoop) else model, chip(mismatch, seed))
    return evaluate(hil.eval(), test_loader, loss_fn, encoder=encoder)["accuracy"]


# %%
# ## Weight transfer: train in software, run on the chip
#
# The software model's weights, unchanged, on chips of growing mismatch.

mismatches = [0.0, 0.25, 0.5]
software = train(new_model())
print(f"software model, in software: {evaluate(software, test_loader, loss_fn, encoder=encoder)['accuracy']:.3f}")
transfer = {m: [on_chip(software, m)] for m in mismatches}

# %%
# ## In the loop: train on the chip
#
# In training mode `InTheLoop` runs the batch on the chip and returns its readout, with the
# software graph's gradient at the chip's spikes (`sw + (hw - sw).detach()` per layer). In
# evaluation mode it runs only the chip.

in_loop = {}
for m in mismatches:
    hil = train(InTheLoop(new_model(), chip(m)))
    in_loop[m] = [on_chip(hil, m)]
    print(f"mismatch {m}: weight transfer {transfer[m][0]:.3f}, in the loop {in_loop[m][0]:.3f}, "
          f"same weights on another chip {on_chip(hil, m, seed=1):.3f}")

# %%
# ## Accuracy on the chip against mismatch
#
# `mismatch_figure` is the figure that `train.py` writes into a sweep folder
# (`accuracy_vs_mismatch.png`). One seed and a small task: a sketch of the effect, not a
# measurement.

plt.figure(mismatch_figure({"in the loop": in_loop, "weight transfer": transfer}))

# %%
# ## What the chip records
#
# `InTheLoop.observe` returns the chip's observables: the hidden spikes and the readout membrane
# as sampled by the 8-bit converter (note the quantization steps and the noise).

x, y = next(iter(test_loader))
hil = InTheLoop(software, chip(0.25))
obs = hil.observe(encoder(x[:1]))
with torch.no_grad():
    sw = software(encoder(x[:1]))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
axes[0].plot(sw.readout[:, 0])
axes[0].set_title("readout in software")
axes[1].plot(obs.readout[:, 0])
axes[1].set_title("readout on the chip (mismatch 0.25)")
for ax in axes:
    ax.set_xlabel("time step")
axes[0].set_ylabel("membrane (threshold units)")
fig.tight_layout()
