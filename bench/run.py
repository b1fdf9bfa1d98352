"""Benchmark spikegrad's LIF backends against snnTorch, SpikingJelly and norse on the same workloads.

Usage (from the repository root)::

    python bench/run.py                      # CPU workloads, plus GPU ones if CUDA is available
    python bench/run.py --device cpu --out bench/results-cpu.json
    python bench/run.py --only lif --quick   # fewer repeats

Workloads (settings matched across libraries, see ``bench/libs.py``):

* ``lif``: one LIF layer, forward + backward of ``sum(spikes)`` w.r.t. the input current,
  ``(T, B, N) = (100, 128, 512)`` on CPU and ``(100, 128, 4096)`` on GPU;
* ``linear+lif``: ``Linear(N, N) + LIF`` on input spikes, ``(500, 16, 16384)`` (GPU);
* ``mnist16 train``: one Adam step of 256 -> 246 LIF -> 10 LI, ``T = 100``, batch 256, latency-coded
  input, max-over-time cross-entropy (samples/s);
* ``mnist16 infer``: the same model's forward under ``torch.no_grad`` (samples/s);
* ``recurrent lif`` / ``recurrent alif``: one recurrent LIF layer (``LIF(recurrent=N)``) or LSNN layer
  (``ALIF(recurrent=N)``, tau_ada 200 steps, beta 1.8), forward + backward of ``sum(spikes)`` w.r.t.
  the input current and ``w_rec``, at ``(T, B, N) = (784, 64, 256)`` and ``(100, 256, 512)``:
  spikegrad's default (``auto``: the fused layer of ``spikegrad/kernels/recurrent.py``), its
  reference scan (``backend="torch"``), a plain PyTorch loop over ``x.unbind(0)`` with the step
  written inline (a fast-sigmoid ``autograd.Function``), and that loop with its step function under
  ``torch.compile``. The recurrent weights are the layers' initial ones times 0.1 and the input
  N(0, 0.15^2): about 5 % of the neurons spike per step. The peers' recurrent layers run the same
  input and a copy of the same recurrent weights, stepped over ``x.unbind(0)`` (``libs.RECURRENT_PEERS``,
  what differs is in their docstrings): ``snntorch/RSynaptic`` (recurrent lif; all-to-all
  ``Linear(N, N)`` without bias, ``alpha = ds``, ``beta = dm``, reset by subtraction, which snnTorch
  applies one step late, after the decay), ``norse/LIFRecurrentCell`` (recurrent lif) and
  ``norse/LSNNRecurrentCell`` (recurrent alif; threshold raise ``1.8 (1 - exp(-1/200))`` per spike,
  decaying with ``tau_adapt_inv = 1 - exp(-1/200)``), with ``dt = 1``, ``tau_*_inv = 1 - decay`` and
  input and weights divided by ``1 - dm`` (norse's forward Euler then gives spikegrad's recurrence);
  norse resets to zero instead of subtracting, its LSNN adds input and recurrent spikes one step
  later, and its cells also multiply the input by input weights (the identity, frozen). Zero reset
  makes norse spike 10 to 15 % less. snnTorch has no recurrent adaptive neuron. These rows also
  report the peak resident memory of the first forward + backward in the row's fresh process, above
  the memory held before it (``/proc/self/status`` VmHWM after resetting it through
  ``/proc/self/clear_refs``); compiled rows compile there, so none is given.

Each row runs in its own process (SpikingJelly picks its GPU kernels from an environment variable
at import; peak-memory counters start clean), with ``torch.set_num_threads(--threads)``, warm-up
iterations and the median of several repeats. Reported per row: median time, spike rate (to check
that every library did comparable work), bytes saved for backward per neuron-step (autograd's
saved tensors, counted once per storage, through ``torch.autograd.graph.saved_tensors_hooks``) and,
on GPU, the peak of ``torch.cuda.max_memory_allocated`` above the memory held before the step.
A library that is not installed is reported as such.

``--malloc retain`` (the default) calls :func:`spikegrad.malloc.retain_freed_memory` first thing in
every row's process (glibc's mmap and trim thresholds raised, as ``train.py`` does), the same for
every library: freed tensors are reused instead of returned to the system and faulted in again,
which otherwise adds page faults that vary from run to run by several times. ``--malloc default``
keeps the C library's defaults. ``--huge-pages`` also sets ``THP_MEM_ALLOC_ENABLE=1`` for every
row (as ``train.py`` does): PyTorch's blocks of 2 MiB and more on transparent huge pages, one page
fault per 2 MiB for the tensors too large for the heap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

LIF_TAUS = (20.0, 5.0)      # tau_mem, tau_syn (steps) of the LIF-layer workloads
MNIST_TAUS = (8.0, 4.0)     # as conf/neuron/lif.yaml and conf/readout/li.yaml
# rows also run under torch.compile (default inductor backend; compile time is in the warm-up):
# spikegrad/torch is the plain ten-line loop (scan of lif_step); norse/unbind its functional step
COMPILED_LIF = ("spikegrad/torch", "spikegrad/native", "norse/unbind")
COMPILED_MNIST = ("spikegrad/torch", "spikegrad/native+sparse")
RECURRENT_SHAPES = ((784, 64, 256), (100, 256, 512))
RECURRENT_VARIANTS = {  # name -> note
    "spikegrad/auto": "default backend (fused recurrent layer)",
    "spikegrad/torch": "reference scan",
    "torch/eager loop": "x.unbind(0), step inline",
    "torch/compiled step": "the same step under torch.compile",
}
RECURRENT_INPUT = (0.0, 0.15)  # mean, std of the input current (threshold units per step)
RECURRENT_GAIN = 0.1           # w_rec = the layers' initial uniform(-1, 1) / sqrt(N) times this: about 5 % spikes


# ----------------------------------------------------------------------------- row list

def make_rows(device: str, only: str | None) -> list[dict]:
    import libs

    rows = []
    gpu = device == "cuda"
    lif_variants = [v for v in libs.NEURONS if gpu or "triton" not in v]
    shapes = [("lif", (100, 128, 512))] if not gpu else [("lif", (100, 128, 4096)), ("linear+lif", (500, 16, 16384))]
    for workload, shape in shapes:
        for v in lif_variants:
            if gpu and v in ("spikegrad/fused_lowmem", "spikegrad/fused nodetach", "snntorch/x[t]",
                             "spikegrad/native", "spikegrad/native nodetach"):
                continue
            env_opts = [None]
            if gpu and v == "spikingjelly/LIFNode":
                env_opts = ["torch", "triton", "cuda"]
            for sj in env_opts:
                rows.append(dict(workload=workload, shape=shape, variant=v + (f" ({sj})" if sj else ""),
                                 base_variant=v, sj_impl=sj, device=device))
    if not gpu:  # what a speed-minded user does instead: torch.compile (inductor) around a plain loop
        for v in COMPILED_LIF:
            rows.append(dict(workload="lif", shape=(100, 128, 512), variant=v + " compiled", base_variant=v,
                             sj_impl=None, device=device, compiled=True))
    for mode in ("train", "infer"):
        if not gpu:
            for v in COMPILED_MNIST:
                rows.append(dict(workload=f"mnist16 {mode}", shape=(100, 256, 246), variant=v + " compiled",
                                 base_variant=v, sj_impl=None, device=device, compiled=True))
        for v in libs.MNIST_VARIANTS:
            if not gpu and "triton" in v:
                continue
            if gpu and ("+sparse" in v or "native" in v):
                continue
            rows.append(dict(workload=f"mnist16 {mode}", shape=(100, 256, 246), variant=v, base_variant=v,
                             sj_impl=None, device=device))
    for workload in ("recurrent lif", "recurrent alif"):
        for shape in RECURRENT_SHAPES:
            for v in RECURRENT_VARIANTS:
                rows.append(dict(workload=workload, shape=shape, variant=v, base_variant=v, sj_impl=None,
                                 device=device, compiled=v.endswith("compiled step")))
            for v, (_, peer_workload, _, _) in libs.RECURRENT_PEERS.items():
                if peer_workload == workload:
                    rows.append(dict(workload=workload, shape=shape, variant=v, base_variant=v, sj_impl=None,
                                     device=device))
    if only:
        rows = [r for r in rows if r["workload"].startswith(only)]
    return rows


# ----------------------------------------------------------------------------- recurrent layers

def _spike_fn():
    """A plain fast-sigmoid spike ``autograd.Function`` (what a user of bare PyTorch writes)."""
    import torch

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, slope):
            ctx.save_for_backward(x)
            ctx.slope = slope
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g / (1 + ctx.slope * x.abs()) ** 2, None

    return Spike.apply


def recurrent_peer(variant: str, x, w_rec, tau_mem: float, tau_syn: float):
    """``(forward() -> spikes [T, B, N], zero_grad())`` of a peer's recurrent layer (``libs.RECURRENT_PEERS``).

    The peer gets a copy of ``w_rec [N, N]`` (row = target neuron) and of the input ``x [T, B, N]``
    (times the peer's ``input_scale``, once); the gradient goes to both copies. Raises ImportError
    when the peer is not installed.
    """
    import libs

    peer = libs.RECURRENT_PEERS[variant][2](w_rec.detach(), tau_mem, tau_syn).to(x.device)
    xp = (x.detach() * peer.input_scale).requires_grad_()

    def zero_grad():
        xp.grad = None
        peer.weight.grad = None

    return (lambda: peer(xp)), zero_grad


def recurrent_setup(row: dict):
    """``(forward() -> spikes [T, B, N], zero_grad())`` for a ``recurrent lif`` / ``recurrent alif`` row."""
    import math

    import torch

    from spikegrad.neurons import ALIF, LIF

    T, B, N = row["shape"]
    device = row["device"]
    adaptive = row["workload"].endswith("alif")
    tm, ts = LIF_TAUS
    layer = (ALIF if adaptive else LIF)(tau_mem=tm, tau_syn=ts, recurrent=N, surrogate="fast_sigmoid").to(device)
    g = torch.Generator().manual_seed(0)
    mu, sd = RECURRENT_INPUT
    x = (torch.randn(T, B, N, generator=g) * sd + mu).to(device).requires_grad_()
    w = layer.w_rec
    with torch.no_grad():
        w.mul_(RECURRENT_GAIN)
    variant = row["base_variant"]
    if variant not in RECURRENT_VARIANTS:
        return recurrent_peer(variant, x, w, tm, ts)

    def zero_grad():
        x.grad = None
        w.grad = None

    if variant.startswith("spikegrad/"):
        layer.backend = variant.split("/")[1]
        return (lambda: layer(x)[0]), zero_grad
    spike = _spike_fn()
    dm, ds = math.exp(-1 / tm), math.exp(-1 / ts)
    da, beta, slope = math.exp(-1 / 200.0), 1.8, 25.0

    def lif_step(x_t, v, i, z, w):
        i = ds * i + x_t + z @ w.t()
        v = dm * v + i
        z = spike(v - 1.0, slope)
        return z, v - z.detach(), i

    def alif_step(x_t, v, i, a, z, w):
        i = ds * i + x_t + z @ w.t()
        v = dm * v + i
        th = 1.0 + beta * a
        z = spike(v - th, slope)
        s = z.detach()
        return z, v - s * th, i, da * a + (1 - da) * s

    step = alif_step if adaptive else lif_step
    if row.get("compiled"):
        step = torch.compile(step)

    def forward():
        zero = x.new_zeros(B, N)
        v, i, a, z = zero, zero, zero, zero
        out = []
        for x_t in x.unbind(0):
            if adaptive:
                z, v, i, a = step(x_t, v, i, a, z, w)
            else:
                z, v, i = step(x_t, v, i, z, w)
            out.append(z)
        return torch.stack(out)

    return forward, zero_grad


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def rss_kib(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in KiB (Linux only)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset ``VmHWM`` (the peak resident memory) to the current RSS; returns the current RSS (KiB; Linux only)."""
    before = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return before


def peak_rss_mib(fn) -> float | None:
    """Peak resident memory while ``fn()`` runs, above the resident memory before (MiB; Linux only)."""
    try:
        before = reset_peak_rss()
    except (OSError, RuntimeError):
        return None
    fn()
    return (rss_kib("VmHWM") - before) / 1024


# ----------------------------------------------------------------------------- measuring (child)

def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, quick: bool, budget_s: float = 4.0) -> tuple[float, int, list[float]]:
    """Median seconds per call after warm-up; repeats adapt to stay near ``budget_s`` (3 to 15)."""
    fn()                       # warm-up (the caller already ran one step)
    _sync(device)
    t0 = time.perf_counter()
    fn()                       # second warm-up, timed to size the repeats
    _sync(device)
    first = time.perf_counter() - t0
    reps = 3 if quick else int(min(15, max(3, budget_s / max(first, 1e-4))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), reps, times


def _saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd saves for backward while ``fn()`` runs its forward."""
    import torch

    seen = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            seen[(st.data_ptr(), t.device)] = st.nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. sparse tensors: count the values
            seen[id(t)] = t.numel() * t.element_size() if t.layout == torch.strided else 0
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def measure(row: dict, threads: int, quick: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    import libs

    device = row["device"]
    T, B, N = row["shape"]
    res = {}
    if row["workload"] in ("lif", "linear+lif"):
        lib, factory, note = libs.NEURONS[row["base_variant"]]
        res["note"] = note
        tm, ts = LIF_TAUS
        neuron = factory(tm, ts).to(device)
        g = torch.Generator().manual_seed(0)
        if row["workload"] == "lif":
            x = (torch.randn(T, B, N, generator=g) * 0.3 + 0.04).to(device)
            linear = None
        else:
            x = (torch.rand(T, B, N, generator=g) < 0.05).float().to(device)
            linear = torch.nn.Linear(N, N, bias=False).to(device)
            with torch.no_grad():
                linear.weight.normal_(0.0, 0.6 / N ** 0.5, generator=None)
        if lib == "norse":  # same recurrence with the input divided by 1 - dm (outside the timing)
            neuron.scale = 1.0
            if linear is None:
                x = x / neuron.a
            else:
                with torch.no_grad():
                    linear.weight /= neuron.a
        if linear is None:
            x.requires_grad_(True)
        if row.get("compiled"):
            neuron = torch.compile(neuron)

        def forward():
            return neuron(x if linear is None else linear(x))

        def step():
            if linear is None:
                x.grad = None
            else:
                linear.weight.grad = None
            s = forward()
            s.sum().backward()
            return s

        neuron_steps = T * B * N
    elif row["workload"].startswith("recurrent"):
        v = row["base_variant"]
        res["note"] = RECURRENT_VARIANTS[v] if v in RECURRENT_VARIANTS else libs.RECURRENT_PEERS[v][3]
        forward, zero_grad = recurrent_setup(row)

        def step():
            zero_grad()
            s = forward()
            s.sum().backward()
            return s

        neuron_steps = T * B * N
        if device == "cpu" and not row.get("compiled"):
            res["peak_rss_mib"] = peak_rss_mib(step)   # the first fwd + bwd of this fresh process
    else:
        lib = libs.MNIST_VARIANTS[row["base_variant"]][0]
        res["note"] = libs.MNIST_VARIANTS[row["base_variant"]][1]
        model = libs.build_mnist_model(row["base_variant"], *MNIST_TAUS).to(device)
        if row.get("compiled"):
            model = torch.compile(model)
        x, y = libs.latency_batch(B, T)
        x, y = x.to(device), y.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        train = row["workload"].endswith("train")

        def forward():
            return model(x)

        def step():
            if train:
                opt.zero_grad(set_to_none=True)
                v, s = forward()
                libs.readout_loss(v, y).backward()
                opt.step()
            else:
                with torch.no_grad():
                    v, s = forward()
            return s

        neuron_steps = T * B * (246 + 10)
    if device == "cuda":
        torch.cuda.synchronize()
    s = step()
    res["spike_rate"] = float(s.float().mean())
    if row["workload"] != "mnist16 infer":
        res["saved_bytes_per_neuron_step"] = _saved_bytes(forward) / neuron_steps
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        res["peak_mem_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    med, reps, times = _time(step, device, quick)
    res.update(median_ms=med * 1e3, reps=reps, min_ms=min(times) * 1e3, max_ms=max(times) * 1e3)
    if row["workload"].startswith("mnist16"):
        res["samples_per_s"] = B / med
    return res


# ----------------------------------------------------------------------------- driver

MALLOC_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")   # not inherited by the rows


def run_row(row: dict, threads: int, quick: bool, timeout: float, malloc: str = "retain",
            huge_pages: bool = False) -> dict:
    env = dict(os.environ)
    if huge_pages:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    for key in MALLOC_KEYS:
        env.pop(key, None)
    if row["sj_impl"]:
        env["SJ_LIF_CUDA_IMPLEMENTATION"] = row["sj_impl"]
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(row), "--threads", str(threads),
           "--malloc", malloc]
    if quick:
        cmd.append("--quick")
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(row, status=f"timeout > {timeout:.0f} s")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(row, status=f"error: {tail[:160]}")
    return dict(row, **json.loads(lines[-1][7:]))


def child(row_json: str, threads: int, quick: bool) -> None:
    row = json.loads(row_json)
    try:
        res = measure(row, threads, quick)
        res["status"] = "ok"
    except ImportError as e:
        res = {"status": f"not installed ({e.name or e})"}
    print("RESULT " + json.dumps(res), flush=True)


def fmt(v, spec):
    return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0] or 0))


def print_table(results: list[dict]) -> None:
    by_wl: dict[tuple, list[dict]] = {}
    for r in results:
        by_wl.setdefault((r["workload"], tuple(r["shape"]), r["device"]), []).append(r)
    for (wl, shape, device), rows in by_wl.items():
        ok = [r for r in rows if r.get("status") == "ok"]
        ref = next((r for r in ok if r["variant"] == "spikegrad/torch"), None)
        peers = [r for r in ok if not r["variant"].startswith("spikegrad") and "LIFNode" not in r["variant"]]
        best_peer = min(peers, key=lambda r: r["median_ms"]) if peers else None
        print(f"\n== {wl}  (T, B, N) = {shape}  on {device}")
        if wl.startswith("recurrent"):
            print("   x plain: against the reference scan (spikegrad/torch); x best peer: against the fastest of "
                  "the plain loops and the peer libraries; peak MiB: RSS of the first fwd+bwd")
        print(f"{'variant':34s} {'median ms':>10s} {'x plain':>8s} {'x best peer':>11s} {'spike rate':>10s} "
              f"{'saved B/n-step':>14s} {'peak MiB':>9s} {'samples/s':>10s}  note")
        for r in rows:
            if r.get("status") != "ok":
                print(f"{r['variant']:34s} {r.get('status')}")
                continue
            sp = ref["median_ms"] / r["median_ms"] if ref else None
            bp = best_peer["median_ms"] / r["median_ms"] if best_peer else None
            peak = r.get("peak_mem_mib", r.get("peak_rss_mib"))
            print(f"{r['variant']:34s} {r['median_ms']:10.1f} {fmt(sp, '8.2f')} {fmt(bp, '11.2f')} "
                  f"{r['spike_rate']:10.4f} {fmt(r.get('saved_bytes_per_neuron_step'), '14.2f')} "
                  f"{fmt(peak, '9.0f')} {fmt(r.get('samples_per_s'), '10.0f')}  {r.get('note', '')}")
        if ok:
            rates = [r["spike_rate"] for r in ok if "LIFNode" not in r["variant"]]
            lo, hi = min(rates), max(rates)
            print(f"   spike rates (same model) span {lo:.4f} .. {hi:.4f} "
                  f"({100 * (hi - lo) / max(hi, 1e-12):.1f} % of the largest)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda", "all"], default="all",
                    help="all: CPU workloads, plus the GPU ones when CUDA is available")
    ap.add_argument("--only", default=None,
                    help="run the workloads whose name starts with this (lif, linear, mnist16, recurrent)")
    ap.add_argument("--variant", default=None,
                    help="run the variants whose name contains one of these comma-separated strings "
                         "(e.g. 'spikegrad/native,learn_tau')")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every row")
    ap.add_argument("--quick", action="store_true", help="3 repeats per row")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per row")
    ap.add_argument("--out", default=None, help="JSON file (default bench/results.json)")
    ap.add_argument("--malloc", choices=["retain", "default"], default="retain",
                    help="glibc malloc settings of every row's process (see the module docstring)")
    ap.add_argument("--huge-pages", action="store_true",
                    help="THP_MEM_ALLOC_ENABLE=1 in every row's process (see the module docstring)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.malloc == "retain":
            from spikegrad.malloc import retain_freed_memory   # ctypes only: before torch allocates

            retain_freed_memory()
        child(args.child, args.threads, args.quick)
        return
    import torch

    devices = ["cpu"]
    if args.device in ("all", "auto") and torch.cuda.is_available():
        devices = ["cpu", "cuda"] if args.device == "all" else ["cuda"]
    elif args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: CUDA is not available")
        devices = ["cuda"]
    rows = [r for d in devices for r in make_rows(d, args.only)]
    if args.variant:
        rows = [r for r in rows if any(v in r["variant"] for v in args.variant.split(","))]
    t0 = time.time()
    load0 = os.getloadavg()
    results = []
    for k, row in enumerate(rows):
        print(f"[{k + 1}/{len(rows)}] {row['workload']} {row['device']} {row['variant']} ...", end=" ", flush=True)
        res = run_row(row, args.threads, args.quick, args.timeout, args.malloc, args.huge_pages)
        results.append(res)
        print(f"{res['median_ms']:.1f} ms" if res.get("status") == "ok" else res.get("status"), flush=True)
    print_table(results)
    print(f"\nload average (1, 5, 15 min) at start {load0}, at end {os.getloadavg()} on {os.cpu_count()} CPUs")
    meta = dict(load_avg_end=os.getloadavg(), load_avg_start=load0, python=platform.python_version(), torch=torch.__version__, machine=platform.machine(),
                processor=platform.processor(), cpu_count=os.cpu_count(), threads=args.threads, malloc=args.malloc,
                huge_pages=args.huge_pages,
                cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                argv=sys.argv[1:], wall_s=round(time.time() - t0, 1), versions=_versions())
    out = Path(args.out) if args.out else HERE / "results.json"
    out.write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    print(f"\nwrote {out} ({meta['wall_s']} s)")


def _versions() -> dict:
    from importlib import metadata

    vers = {}
    for name in ("spikegrad", "snntorch", "spikingjelly", "norse", "triton"):
        try:
            vers[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            vers[name] = None
    return vers


if __name__ == "__main__":
    main()
