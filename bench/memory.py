"""Memory kept for backward over long sequences, with and without time-chunked recomputation.

Usage (from the repository root)::

    python bench/memory.py                                  # both parts, default sizes (a few minutes, 2 cores)
    python bench/memory.py --T 784 --B 256 --N 256 --chunk 28 56 --threads 2
    python bench/memory.py --only layers --layer-shape 200 32 256 --layer-chunk 20

Part 1, **layers**: for every neuron layer type (LIF, recurrent LIF, ALIF, recurrent ALIF, LI) and
backend, the bytes autograd keeps for backward per neuron-step, ``sum(bytes) / (T * B * N)``: the
distinct storages packed by ``torch.autograd.graph.saved_tensors_hooks`` during the forward pass
(each counted once, whole), plus tensors a custom autograd Function holds on its ``ctx`` outside
``save_for_backward`` (the PyTorch engine of the fused recurrent path keeps the indices of the spikes there), found by
walking the graph. Columns: with recomputation off, the part of that which is the layer's input
current or its spikes (the spikes are kept by the next layer anyway), and with recomputation on
(``set_recompute(layer, K)``: the chunks' inputs and the states every K steps; backward then holds
one chunk's internals at a time, about ``off * K / T``). Input ``N(0, 0.15^2)``, recurrent weights
the layers' initial ones times 0.1 (about 5 % spikes per step, as in ``bench/run.py``).

Part 2, **smnist step**: one training step of the ``smnist`` experiment (``conf/experiment/smnist.yaml``,
composed with Hydra: 80 inputs -> 256 recurrent ALIF -> 10 LI, last-step cross-entropy, the rate
regularizer, Adam, gradient clipping at 1.0) through ``spikegrad.training.train_epoch``, on random
level-crossing-like input spikes ``[B, T, 80]`` (5 % ones), recomputation off and, for each
``--chunk`` K, ``train_epoch(..., recompute=K)`` (what ``trainer.recompute=K`` runs: for this model,
which carries its state, the whole model in chunks, ``spikegrad.models.run_in_chunks``). Each configuration runs in a fresh process (glibc malloc as ``train.py`` sets it,
``--malloc default`` to keep the C library's settings) and reports:

* **peak RSS over the step**: the peak resident memory of the first training step above the
  resident memory before it (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``),
  i.e. every byte the step touched at its high point (tensors, allocator slack, BLAS buffers): an
  upper bound of the step's live tensors. PyTorch's CPU allocator has no ``max_memory_allocated``;
* **process peak**: the process's whole peak resident memory (``VmHWM``: Python, torch, the model,
  the input batch and the step), what "fits in N GB" means;
* **saved for backward**: the bytes autograd keeps between the forward and the backward pass of
  that step (counted as in part 1, over the whole model, loss and regularizer);
* **time per step**: the median of ``--steps`` steps after one warm-up, and its ratio to "off".

One more row (``--model-chunk K``, 0 to leave it out) runs ``recompute_chunks`` around
``model(x, state)`` by hand (the recipe in its docstring) with ``train_epoch``'s recomputation off:
only the input, the outputs (readout and spikes, which the regularizer reads) and the boundary
states stay whole. (Chunking each neuron layer instead, ``set_recompute``, keeps every layer's
input current whole: part 1 measures it per layer.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run import cpu_model, reset_peak_rss, rss_kib  # noqa: E402  (bench/run.py, next to this script)

LAYERS = [  # (row name, neuron class, recurrent or not, backends)
    ("LIF", "LIF", {}, ("torch", "native", "fused", "fused_lowmem")),
    ("LIF recurrent", "LIF", {"recurrent": True}, ("torch", "auto")),
    ("ALIF", "ALIF", {}, ("torch", "fused")),
    ("ALIF recurrent", "ALIF", {"recurrent": True}, ("torch", "fused")),
    ("LI", "LI", {}, ("torch", "native")),
]


# ------------------------------------------------------------------------------------ counting
def _storages(tensors, into: dict) -> None:
    import torch

    for t in tensors:
        if t.layout == torch.strided:
            st = t.untyped_storage()
            into[(st.data_ptr(), str(t.device))] = st.nbytes()


def _ctx_tensors(obj, out: list) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _ctx_tensors(o, out)


def held_on_ctx(roots) -> dict:
    """Storages held as attributes of custom autograd Functions' ``ctx`` in the graph behind ``roots``."""
    seen, todo, found = set(), [r for r in roots if r is not None], {}
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        tensors: list = []
        for k, v in getattr(node, "__dict__", {}).items():
            _ctx_tensors(v, tensors)
        _storages(tensors, found)
        todo.extend(n for n, _ in node.next_functions)
    return found


class PeakTensors:
    """Context manager: the peak bytes of tensor storages allocated while it is active and still alive.

    A ``TorchDispatchMode`` sees every operator (forward, backward and recomputation, the C kernels'
    outputs included: they are allocated by torch), records each new storage of an output (not one
    of the operator's inputs: views and in-place results are not allocations) and drops it when the
    storage is freed (a weak reference's callback). Memory an operator uses internally and frees
    before it returns (BLAS buffers) is not seen; the allocator's slack neither.
    """

    def __enter__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                ins = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs))
                       if isinstance(t, torch.Tensor) and t.layout == torch.strided}
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                        tracker._add(t.untyped_storage(), ins)
                return out

        self.live: dict = {}
        self.now = self.peak = 0
        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def _add(self, st, ins) -> None:
        import weakref
        from functools import partial

        key, n = st._cdata, st.nbytes()
        if key in ins or key in self.live or not n:
            return
        self.live[key] = weakref.ref(st, partial(self._freed, key, n))
        self.now += n
        self.peak = max(self.peak, self.now)

    def _freed(self, key, n, _ref) -> None:
        if self.live.pop(key, None) is not None:
            self.now -= n

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


class SavedBytes:
    """Context manager: the distinct storages autograd packs for backward while it is active."""

    def __enter__(self):
        import torch

        self.found: dict = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def _pack(self, t):
        _storages([t], self.found)
        return t

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


# ------------------------------------------------------------------------------------ part 1
def layer_rows(shape, chunk: int, threads: int) -> list[dict]:
    import torch

    from spikegrad import neurons
    from spikegrad.kernels import explain_backend, explain_li_backend

    torch.set_num_threads(threads)
    T, B, N = shape
    rows = []
    for name, cls, kw, backends in LAYERS:
        for backend in backends:
            torch.manual_seed(0)
            layer = getattr(neurons, cls)(backend=backend, **({"recurrent": N} if kw.get("recurrent") else {}))
            if getattr(layer, "w_rec", None) is not None:
                with torch.no_grad():
                    layer.w_rec.mul_(0.1)
            x = (0.15 * torch.randn(T, B, N)).requires_grad_()
            if cls == "LI":
                path = explain_li_backend(backend, x, layer.params(x.dtype))[0]
            else:
                path = explain_backend(backend, x, layer.params(x.dtype), layer.surrogate, None,
                                       getattr(layer, "w_rec", None))[0]
            row = {"layer": name, "backend": backend, "path": path}
            for k in (None, chunk):
                neurons.set_recompute(layer, k)
                x.grad = None
                with PeakTensors() as peak:
                    with SavedBytes() as saved:
                        out, state = layer(x)
                    ctx = held_on_ctx([out.grad_fn, *(getattr(t, "grad_fn", None) for t in state if t is not None)])
                    found = {**saved.found, **ctx}
                    key = "off" if k is None else "on"
                    row[key] = sum(found.values()) / x.numel()
                    row[key + "_ctx"] = sum(v for s, v in ctx.items() if s not in saved.found) / x.numel()
                    if k is None:
                        io = {(t.untyped_storage().data_ptr(), str(t.device)) for t in (x, out)}
                        row["io"] = sum(v for s, v in found.items() if s in io) / x.numel()
                        row["rate"] = float(out.detach().mean()) if cls != "LI" else None
                    out.sum().backward()
                    del out, state
                row[key + "_peak"] = peak.peak / x.numel()
            rows.append(row)
    return rows


def print_layers(rows, shape, chunk) -> None:
    T, B, N = shape
    print(f"\nbytes per neuron-step, float32, (T, B, N) = ({T}, {B}, {N}), K = {chunk}: kept for backward "
          "(off; of which the input current and the spikes; of which held on ctx; on), and the peak of tensor "
          "memory allocated during forward + backward of sum(spikes) (off, on)\n")
    print(f"| layer | backend | path run | kept, off | of which input / spikes | of which on ctx | kept, K = {chunk} "
          f"| peak, off | peak, K = {chunk} | spike rate |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rate = "" if r["rate"] is None else f"{r['rate']:.3f}"
        print(f"| {r['layer']} | {r['backend']} | {r['path']} | {r['off']:.2f} | {r['io']:.2f} | {r['off_ctx']:.2f} | "
              f"{r['on']:.2f} | {r['off_peak']:.2f} | {r['on_peak']:.2f} | {rate} |")


# ------------------------------------------------------------------------------------ part 2
def _whole_model(model, chunk: int):
    """``model`` run in chunks of ``chunk`` steps by ``recompute_chunks`` around ``model(x, state)``."""
    import torch

    from spikegrad.functional import recompute_chunks
    from spikegrad.models import SpikingOutput

    class WholeModelChunks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x_seq):
            def run(x, state):
                out = self.model(x, state)
                return (out.readout, out.spikes, out.v), out.state

            (readout, spikes, v), state = recompute_chunks(run, x_seq, None, chunk)
            return SpikingOutput(readout, spikes, v, state)

    return WholeModelChunks()


def smnist_child(T: int, B: int, N: int, chunk: int | None, steps: int, threads: int, malloc: str,
                 whole: bool = False) -> dict:
    if malloc == "retain":
        from spikegrad.malloc import retain_freed_memory

        retain_freed_memory()
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from spikegrad.training import train_epoch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smnist", f"T={T}", f"model.sizes=[80,{N},10]"])
    model = instantiate(cfg.model)
    loss_fn = instantiate(cfg.loss)
    regularizers = [instantiate(r) for r in (cfg.regularizer or {}).values()]
    encoder = instantiate(cfg.encoding)
    optimizer = instantiate(cfg.optim)(model.parameters())
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(B, T, 80, generator=g) < 0.05).float()  # [B, T, 80] input spikes
    y = torch.randint(0, 10, (B,), generator=g)
    batch = [(x, y)]
    kw = dict(encoder=encoder, regularizers=regularizers, progress=False, grad_clip=cfg.trainer.grad_clip,
              recompute=None if whole else chunk)
    if whole:
        model = _whole_model(model, chunk)

    base = reset_peak_rss()
    first = train_epoch(model, batch, optimizer, loss_fn, **kw)
    peak = rss_kib("VmHWM")
    with PeakTensors() as tensors, SavedBytes() as saved:  # the second step: Adam's state exists already
        train_epoch(model, batch, optimizer, loss_fn, **kw)
    times = []
    for k in range(steps + 1):
        t0 = time.perf_counter()
        train_epoch(model, batch, optimizer, loss_fn, **kw)
        if k:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
    with torch.no_grad():
        out = model(encoder(x))
    return {"chunk": chunk, "whole": whole, "peak_step_mib": (peak - base) / 1024,
            "process_peak_mib": rss_kib("VmHWM") / 1024, "saved_mib": sum(saved.found.values()) / 2**20,
            "peak_tensors_mib": tensors.peak / 2**20, "step_s": statistics.median(times), "times": times,
            "loss": first["train_loss"], "rate": float(out.spikes[0].mean()), "threads": threads}


def smnist_rows(args) -> list[dict]:
    rows = []
    configs = [(None, False), *((k, False) for k in args.chunk)]
    if args.model_chunk:
        configs.append((args.model_chunk, True))
    for chunk, whole in configs:
        cmd = [sys.executable, __file__, "--child", json.dumps([chunk, whole]), "--T", str(args.T), "--B", str(args.B),
               "--N", str(args.N), "--steps", str(args.steps), "--threads", str(args.threads), "--malloc", args.malloc]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        if p.returncode:
            raise RuntimeError(f"child {chunk} failed:\n{p.stderr[-3000:]}")
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"  recompute={chunk}{' (whole model)' if whole else ''}: {rows[-1]['step_s']:.2f} s/step",
              file=sys.stderr, flush=True)
    return rows


def print_smnist(rows, args) -> None:
    off = rows[0]
    print(f"\nsmnist training step, (T, B, N) = ({args.T}, {args.B}, {args.N}), one recurrent ALIF layer + LI "
          f"readout, {args.threads} threads, malloc {args.malloc}, {args.steps} timed steps\n")
    print("| recompute | saved for backward | peak tensor memory of the step | peak RSS over the step | process peak "
          "RSS | time per step | time ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        name = ("off" if r["chunk"] is None else f"recompute_chunks around the model, K = {r['chunk']}" if r["whole"]
                else f"train_epoch(recompute={r['chunk']})")
        print(f"| {name} | {r['saved_mib']:,.0f} MiB | {r['peak_tensors_mib']:,.0f} MiB | "
              f"{r['peak_step_mib']:,.0f} MiB | {r['process_peak_mib']:,.0f} MiB | {r['step_s']:.2f} s | "
              f"{r['step_s'] / off['step_s']:.2f} |")
    losses = {round(r["loss"], 6) for r in rows}
    first = ", ".join(f"{r['loss']:.6f}" for r in rows)
    print(f"\nfirst-step loss {first} (the same step in every row); "
          f"hidden spike rate {off['rate']:.3f} per step; step times (s): "
          + "; ".join(", ".join(f"{t:.2f}" for t in r["times"]) for r in rows))
    if len(losses) > 1:
        print("note: the losses differ beyond 1e-6")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=784)
    ap.add_argument("--B", type=int, default=256)
    ap.add_argument("--N", type=int, default=256)
    ap.add_argument("--chunk", type=int, nargs="+", default=[28, 56], help="steps per chunk (smnist step)")
    ap.add_argument("--model-chunk", type=int, default=56, help="steps per chunk of the whole-model row (0: none)")
    ap.add_argument("--steps", type=int, default=3, help="timed smnist steps per configuration")
    ap.add_argument("--layer-shape", type=int, nargs=3, default=[200, 32, 256], metavar=("T", "B", "N"))
    ap.add_argument("--layer-chunk", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--malloc", choices=("retain", "default"), default="retain")
    ap.add_argument("--only", choices=("layers", "smnist"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        chunk, whole = json.loads(args.child)
        print(json.dumps(smnist_child(args.T, args.B, args.N, chunk, args.steps, args.threads, args.malloc, whole)))
        return
    import torch

    print(f"torch {torch.__version__}, CPU {cpu_model()}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.only != "smnist":
        print_layers(layer_rows(tuple(args.layer_shape), args.layer_chunk, args.threads), args.layer_shape,
                     args.layer_chunk)
    if args.only != "layers":
        print_smnist(smnist_rows(args), args)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
