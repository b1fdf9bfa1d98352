"""
# Neurons in your own PyTorch model

spikegrad's neurons are ordinary `nn.Module`s. This tutorial drives one LIF layer by hand, looks
at its membrane, then builds a small network of its own from `SeqWise(nn.Linear)`, `LIF` and `LI`
and trains it with a plain PyTorch loop on Randman, a synthetic spike-timing task.

Conventions: tensors are time-first, `[T, B, ...]`; time is counted in steps (`tau_mem=10.0` is a
decay of `exp(-1/10)` per step); voltages are in threshold units (`v_th=1`).
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import spikegrad as sg
from spikegrad.losses import MaxOverTime
from spikegrad.temporal import RandmanData

torch.manual_seed(0)

# %%
# ## One LIF layer
#
# Forty steps of a noisy input current into three neurons. `record=True` returns the state of
# every step, so `states.v` is the membrane trace `[T, B, N]` (after the reset).

lif = sg.LIF(tau_mem=10.0, tau_syn=3.0)
x = 0.12 + 0.1 * torch.randn(40, 1, 3)  # [T=40, B=1, N=3] input current per step
spikes, states = lif(x, record=True)
print(lif)
print("spikes per neuron:", spikes.sum(0).flatten().tolist())

fig, ax = plt.subplots(figsize=(7, 3))
for n in range(3):
    ax.plot(states.v[:, 0, n], color=f"C{n}", label=f"neuron {n}")
    t = spikes[:, 0, n].nonzero().flatten()
    ax.plot(t, torch.full_like(t, 1.15, dtype=torch.float32), "|", color=f"C{n}", markersize=12)
ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
ax.set_xlabel("time step")
ax.set_ylabel("membrane (threshold units)")
ax.set_title("LIF membranes, reset by subtraction; ticks mark the spikes")
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()

# %%
# ## State is passed in and returned
#
# There is no `reset_net()`: a call with `state=None` starts at rest, and passing the returned
# state continues the run. Two halves give the same spikes as one run, and `step` is the
# single-step form of the same maths.

first, state = lif(x[:20])
second, _ = lif(x[20:], state)
print("two halves == one run:", torch.equal(torch.cat([first, second]), spikes))

s_t, st = lif.step(x[0])  # one step: [B, N] -> spikes [B, N], LIFState
print("state fields:", st._fields)

# %%
# ## A network of your own
#
# Stateless layers run over time by folding `T` into the batch (`SeqWise`); every neuron layer
# takes and returns its own state. The readout is a non-spiking leaky integrator `LI`, whose
# membrane trace is the output.


class SmallSNN(nn.Module):
    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.fc1 = sg.SeqWise(nn.Linear(n_in, n_hidden, bias=False))
        self.lif = sg.LIF(tau_mem=10.0, tau_syn=5.0, reset="zero", surrogate=sg.make_surrogate("fast_sigmoid", slope=20.0))
        self.fc2 = sg.SeqWise(nn.Linear(n_hidden, n_out, bias=False))
        self.readout = sg.LI(tau_mem=50.0, tau_syn=5.0)
        nn.init.normal_(self.fc1.module.weight, std=2.0 / n_in**0.5)
        nn.init.normal_(self.fc2.module.weight, std=0.2 / n_hidden**0.5)

    def forward(self, x_seq):  # [T, B, n_in] -> readout [T, B, n_out], hidden spikes [T, B, n_hidden]
        spikes, _ = self.lif(self.fc1(x_seq))
        v, _ = self.readout(self.fc2(spikes))
        return v, spikes


# %%
# ## Data: Randman
#
# Randman (Zenke & Vogels 2021) is generated on the spot: every input unit fires exactly once
# per sample, and the class is carried only by the spike times. The loaders yield batch-first
# `(x [B, T, units], y [B])`; `TimeFirst` makes them time-first.

data = RandmanData(n_classes=5, n_units=20, n_steps=50, step_frac=0.5, alpha=3.0, samples_per_class=150,
                   batch_size=50)
train_loader, val_loader, test_loader = data.loaders(seed=0)
to_time_first = sg.encoding.TimeFirst()
x, y = next(iter(train_loader))
print("batch:", tuple(x.shape), "->", tuple(to_time_first(x).shape))

# %%
# ## Training with a plain loop
#
# The loss is cross-entropy on the maximum over time of each readout membrane
# (`MaxOverTime`, as on BrainScaleS-2); the surrogate derivative of the spike function carries
# the gradient through the spikes.

model = SmallSNN(20, 64, 5)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
loss_fn = MaxOverTime()


def accuracy(loader):
    with torch.no_grad():
        correct = sum(int((loss_fn.predict(model(to_time_first(x))[0]) == y).sum()) for x, y in loader)
    return correct / len(loader.dataset)


history = []
for epoch in range(12):
    for x, y in train_loader:
        readout, _ = model(to_time_first(x))
        loss = loss_fn(readout, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    history.append(accuracy(val_loader))
    print(f"epoch {epoch + 1:2d}: loss {loss.item():.3f}, validation accuracy {history[-1]:.3f}")
print(f"test accuracy {accuracy(test_loader):.3f}")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(range(1, len(history) + 1), [100 * a for a in history], marker="o")
ax.set_xlabel("epoch")
ax.set_ylabel("validation accuracy (%)")
ax.grid(alpha=0.3)
fig.tight_layout()

# %%
# ## Input and hidden spikes of one test sample

x, y = next(iter(test_loader))
with torch.no_grad():
    readout, hidden = model(to_time_first(x))
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, s, title in ((axes[0], to_time_first(x)[:, 0], "input"), (axes[1], hidden[:, 0], "hidden LIF")):
    t, n = s.nonzero(as_tuple=True)
    ax.scatter(t, n, marker="|", s=20, color="k")
    ax.set_xlim(0, s.shape[0])
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    ax.set_title(f"{title} ({int(s.sum())} spikes)")
axes[2].plot(readout[:, 0])
axes[2].set_xlabel("time step")
axes[2].set_title(f"readout, label {int(y[0])}")
fig.tight_layout()

