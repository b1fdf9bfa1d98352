"""Accuracy claims over several seeds: mean and spread, for the configurations the tests no longer judge.

An accuracy after a short training run moves with the seed and with the CPU's floating-point paths (AVX-512 or
not, the BLAS kernel chosen), so the tests assert invariants (dtypes kept, predictions that agree, losses that
fall) and the accuracies live here. Each configuration is trained once per seed (model initialisation and data
order from the seed) and the script prints one line per seed, then mean, sample standard deviation, min and
max of each metric. Accuracies are fractions; ``*_minus_*`` rows are differences in percentage points.

Configurations (real MNIST; the claims the tests used to make in brackets):

- ``bf16``: the mnist16 model (256-246-10 LIF, LI readout, log-latency coding, T=32) trained 2 epochs on the
  60,000 images in fp32 and under bfloat16 autocast; test accuracy of each (fp32 > 0.90, |bf16 - fp32| <= 0.3).
- ``smoke``: a 256-128-10 LIF net after 30 Adam steps on 600 images, accuracy on 500 test images (> 0.45).
- ``conversion``: a LeNet trained on 5,000 images, converted with the 99.9th-percentile rule and with
  max-norm; SNN accuracy after 60 steps minus the ANN's (>= -1 point), and robust minus max-norm accuracy
  after 10 steps (>= 0: the robust rule is faster).
- ``sharpening``: a Whetstone 784-64 MLP (40 output units) trained and sharpened on 800 images; accuracy on
  400 images before sharpening (> 0.7) and of the sharpened net (> 0.6).

Usage::

    python bench/accuracy_spread.py --data-root DIR --seeds 5 [--configs bf16 conversion] [--out spread.json]

Run it with ``ATEN_CPU_CAPABILITY=default`` (or ``avx2``) as well to see the CPU's share of the spread.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikegrad.conversion import LeNet, ann_to_snn, evaluate_ann, simulate
from spikegrad.data import load_split, make_loaders
from spikegrad.encoding import LatencyEncoder
from spikegrad.losses import CrossEntropy, MaxOverTime
from spikegrad.models import SpikingMLP
from spikegrad.neurons import LI, LIF
from spikegrad.sharpening import SimpleSharpener, WhetstoneMLP, compare, export_binary
from spikegrad.training import fit, train_epoch


def bf16(root, seed: int) -> dict:
    train, _, test = make_loaders("mnist", root, download=False, size=16, val_size=0, batch_size=256,
                                  eval_batch_size=1000, seed=seed)
    acc = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(seed)
        model = SpikingMLP([256, 246, 10], neuron=functools.partial(LIF, tau_mem=8.0, tau_syn=4.0),
                           readout=functools.partial(LI, tau_mem=8.0, tau_syn=4.0), record_v=False, sparse_input=True)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        res = fit(model, train, None, test, opt, MaxOverTime(), epochs=2, progress=False, precision=precision,
                  encoder=LatencyEncoder(T=32, method="log", threshold=0.2, tau=8.0), log_samples=0)
        acc[precision] = res["test_accuracy"]
    return {"fp32": acc["fp32"], "bf16": acc["bf16"], "bf16_minus_fp32": 100 * (acc["bf16"] - acc["fp32"])}


def smoke(root, seed: int) -> dict:
    train, _, test = make_loaders("mnist", root, download=False, size=16, val_size=0, subset=600, batch_size=20,
                                  eval_batch_size=500, seed=seed)
    test = DataLoader(TensorDataset(*[t[:500] for t in test.dataset.tensors]), batch_size=500)
    torch.manual_seed(seed)
    model = SpikingMLP([256, 128, 10], neuron=functools.partial(LIF, tau_mem=8.0, tau_syn=4.0), weight_gain=2.0,
                       readout_gain=0.2)
    res = fit(model, train, None, test, torch.optim.Adam(model.parameters(), lr=5e-3), MaxOverTime(), epochs=1,
              encoder=LatencyEncoder(T=24, tau=6.0), progress=False)
    return {"test_accuracy": res["test_accuracy"]}


def conversion(root, seed: int) -> dict:
    x, y = load_split("mnist", root, "train", download=False)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:6000]
    x, y = x[order], y[order]
    torch.manual_seed(seed)
    model = LeNet(channels=(6, 12), hidden=64)
    train_epoch(model, DataLoader(TensorDataset(x[:5000], y[:5000]), batch_size=50),
                torch.optim.Adam(model.parameters(), 2e-3), CrossEntropy(), progress=False)
    test = [(x[5000:5500], y[5000:5500]), (x[5500:], y[5500:])]
    ann = evaluate_ann(model, test)
    robust = simulate(ann_to_snn(model, x[:1000]), test, 60)
    maxnorm = simulate(ann_to_snn(model, x[:1000], percentile=100.0), test, 60)
    return {"ann": ann, "snn_T60_minus_ann": 100 * (robust.accuracy - ann),
            "robust_minus_maxnorm_T10": 100 * float(robust.accuracy_by_step[9] - maxnorm.accuracy_by_step[9])}


def sharpening(root, seed: int) -> dict:
    x, y = load_split("mnist", root, "train", download=False)
    x_train, y_train, x_test, y_test = x[:800], y[:800], x[-400:], y[-400:]
    torch.manual_seed(seed)
    model = WhetstoneMLP([784, 64], n_classes=10, n_hot=4)
    sharpener = SimpleSharpener(model, start_epoch=2, duration=1.5, per_batch=True)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for epoch in range(7):
        model.train()
        perm = torch.randperm(800)
        for b in range(16):
            idx = perm[b * 50:(b + 1) * 50]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sharpener.on_batch_end(epoch, b, loss.item())
        model.eval()
        with torch.no_grad():
            acc = (model(x_test).argmax(-1) == y_test).float().mean().item()
        sharpener.on_epoch_end(epoch, {"train_loss": loss.item(), "val_loss": None, "val_accuracy": acc})
    res = compare(model, export_binary(model), DataLoader(TensorDataset(x_test, y_test), batch_size=100))
    return {"before_sharpening": sharpener.before["val_accuracy"], "sharpened": res["accuracy_binary"]}


CONFIGS = {"bf16": bf16, "smoke": smoke, "conversion": conversion, "sharpening": sharpening}


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"mean {statistics.fmean(values):8.4f}  sd {sd:7.4f}  min {min(values):8.4f}  max {max(values):8.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=None, help="folder with the MNIST IDX files (default: the data module's)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--out", default=None, help="write every per-seed value as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} thread(s), seeds 0..{args.seeds - 1}", flush=True)
    results: dict[str, list[dict]] = {}
    for name in args.configs:
        results[name] = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            row = CONFIGS[name](args.data_root, seed)
            results[name].append(row)
            print(f"{name:10s} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items())
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    for name, rows in results.items():
        for key in rows[0]:
            print(f"{name:10s} {key:26s} {summary([r[key] for r in rows])}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                       "threads": args.threads, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
