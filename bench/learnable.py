"""Learnable constants against fixed ones: one LIF layer, forward + backward, calls alternated in one process.

Usage (from the repository root)::

    python bench/learnable.py                        # (T, B, N) = (100, 128, 512), 2 threads
    python bench/learnable.py --threads 1 --shape 784 64 256 --calls 40

The ``lif`` rows of ``bench/run.py`` time each variant in its own process; on a shared 2-core
machine two processes of the same code differ by up to 30 %, more than the difference between
the variants. Here the layers (``bench/libs.spikegrad_lif``: zero reset, fast-sigmoid surrogate,
tau_mem 20 and tau_syn 5 steps, the C kernels) with fixed constants, ``learn_tau=True`` and
``learn_tau=True, learn_threshold=True`` take turns, call after call, on the same input
(``N(0.3, 0.5^2)``, backward of ``sum(spikes)``), so that a slow spell of the machine hits all
of them. Prints the median and the first quartile of each and their ratios to the fixed layer.
"""

from __future__ import annotations

from spikegrad.malloc import retain_freed_memory

retain_freed_memory()  # as train.py and bench/run.py's rows: before torch allocates

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from libs import spikegrad_lif  # noqa: E402  (bench/libs.py and bench/run.py, next to this script)
from run import cpu_model  # noqa: E402

VARIANTS = {"fixed constants": {}, "learn_tau": {"learn_tau": True},
            "learn_tau+v_th": {"learn_tau": True, "learn_threshold": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(100, 128, 512), metavar=("T", "B", "N"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=100, help="timed calls per variant (after 3 warm-up calls)")
    args = ap.parse_args()
    if args.calls < 4 or args.threads < 1 or min(args.shape) < 1:
        ap.error("--calls must be >= 4, --threads >= 1 and every size >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = (torch.randn(*args.shape) * 0.5 + 0.3).requires_grad_()
    layers = {name: spikegrad_lif(20.0, 5.0, "native", **kw) for name, kw in VARIANTS.items()}
    times = {name: [] for name in layers}
    for call in range(args.calls + 3):
        for name, layer in layers.items():
            x.grad = None
            t0 = time.perf_counter()
            layer(x).sum().backward()
            if call >= 3:
                times[name].append(time.perf_counter() - t0)
    load = os.getloadavg()
    print(f"LIF layer (T, B, N) = {tuple(args.shape)}, {args.threads} thread(s), {args.calls} calls each, "
          f"torch {torch.__version__}, {cpu_model()}, load {load[0]:.2f}")
    base = statistics.median(times["fixed constants"])
    print(f"{'variant':18s} {'median ms':>10s} {'q1 ms':>8s} {'x fixed':>8s}")
    for name, t in times.items():
        med, q1 = statistics.median(t), statistics.quantiles(t, n=4)[0]
        print(f"{name:18s} {med * 1e3:10.2f} {q1 * 1e3:8.2f} {med / base:8.2f}")


if __name__ == "__main__":
    main()
