"""Input-gradient error of the fused backends against the reference ``scan`` (LIF at (100, 128, 512)).

Usage: ``python bench/grad_error.py``; prints one line per (reset, surrogate).
"""

import torch

from spikegrad.neurons import LIF


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x0 = torch.randn(100, 128, 512) * 0.3 + 0.04
    for reset in ("subtract", "zero"):
        for sur in ("fast_sigmoid", "atan", "triangle"):
            g = {}
            for backend in ("torch", "native", "fused", "fused_lowmem"):
                x = x0.clone().requires_grad_()
                s, _ = LIF(tau_mem=20.0, tau_syn=5.0, reset=reset, surrogate=sur, backend=backend)(x)
                s.sum().backward()
                g[backend] = x.grad
            ref = g["torch"]
            cols = []
            for backend in ("native", "fused", "fused_lowmem"):
                d = g[backend] - ref
                cols.append(f"{backend}: rel L2 {(d.norm() / ref.norm()).item():.1e}, "
                            f"max/|g|max {(d.abs().max() / ref.abs().max()).item():.1e}")
            print(f"{reset:8s} {sur:12s} " + " | ".join(cols))


if __name__ == "__main__":
    main()
