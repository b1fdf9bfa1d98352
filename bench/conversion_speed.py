"""Time the simulation of a converted SNN: the ``convert_mnist`` network on MNIST test images.

Trains the experiment's LeNet (``conf/model/lenet.yaml``) for a few hundred Adam steps (enough for
realistic firing rates; pass ``--checkpoint`` to use a trained one instead), converts it as the
experiment does (99.9th-percentile normalisation, reset by subtraction, analog input, membrane
readout) and times :func:`spikegrad.conversion.simulate` on ``--n-test`` images for ``--T`` steps
in batches of 1000 (the experiment's evaluation batch).

It uses only the public conversion API, so the same script times another checkout of spikegrad
(``PYTHONPATH=/path/to/other/checkout python bench/conversion_speed.py``) for a before/after ratio
on the same machine::

    python bench/conversion_speed.py --data-root DIR --threads 1 --n-test 10000 --out new.json

The output names the CPU and the cache sizes the kernels were sized for (``cache_sizes``; set
``SPIKEGRAD_CACHE_SIZES=l2=256K,l3=2M`` to run with the sizes of a smaller-cache CPU), and the
process CPU time next to the wall time (a busy machine shows as the difference).
"""

from __future__ import annotations

from spikegrad.malloc import retain_freed_memory

retain_freed_memory()  # as train.py: reuse freed tensor memory (before torch allocates)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import spikegrad  # noqa: E402
from spikegrad.conversion import LeNet, ann_to_snn, simulate  # noqa: E402
from spikegrad.data import load_split  # noqa: E402

from run import cpu_model  # noqa: E402  (bench/run.py, next to this script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=None, help="folder with the MNIST IDX files (default: the data module's)")
    ap.add_argument("--checkpoint", default=None, help="a train.py checkpoint of the LeNet (else train briefly)")
    ap.add_argument("--train-steps", type=int, default=300, help="Adam steps of batch 128 when no checkpoint")
    ap.add_argument("--n-test", type=int, default=10000, help="test images to simulate")
    ap.add_argument("--T", type=int, default=200, help="simulation steps")
    ap.add_argument("--batch", type=int, default=1000, help="images per simulated batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x, y = load_split("mnist", args.data_root, "train")
    xt, yt = load_split("mnist", args.data_root, "test")
    ann = LeNet(dropout=0.3)
    if args.checkpoint:
        ann.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["model"])
    else:
        opt = torch.optim.Adam(ann.parameters(), 1e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(args.train_steps):
            idx = torch.randint(0, len(x), (128,), generator=g)
            loss = F.cross_entropy(ann(x[idx]), y[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    ann.eval()
    snn = ann_to_snn(ann, [(x[:10000], y[:10000])], percentile=99.9)
    n = args.n_test
    batches = [(xt[k:k + args.batch], yt[k:k + args.batch]) for k in range(0, n, args.batch)]
    t0, c0 = time.perf_counter(), time.process_time()
    res = simulate(snn, batches, args.T)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    out = {"spikegrad": getattr(spikegrad, "__version__", "0.1.0"), "cpu": cpu_model(), "cache_sizes": _cache_sizes(),
           "threads": args.threads, "T": args.T, "n_test": res.n_inputs, "seconds": seconds, "cpu_seconds": cpu_seconds,
           "image_steps_per_second": res.n_inputs * args.T / seconds, "snn_accuracy": res.accuracy,
           "firing_rates": res.firing_rates}
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


def _cache_sizes() -> dict | None:
    """The cache sizes the kernels are sized for (None: a spikegrad that does not size them)."""
    try:
        from spikegrad.kernels.cpuinfo import cache_sizes
    except ImportError:
        return None
    return cache_sizes()._asdict()


if __name__ == "__main__":
    main()
