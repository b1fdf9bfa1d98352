"""
# Exporting to NIR and running the graph in snnTorch

[NIR](https://neuroir.org) describes a spiking network in continuous time, so that other
simulators and neuromorphic chips can run it. spikegrad's neurons are discrete (per step,
`i = ds i + x`, `v = dm v + i`), so an export needs a step `dt` (seconds) and a rule, the
*discretization*: `"exact"` for importers that integrate one step exactly, `"euler"` for the
forward-Euler importers of snnTorch, Norse and SpikingJelly. This tutorial trains a small
network, writes it to a `.nir` file, reads it back into spikegrad and runs the same graph in
snnTorch.

Needs `pip install -e ".[nir]"` (and `snntorch`, which is in the `docs` extra).
"""

import contextlib
import io
import tempfile
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import nir
import numpy as np
import snntorch
import torch
from snntorch.import_nir import import_from_nir

import spikegrad as sg
from spikegrad.interop import li_as_lif, load_nir, save_nir, to_nir
from spikegrad.losses import MaxOverTime
from spikegrad.models import layer_by_layer
from spikegrad.temporal import RandmanData
from spikegrad.training import evaluate, train_epoch

torch.manual_seed(0)

# %%
# ## A network that NIR can hold
#
# NIR neurons reset to `v_reset`, so the hidden layer resets to zero (`reset="zero"`); a
# subtractive reset is refused unless `lossy_reset=True`.

data = RandmanData(n_classes=5, n_units=20, n_steps=50, step_frac=0.5, alpha=3.0, samples_per_class=150,
                   batch_size=50)
train_loader, val_loader, test_loader = data.loaders(seed=0)
encoder = sg.encoding.TimeFirst()
loss_fn = MaxOverTime()
model = sg.SpikingMLP([20, 64, 5], neuron=partial(sg.LIF, tau_mem=10.0, tau_syn=5.0, reset="zero",
                                                  surrogate=sg.make_surrogate("fast_sigmoid", slope=20.0)),
                      readout=partial(sg.LI, tau_mem=50.0, tau_syn=5.0), record_v=False)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for epoch in range(8):
    train_epoch(model, train_loader, optimizer, loss_fn, encoder=encoder, epoch=epoch, progress=False)
print(f"test accuracy in spikegrad: {evaluate(model, test_loader, loss_fn, encoder=encoder)['accuracy']:.3f}")

# %%
# ## Export, write, read back
#
# The graph's metadata holds `dt`, the discretization and the reset mode, and `load_nir` reads
# them back: the round trip gives the same readout and the same hidden spikes, bit for bit, as the
# model run layer by layer. (Without gradients a `SpikingMLP` runs by default as one event-driven
# kernel, whose readout sums come in another order: equal to float rounding, not bit for bit;
# `layer_by_layer` selects the layer path.)

graph = to_nir(model, dt=1e-4, discretization="euler")  # snnTorch's importer assumes dt = 1e-4 s
for name, node in graph.nodes.items():
    print(f"{name:>10s}: {type(node).__name__}")
print("metadata:", graph.metadata)

x, y = next(iter(test_loader))
x_seq = encoder(x)  # [T=50, B, 20]
model.eval()
with torch.no_grad(), layer_by_layer(model):
    ref = model(x_seq)
with torch.no_grad():
    with tempfile.TemporaryDirectory() as tmp:
        save_nir(model, Path(tmp) / "model.nir", dt=1e-4, discretization="euler")
        back = load_nir(Path(tmp) / "model.nir")(x_seq)
print("round trip, readout identical:", torch.equal(back.readout, ref.readout),
      "| hidden spikes identical:", torch.equal(back.spikes[0], ref.spikes[0]))

# %%
# ## The graph in snnTorch
#
# snnTorch imports `CubaLIF` nodes as `Synaptic` neurons but no `CubaLI` node, so the readout
# goes to it as a `CubaLIF` that never fires (an infinite threshold: the same equations):
# `li_as_lif` rewrites the graph that way, and the readout's membrane is the `Synaptic`
# neuron's `mem`.


def run_snntorch(graph: nir.NIRGraph, x_seq: torch.Tensor):
    """Step snnTorch's module over x_seq [T, B, N]: (hidden spikes [T, B, H], readout membrane [T, B, C])."""
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints a note per graph
        net = import_from_nir(li_as_lif(graph))
    hidden, readout = [], []
    net.neurons_0.register_forward_hook(lambda m, args, out: hidden.append(out.detach().clone()))
    for m in net.modules():
        if isinstance(m, snntorch.SpikingNeuron):
            m.reset_hidden()
    with torch.no_grad():
        for x_t in x_seq:
            net(x_t)
            readout.append(net.neurons_1.mem.detach().clone())
    return torch.stack(hidden), torch.stack(readout)


hidden, readout = run_snntorch(graph, x_seq)
print("snnTorch, same hidden spikes:", torch.equal(hidden, ref.spikes[0]),
      f"| largest readout difference: {float((readout - ref.readout).abs().max()):.2e}")
print("same predictions:", torch.equal(loss_fn.predict(readout), loss_fn.predict(ref.readout)))

# %%
# ## The contract must match the importer
#
# With `discretization="exact"` the graph holds `tau = tau_steps * dt`, which a forward-Euler
# importer turns into the decay `1 - dt / tau` instead of `exp(-dt / tau)`. For the hidden layer
# (`tau_mem` = 10 steps) that is:

exact = to_nir(model, dt=1e-4, discretization="exact")
tau = float(exact.nodes["neurons.0"].tau_mem[0])
print(f"exact export: tau_mem = {tau:.1e} s; decay per step exp(-dt/tau) = {np.exp(-1e-4 / tau):.4f}, "
      f"read by forward Euler 1 - dt/tau = {1 - 1e-4 / tau:.4f}")
try:
    run_snntorch(exact, x_seq)
except AssertionError as e:  # snnTorch checks r = tau / dt, the Euler contract's gain
    print(f"snnTorch refuses the exact export: {e}")

# %%
# ## spikegrad and snnTorch side by side

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
t, n = ref.spikes[0][:, 0].nonzero(as_tuple=True)
axes[0].scatter(t, n, marker="|", s=25, color="k", label="spikegrad")
t, n = hidden[:, 0].nonzero(as_tuple=True)
axes[0].scatter(t, n, marker="_", s=25, color="C3", label="snnTorch")
axes[0].set_title("hidden spikes of one test sample")
axes[0].set_ylabel("neuron")
axes[0].legend(fontsize=8, loc="upper right")
for ax, r, title in ((axes[1], ref.readout, "readout in spikegrad"), (axes[2], readout, "readout in snnTorch")):
    ax.plot(r[:, 0])
    ax.set_title(title)
for ax in axes:
    ax.set_xlabel("time step")
fig.tight_layout()
