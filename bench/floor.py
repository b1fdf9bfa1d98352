"""How close the LIF layer gets to its memory-traffic floor on CPU.

Usage (from the repository root)::

    python bench/floor.py --threads 2

Measures the machine's read bandwidth (``Tensor.sum`` of 256 MiB) and write bandwidth
(``Tensor.zero_`` of 256 MiB), then times the pieces of the ``lif`` workload of ``bench/run.py`` (one LIF layer,
``(T, B, N) = (100, 128, 512)``, forward and backward of ``sum(spikes)`` w.r.t. the input) on the
default CPU path (``native``): forward without gradients, forward keeping what backward needs,
``sum(spikes)``, backward, and the whole step. Each piece's floor is the time to read the bytes it
must read plus the time to write the bytes it must write, at those bandwidths:

* forward: read the input, write the spikes (8 bytes per neuron-step in float32);
* ``sum``: read the spikes (4 bytes);
* backward: read the input (z is recomputed from it) and write the input gradient (8 bytes); the
  gradient of ``sum`` is one value broadcast over time and neurons.

Each time is the median of ``--repeats`` calls after warm-up, in this process, with glibc's
malloc set to reuse freed memory as ``bench/run.py`` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spikegrad.malloc import retain_freed_memory  # noqa: E402  (before torch allocates)

retain_freed_memory()

import torch  # noqa: E402

import libs  # noqa: E402
from run import LIF_TAUS  # noqa: E402

SHAPE = (100, 128, 512)


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bandwidths(repeats: int) -> tuple[float, float]:
    """Bytes per second read by ``Tensor.sum`` and written by ``Tensor.zero_`` over 256 MiB (float32)."""
    buf = torch.rand(64 << 20)
    read_ms = median_ms(buf.sum, repeats)
    write_ms = median_ms(buf.zero_, repeats)
    return buf.numel() * 4 / (read_ms * 1e-3), buf.numel() * 4 / (write_ms * 1e-3)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per piece")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    read_bw, write_bw = bandwidths(args.repeats)
    T, B, N = SHAPE
    steps = T * B * N
    layer = libs.spikegrad_lif(*LIF_TAUS, "native")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(T, B, N, generator=g) * 0.3 + 0.04).requires_grad_(True)  # as bench/run.py

    def forward_nograd():
        with torch.no_grad():
            layer(x)

    kept = {}

    def forward():
        kept["s"] = layer(x)

    def total():
        kept["loss"] = kept["s"].sum()

    def backward():
        x.grad = None
        kept["loss"].backward()

    def step():
        x.grad = None
        layer(x).sum().backward()

    def forward_then(fn):  # times fn only; the forward before it is not timed
        times = []
        for k in range(args.repeats + 3):
            forward()
            total()
            t0 = time.perf_counter()
            fn()
            if k >= 3:
                times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    rows = [  # name, ms, bytes read and written per neuron-step
        ("forward, no gradients", median_ms(forward_nograd, args.repeats), 4, 4),
        ("forward, keeping what backward needs", median_ms(forward, args.repeats), 4, 4),
        ("sum(spikes)", forward_then(lambda: kept["s"].sum()), 4, 0),
        ("backward", forward_then(backward), 4, 4),
        ("whole step (forward, sum, backward)", median_ms(step, args.repeats), 12, 8),
    ]
    print(f"read {read_bw / 1e9:.1f} GB/s, write {write_bw / 1e9:.1f} GB/s ({args.threads} thread(s))")
    print(f"LIF layer {SHAPE}, {steps / 1e6:.2f} M neuron-steps, native path, {args.threads} thread(s)\n")
    print(f"{'piece':40s} {'ms':>7s} {'read B':>7s} {'write B':>8s} {'floor ms':>9s} {'x floor':>8s}")
    for name, ms, rd, wr in rows:
        floor = steps * (rd / read_bw + wr / write_bw) * 1e3
        print(f"{name:40s} {ms:7.2f} {rd:7d} {wr:8d} {floor:9.2f} {ms / floor:8.2f}")
    print("\n(read B, write B: bytes per neuron-step)")


if __name__ == "__main__":
    main()
