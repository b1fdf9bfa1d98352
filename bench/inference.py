"""Inference speed of a trained mnist16 model on the 10,000 MNIST test images, encoding included.

Three paths of the same model, each the whole test set in batches of ``--batch``, best of
``--repeats``:

* ``layers``: layer by layer (``SpikingMLP(inference="layers")``): sparse first layer, C LIF
  kernel, dense readout ``Linear``, C LI kernel; dense latency-coded input ``[T, B, 256]``;
* ``auto, dense input``: the default model on the same dense input (no gradients: one
  event-driven kernel, :func:`spikegrad.kernels.events.mlp_forward`);
* ``auto, spike times``: the default model on ``LatencyEncoder.times(images)`` (one spike time per
  pixel, no dense input tensor) with ``record_spikes=False``.

Predictions are ``MaxOverTime().predict`` (argmax of the readout's maximum over time) and must be
identical to the ``layers`` path's for every image. The model comes from a ``train.py`` run folder
(``--run outputs/DATE/TIME``: its ``.hydra/config.yaml`` and ``best.pt``); without one the script
trains the ``mnist16`` model for ``--train-steps`` Adam steps::

    python train.py experiment=mnist16
    python bench/inference.py --run outputs/DATE/TIME --data-root DIR --threads 2
"""

from __future__ import annotations

from spikegrad.malloc import retain_freed_memory

retain_freed_memory()  # as train.py

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from spikegrad.data import load_split  # noqa: E402
from spikegrad.encoding import LatencyEncoder  # noqa: E402
from spikegrad.losses import MaxOverTime  # noqa: E402
from spikegrad.models import SpikingMLP  # noqa: E402
from spikegrad.neurons import LI, LIF  # noqa: E402


def from_run(run: str):
    """(model, encoder) of a train.py run folder."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(os.path.join(run, ".hydra", "config.yaml"))
    model, enc = instantiate(cfg.model), instantiate(cfg.encoding)
    ckpt = torch.load(os.path.join(run, "best.pt"), map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["model"])
    return model, enc


def trained_briefly(x, y, steps: int):
    """The mnist16 model (as experiment=mnist16 builds it), trained for ``steps`` Adam steps."""
    model = SpikingMLP([256, 246, 10], functools.partial(LIF, tau_mem=8.0, tau_syn=4.0),
                       functools.partial(LI, tau_mem=8.0, tau_syn=4.0), record_v=False, sparse_input=True)
    enc = LatencyEncoder(32, "log", 0.2, 8.0)
    opt, loss = torch.optim.Adam(model.parameters(), 2e-3), MaxOverTime()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,), generator=g)
        out = model(enc(x[idx]))
        opt.zero_grad()
        loss(out, y[idx]).backward()
        opt.step()
    return model, enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="a train.py output folder of experiment=mnist16 (else train briefly)")
    ap.add_argument("--data-root", default=None, help="folder with the MNIST IDX files (default: the data module's)")
    ap.add_argument("--train-steps", type=int, default=400, help="Adam steps of batch 256 when no --run")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    xt, yt = load_split("mnist", args.data_root, "test", size=16)
    if args.run:
        model, enc = from_run(args.run)
    else:
        x, y = load_split("mnist", args.data_root, "train", size=16)
        model, enc = trained_briefly(x, y.long(), args.train_steps)
    model.eval()
    loss = MaxOverTime()
    batches = [xt[k:k + args.batch] for k in range(0, len(xt), args.batch)]

    def predict(path: str) -> torch.Tensor:
        model.inference = "layers" if path == "layers" else "auto"
        with torch.no_grad():
            if path == "auto, spike times":
                return torch.cat([loss.predict(model(enc.times(b), record_spikes=False)) for b in batches])
            return torch.cat([loss.predict(model(enc(b))) for b in batches])

    rows, reference = [], None
    for path in ("layers", "auto, dense input", "auto, spike times"):
        pred = predict(path)  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pred = predict(path)
            best = min(best, time.perf_counter() - t0)
        reference = pred if reference is None else reference
        rows.append({"path": path, "images_per_second": len(xt) / best, "accuracy": float((pred == yt).float().mean()),
                     "identical_predictions": bool(torch.equal(pred, reference))})
    load = os.getloadavg()[0]
    print(f"mnist16 inference, {len(xt)} test images, batch {args.batch}, {args.threads} threads, T={enc.T}, "
          f"load {load:.2f}")
    print("| path | images/s | accuracy | predictions as `layers` |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['images_per_second']:,.0f} | {100 * r['accuracy']:.2f}% | "
              f"{'identical' if r['identical_predictions'] else 'DIFFERENT'} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "batch": args.batch, "load": load, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
