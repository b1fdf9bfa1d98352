"""spikegrad -> NIR file -> spikegrad on the MNIST test set: are spikes and readout bit for bit equal?

    python bench/nir_roundtrip.py                      # newest finished mnist16 run in outputs/
    python bench/nir_roundtrip.py --run outputs/DATE/TIME --data-root /path/to/mnist --limit 2000

Networks: the trained mnist16 model of the run (256 -> 246 LIF -> 10 LI, latency code, T=32), a
``SpikingConvNet`` and an IF network (seeded initializations, reset to zero). Each is written to a
``.nir`` file with ``to_nir`` (dt = 1 ms, "exact" and "euler"), read back with ``load_nir`` and run
on the same encoded test images as the original. A network trained with subtractive reset cannot
be exported as it is: it goes out with ``lossy_reset=True``, and the reference for the round trip
is then the same weights with ``reset="zero"`` (what the graph says); the script also reports what
that change costs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import glob
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from spikegrad.interop import load_nir, save_nir
from spikegrad.models import SpikingConvNet, SpikingMLP
from spikegrad.neurons import IF, LI, LIF


def newest_mnist16_run() -> Path:
    runs = [Path(p).parent for p in sorted(glob.glob("outputs/*/*/best.pt"))
            if "- experiment=mnist16" in (Path(p).parent / ".hydra" / "overrides.yaml").read_text().splitlines()]
    finished = [r for r in runs if (r / "metrics.json").exists()]  # a run still training rewrites best.pt
    runs = finished or runs
    if not runs:
        raise SystemExit("no outputs/*/*/best.pt of an mnist16 run; train one: python train.py experiment=mnist16")
    return runs[-1]


def load_run(run: str | None, data_root: str):
    """``(run folder, trained model in eval mode, test loader, encoder)`` of an mnist16 run."""
    run = Path(run) if run else newest_mnist16_run()
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.data.root, cfg.data.download = data_root, False
    torch.manual_seed(0)
    _, _, test_loader = instantiate(cfg.data).loaders(cfg.seed)
    model = instantiate(cfg.model)
    model.load_state_dict(torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"])
    return run, model.eval(), test_loader, instantiate(cfg.encoding)


class Tally:
    """Counts over the test set: samples whose readout / hidden spikes are bit-identical, accuracies."""

    def __init__(self):
        self.n = self.same_readout = self.same_spikes = self.right_ref = self.right_net = self.same_pred = 0
        self.spike_steps = 0.0

    def add(self, ref, net, y, readout_fn):
        b = y.shape[0]
        self.n += b
        self.same_readout += int((ref.readout == net.readout).flatten(2).all(-1).all(0).sum())
        same = torch.ones(b, dtype=torch.bool)
        for s, t in zip(ref.spikes, net.spikes, strict=True):
            same &= (s == t).flatten(2).all(-1).all(0)
            self.spike_steps += float(s.sum())
        self.same_spikes += int(same.sum())
        p_ref, p_net = readout_fn(ref.readout), readout_fn(net.readout)
        self.right_ref += int((p_ref == y).sum())
        self.right_net += int((p_net == y).sum())
        self.same_pred += int((p_ref == p_net).sum())

    def line(self, name: str) -> str:
        return (f"| {name} | {self.n} | {self.same_readout} | {self.same_spikes} | {self.same_pred} | "
                f"{100 * self.right_ref / self.n:.2f}% | {100 * self.right_net / self.n:.2f}% | "
                f"{self.spike_steps / self.n:.1f} |")


def max_over_time(readout: torch.Tensor) -> torch.Tensor:
    return readout.max(0).values.argmax(-1)  # [T, B, C] -> [B]


def zero_reset(model: torch.nn.Module) -> torch.nn.Module:
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, LIF) and m.reset == "subtract":
            m.reset = "zero"
    return model


def round_trip(model, folder: Path, name: str, discretization: str, lossy: bool):
    path = folder / f"{name}-{discretization}.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the lossy-reset warnings are expected here
        save_nir(model, path, dt=1e-3, discretization=discretization, lossy_reset=lossy)
        return load_nir(path).eval()


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="run folder with .hydra/config.yaml and best.pt")
    ap.add_argument("--data-root", default=os.environ.get("SPIKEGRAD_MNIST", "../shared/data/mnist"))
    ap.add_argument("--limit", type=int, default=None, help="only the first N test images")
    args = ap.parse_args()
    run, trained, test_loader, encoder = load_run(args.run, args.data_root)
    lif = functools.partial(LIF, tau_mem=8.0, tau_syn=4.0, reset="zero")
    conv = SpikingConvNet(in_shape=(1, 16, 16), channels=(16, 32), hidden=(128,), neuron=lif,
                          readout=functools.partial(LI, tau_mem=8.0, tau_syn=4.0), record_v=False).eval()
    if_net = SpikingMLP([256, 246, 10], neuron=functools.partial(IF, reset="zero"),
                        readout=functools.partial(LI, tau_mem=8.0, tau_syn=4.0), record_v=False).eval()
    lossy = any(isinstance(m, LIF) and m.reset == "subtract" for m in trained.modules())
    reference = {"mnist16": zero_reset(trained), "conv": conv, "if": if_net}
    with tempfile.TemporaryDirectory() as tmp:
        nets = {(k, d): round_trip(trained if k == "mnist16" else reference[k], Path(tmp), k, d,
                                   lossy and k == "mnist16") for k in reference for d in ("exact", "euler")}
    tallies = {key: Tally() for key in nets}
    cost = Tally()  # trained (subtract reset) against its zero-reset version
    seen, t0 = 0, time.perf_counter()
    for x, y in test_loader:
        if args.limit is not None and seen >= args.limit:
            break
        x_seq = encoder(x)                      # [T, B, 1, 16, 16]
        flat = x_seq.flatten(2)                  # [T, B, 256]
        outs = {"mnist16": reference["mnist16"](x_seq), "conv": conv(x_seq), "if": if_net(x_seq)}
        cost.add(trained(x_seq), outs["mnist16"], y, max_over_time)
        for (k, d), net in nets.items():
            tallies[k, d].add(outs[k], net(x_seq if k == "conv" else flat), y, max_over_time)
        seen += y.shape[0]
    print(f"run {run}; {seen} test images; {time.perf_counter() - t0:.0f} s\n")
    print("| network (contract) | images | readout bit-identical | hidden spikes bit-identical | same prediction | "
          "accuracy original | accuracy re-imported | hidden spikes / image |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"mnist16": "mnist16 trained" + (", reset as zero" if lossy else ""), "conv": "SpikingConvNet (init)",
             "if": "IF MLP 256-246-10 (init)"}
    for (k, d), t in tallies.items():
        print(t.line(f"{names[k]} ({d})"))
    if lossy:
        print("\nWhat the lossy export costs (trained subtract-reset model against the same weights resetting to "
              "zero):")
        print("| network | images | readout bit-identical | hidden spikes bit-identical | same prediction | accuracy "
              "subtract | accuracy zero | hidden spikes / image (subtract) |")
        print("|---|---|---|---|---|---|---|---|")
        print(cost.line("mnist16"))


if __name__ == "__main__":
    main()
