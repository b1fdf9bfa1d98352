"""Event-driven synapses and a fused IF + spiking max-pool layer in C, for simulating converted
networks on CPU (float32 / float64, no autograd).

A spiking layer's input is mostly zeros: a dense ``Linear`` or ``Conv2d`` spends the same
multiply-adds on it as on an analog input. :func:`event_linear` and :func:`event_conv2d` start each
output at its bias and add the weights of the non-zero inputs only, in a fixed order (``events.c``
states it), so their cost grows with the number of spikes. :func:`if_maxpool` runs a layer of IF
neurons and its count-gated spiking max-pool over several steps image by image, so the layer's
spikes never leave the cache. The kernels are part of the library of :mod:`spikegrad.kernels.native`
(compiled on first use); check :func:`available` first.

The pieces of work are sized to the CPU's caches (:func:`spikegrad.kernels.cpuinfo.cache_sizes`,
``$SPIKEGRAD_CACHE_SIZES`` to force them), never the order of the additions, so every size gives
the same bits: :func:`linear_block` (outputs whose weights stay in L2), :func:`linear_group` (rows
summed per pass over those weights) and :func:`pool_band` (rows of the fused layer kept in L2 over
its steps).
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native
from ._common import RESET_CODES
from .cpuinfo import cache_sizes

__all__ = ["available", "supports", "linear_table", "conv2d_table", "event_linear", "event_conv2d", "if_maxpool",
           "mlp_forward", "SpikeTimes", "linear_block", "linear_group", "pool_band"]

VECTOR_BYTES = 64  # events.c's UNIT: weight rows are padded to a multiple of it (one cache line)


class SpikeTimes(NamedTuple):
    """Spike trains with at most one spike per input, as time-to-first-spike codes give them.

    times: ``[B, N]`` float, the step of each input's spike; ``inf`` (or any value outside
        ``[0, T)``) for a silent input, as :func:`spikegrad.encoding.latency_times` returns them.
    T: number of steps.
    """

    times: Tensor
    T: int

    @property
    def dtype(self) -> torch.dtype:
        return self.times.dtype

    def dense(self) -> Tensor:
        """The spikes as a tensor ``[T, B, N]`` of the dtype of ``times``."""
        steps = torch.arange(self.T, dtype=self.times.dtype, device=self.times.device).view(-1, 1, 1)
        return (self.times.unsqueeze(0) == steps).to(self.times.dtype)


def available() -> bool:
    """True if the C library (with these kernels) is built or can be built now."""
    return native.available()


def supports(x: Tensor) -> bool:
    """Whether the kernels can run this tensor: float32 or float64 on the CPU, no gradient needed."""
    return native.supports(x) and not (x.requires_grad and torch.is_grad_enabled())


def _padded(rows: Tensor, multiple: int | None = None) -> Tensor:
    """``rows [..., N]`` zero-padded to a multiple of ``multiple`` elements (default ``VECTOR_BYTES``), contiguous."""
    n = rows.shape[-1]
    return F.pad(rows, (0, -n % (multiple or VECTOR_BYTES // rows.element_size()))).contiguous()


# ---------------------------------------------------------------------------- sizes from the caches
def linear_block(n_in: int, n_out: int, element_size: int, l2: int | None = None) -> int:
    """Outputs per block of :func:`event_linear`: 4, 2 or 1 times 64 bytes, the most whose
    weights (``n_in`` rows of the block) fill at most half the L2 (``l2`` bytes per CPU, default
    :func:`~spikegrad.kernels.cpuinfo.cache_sizes`), and no more than ``n_out`` needs."""
    l2 = cache_sizes().l2 if l2 is None else l2
    lanes = VECTOR_BYTES // element_size
    vectors = next((v for v in (4, 2) if n_in * v * VECTOR_BYTES <= l2 // 2), 1)
    return min(vectors, -(-n_out // lanes)) * lanes


def linear_group(n_in: int, element_size: int, l3: int | None = None) -> int:
    """Rows of :func:`event_linear`'s input summed per pass over a block's weights: as many (up to 256)
    as keep the group's events (at worst every input: an index and a value each) in half the L3
    share (``l3`` bytes per CPU, default :func:`~spikegrad.kernels.cpuinfo.cache_sizes`). Each pass
    reads the weights once, so a larger group reads them less often."""
    l3 = cache_sizes().l3 if l3 is None else l3
    return max(1, min(256, (l3 // 2) // max(1, n_in * (8 + element_size))))


def pool_band(width: int, channels: int, stride: int, element_size: int, l2: int | None = None) -> int:
    """Output rows per band of :func:`if_maxpool`: its input rows (current, membrane, count and
    spikes: four values per neuron) fill at most half the L2 (``l2`` bytes per CPU, default
    :func:`~spikegrad.kernels.cpuinfo.cache_sizes`), so they stay there over the steps; at least 1."""
    l2 = cache_sizes().l2 if l2 is None else l2
    return max(1, (l2 // 2) // max(1, 4 * width * channels * element_size * stride))


def linear_table(weight: Tensor, bias: Tensor | None, block: int | None = None) -> tuple[Tensor, Tensor]:
    """The operands of :func:`event_linear` for ``F.linear(x, weight [N, K], bias [N])``:
    ``(rows [Np / BW, K, BW], bias [Np])``: the weights in blocks of ``BW = block`` outputs (default
    :func:`linear_block`, a multiple of 64 bytes), each block's ``[K, BW]`` weights
    contiguous, zero-padded to ``Np`` outputs."""
    n_out, n_in = weight.shape
    block = block or linear_block(n_in, n_out, weight.element_size())
    b = torch.zeros(n_out, dtype=weight.dtype, device=weight.device) if bias is None else bias
    rows = _padded(weight.t(), block)                                           # [K, Np]
    return rows.view(n_in, -1, block).transpose(0, 1).contiguous(), _padded(b, block)  # [Np / BW, K, BW]


def conv2d_table(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """The operands of :func:`event_conv2d` for ``weight [N, C, KH, KW]``: ``(rows [C, KH, KW, Np], bias [Np])``."""
    b = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device) if bias is None else bias
    return _padded(weight.permute(1, 2, 3, 0)), _padded(b)


def _fn(name: str, dtype: torch.dtype):
    return getattr(native.load(), f"{name}_{native.DTYPE_SUFFIX[dtype]}")


def event_linear(x: Tensor, table: tuple[Tensor, Tensor], n_out: int, binary: bool = False,
                 group: int | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` summed over the non-zeros of ``x`` only.

    Args:
        x: ``[R, K]`` input (spikes or sparse values).
        table: :func:`linear_table` of the weights.
        n_out: ``N``, the number of outputs.
        binary: ``x`` holds only 0 and 1 (skips the multiplications; exact either way).
        group: rows summed per pass over a block's weights (default :func:`linear_group`).
    Returns:
        ``[R, N]``: per output, the bias plus the weights of the non-zero inputs (times their
        values) added in increasing input order.
    """
    rows, bias = table
    x = x.contiguous()
    R, K = x.shape
    if rows.dim() != 3 or rows.shape[1] != K or rows.shape[0] * rows.shape[2] < n_out:
        raise ValueError(f"event_linear: table rows {tuple(rows.shape)} do not fit input [R, {K}] and {n_out} "
                         "outputs (make them with linear_table)")
    group = group or linear_group(K, x.element_size())
    y = x.new_empty((R, n_out))
    fn = _fn("event_linear", x.dtype)
    native._launch(lambda a, b, n: fn(a, b, n, K, n_out, rows.shape[2], group, x.data_ptr(), rows.data_ptr(),
                                      bias.data_ptr(), y.data_ptr(), int(binary)), R, min_part=1)
    return y


def conv_geometry(conf: dict, in_hw: tuple[int, int], kernel: tuple[int, int]) -> tuple | None:
    """``(stride, padding, dilation, out_hw)`` pairs of a ``Conv2d`` configuration the kernel runs
    (groups 1, numeric padding), or None."""
    if conf.get("groups", 1) != 1 or isinstance(conf.get("padding", 0), str):
        return None
    pair = [(v, v) if isinstance(v, int) else tuple(v) for v in
            (conf.get("stride", 1), conf.get("padding", 0), conf.get("dilation", 1))]
    out = tuple((in_hw[d] + 2 * pair[1][d] - pair[2][d] * (kernel[d] - 1) - 1) // pair[0][d] + 1 for d in range(2))
    return (*pair, out)


def event_conv2d(x: Tensor, table: tuple[Tensor, Tensor], n_out: int, kernel: tuple[int, int],
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                 dilation: tuple[int, int] = (1, 1), binary: bool = False) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation)`` (groups 1) summed over the non-zeros of ``x``.

    Args:
        x: ``[R, C, H, W]`` input, stored channels-last (else copied so).
        table: :func:`conv2d_table` of the weights.
        n_out: output channels ``N``. kernel: ``(KH, KW)``.
        stride, padding, dilation: pairs, as ``F.conv2d`` (zero padding).
        binary: ``x`` holds only 0 and 1.
    Returns:
        ``[R, N, OH, OW]`` stored channels-last: per output, the bias plus the weights of the
        non-zero inputs in its receptive field, kernel positions in row-major order, then channels.
    """
    rows, bias = table
    R, C, H, W = x.shape
    xl = x.contiguous(memory_format=torch.channels_last)
    _, _, _, (OH, OW) = conv_geometry({"stride": stride, "padding": padding, "dilation": dilation}, (H, W), kernel)
    y = torch.empty((R, n_out, OH, OW), dtype=x.dtype, memory_format=torch.channels_last)
    fn = _fn("event_conv2d", x.dtype)
    native._launch(lambda a, b, n: fn(a, b, n, H, W, C, kernel[0], kernel[1], n_out, rows.shape[-1], OH, OW,
                                      *stride, *padding, *dilation, xl.data_ptr(), rows.data_ptr(), bias.data_ptr(),
                                      y.data_ptr(), int(binary)), R, min_part=1)
    return y


def if_maxpool(x: Tensor, v: Tensor, count: Tensor, s: Tensor, steps: int, v_th: float, reset: str, v_reset: float,
               kernel: tuple[int, int], stride: tuple[int, int], band: int | None = None) -> Tensor:
    """``steps`` steps of IF neurons and their count-gated spiking max-pool (no padding, dilation 1).

    Per step: ``u = v + x``; spike iff ``u - v_th > 0``; ``v`` becomes ``u - v_th``, ``v_reset``
    or ``u`` (``reset`` subtract, zero, none); ``count += spike``; then each pooling window passes
    the spike of its input with the most spikes before this step (ties: an input that spikes now),
    as :func:`spikegrad.conversion.spike_max_pool2d`.

    Args:
        x: input current ``[steps * B, C, H, W]`` (step-major) or ``[B, C, H, W]`` (the same every
            step), stored channels-last.
        v, count: ``[B, C, H, W]`` membranes and spike counts, channels-last contiguous; updated in place.
        s: ``[B, C, H, W]`` (channels-last contiguous): receives the spikes of the last step.
        steps: number of steps. v_th, reset, v_reset: the IF neurons'.
        kernel, stride: the max-pool's (pairs).
        band: output rows whose neurons run all ``steps`` at a time (default :func:`pool_band`);
            only where no window reaches past its rows (stride >= kernel height), else the whole image.
    Returns:
        ``pooled [steps * B, C, OH, OW]``, channels-last.
    """
    B, C, H, W = v.shape
    for t in (v, count, s):
        if not t.is_contiguous(memory_format=torch.channels_last) or t.shape != v.shape:
            raise ValueError("if_maxpool: v, count and s must be [B, C, H, W] channels-last contiguous "
                             "(written in place)")
    xl = x.contiguous(memory_format=torch.channels_last)
    if len(xl) not in (B, steps * B):
        raise ValueError(f"if_maxpool: x has {len(xl)} rows; expected {steps} x {B} (one per step and image) or {B}")
    OH, OW = (H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1
    pooled = torch.empty((steps * B, C, OH, OW), dtype=v.dtype, memory_format=torch.channels_last)
    fn = _fn("if_maxpool", v.dtype)
    x_step = 0 if len(xl) == B else B * H * W * C  # held input: the same row every step
    band = band or pool_band(W, C, stride[0], v.element_size())
    native._launch(lambda a, b, n: fn(a, b, n, steps, B, H, W, C, xl.data_ptr(), x_step, v.data_ptr(),
                                      count.data_ptr(), s.data_ptr(), float(v_th), float(v_reset), RESET_CODES[reset],
                                      *kernel, *stride, OH, OW, band, pooled.data_ptr()), B, min_part=1)
    return pooled


def mlp_forward(x: Tensor | SpikeTimes, weights: list[Tensor], biases: list[Tensor | None],
                consts: list[tuple[Tensor, ...]], resets: list[str], states: list[tuple[Tensor, Tensor]],
                record_spikes: bool = True) -> tuple[Tensor, list[Tensor]]:
    """A feed-forward MLP of LIF layers and a leaky-integrator readout over ``T`` steps, image by
    image, with event-driven synapses (``events.c``'s ``mlp_forward``).

    Args:
        x: input ``[T, B, N0]`` (spikes or sparse values), or :class:`SpikeTimes`.
        weights: per layer ``[N_{k+1}, N_k]`` (``nn.Linear`` weights); biases: ``[N_{k+1}]`` or None.
        consts: per hidden layer ``(decay_mem, decay_syn, v_th, v_reset)``, per readout ``(decay_mem,
            decay_syn)``: tensors of one value or one per neuron.
        resets: reset mode of every hidden layer.
        states: per layer ``(v, i)`` ``[B, N_{k+1}]``: the state before the first step, updated in place.
        record_spikes: return every hidden layer's spikes (else empty tensors).
    Returns:
        ``(readout [T, B, N_L], spikes of each hidden layer [T, B, N_k])``. Per step and layer the
        input current is 0 plus the weights of the non-zero inputs (times their values), inputs in
        increasing order, then the bias; the neurons do the operations of the LIF / LI kernels.
    """
    if isinstance(x, SpikeTimes):
        times = x.times.contiguous()
        T, (B, n_in), dtype = int(x.T), times.shape, times.dtype
        x_ptr, t_ptr = None, times.data_ptr()
    else:
        T, B, n_in = x.shape
        dtype = x.dtype
        x = x.contiguous()
        x_ptr, t_ptr = x.data_ptr(), None
    L = len(weights)
    sizes = [n_in] + [w.shape[0] for w in weights]
    rows = [_padded(w.t().to(dtype)) for w in weights]                          # [N_k, Np_{k+1}]
    padded = [n_in] + [r.shape[1] for r in rows]                               # the input is not padded
    bias = [None if b is None else b.to(dtype).contiguous() for b in biases]
    cvals = [[t.to(dtype).reshape(-1).expand(n).contiguous() for t in cs] for cs, n in zip(consts, sizes[1:])]
    cptr = [cv[j].data_ptr() if j < len(cv) else None for cv in cvals for j in range(4)]  # four slots a layer
    for v, i in states:
        if not (v.is_contiguous() and i.is_contiguous() and v.dtype == i.dtype == dtype):
            raise ValueError("mlp_forward: states must be contiguous tensors of the input's dtype (updated in place)")
    spikes = [torch.empty((T, B, n) if record_spikes else (0,), dtype=dtype) for n in sizes[1:-1]]
    readout = torch.empty((T, B, sizes[-1]), dtype=dtype)

    def arr(ctype, values):
        return (ctype * len(values))(*values)
    keep = [arr(ctypes.c_int64, sizes), arr(ctypes.c_int64, padded),
            arr(ctypes.c_void_p, [r.data_ptr() for r in rows]),
            arr(ctypes.c_void_p, [None if b is None else b.data_ptr() for b in bias]), arr(ctypes.c_void_p, cptr),
            arr(ctypes.c_int, [RESET_CODES[r] for r in resets] + [0]),
            arr(ctypes.c_void_p, [s[0].data_ptr() for s in states]),
            arr(ctypes.c_void_p, [s[1].data_ptr() for s in states]),
            arr(ctypes.c_void_p, [s.data_ptr() if record_spikes else None for s in spikes] + [None])]
    fn = _fn("mlp_forward", dtype)
    native._launch(lambda a, b, n: fn(a, b, n, T, B, L, keep[0], keep[1], x_ptr, t_ptr, *keep[2:],
                                      readout.data_ptr()), B, min_part=1)
    return readout, spikes
