"""Substrates: what runs a spiking network forward, and the simulated analog chip.

A *substrate* takes input spikes ``[T, B, N_in]`` and a network description (per layer: weights
and nominal neuron constants, :class:`LayerSpec`), runs the network forward without autograd and
returns what can be measured (:class:`Observables`): the spikes of every hidden layer and sampled
membrane traces. :class:`Substrate` is the interface; :class:`AnalogSubstrate` simulates an
imperfect analog chip in the spirit of BrainScaleS-2.

Wrapping a real chip means writing one more :class:`Substrate`: in :meth:`Substrate.run`, map
each :class:`LayerSpec` to the chip's configuration (weights to its integer synapse values,
``tau``/threshold to its calibrated parameters), send the input spike trains, run the experiment,
and convert the recorded spike events and membrane samples (e.g. CADC reads) back to dense
``[T, B, N]`` tensors in threshold units; return None for traces the chip did not record. Nothing
else in :mod:`spikegrad.hardware` needs to change.

Conventions of the analog model (all per physical neuron circuit or synapse, frozen per chip):

* a chip has ``neurons`` neuron circuits and ``rows`` synapse rows (one row per presynaptic
  input line); layer ``k`` uses the next ``N_k`` circuits and rows ``0 .. N_in - 1``; a recurrent
  layer feeds its own spikes back on rows ``N_in .. N_in + N_k - 1`` (its recurrent synapses are
  quantized with the same weight scale and carry the same kind of mismatch as its forward ones;
  they act on the previous step's spikes);
* fixed-pattern mismatch multiplies ``tau_mem``, ``tau_syn`` and ``v_th`` by ``1 + sigma * e``
  (``e ~ N(0, 1)``, factor clamped at ``>= 0.1``), shifts the leak potential by
  ``sigma * e * v_th`` (threshold units), and multiplies every synapse by ``1 + sigma * e``
  (clamped at ``>= 0``); ``sigma`` is ``mismatch`` unless ``spreads`` names its own;
* weights are ``bits``-bit magnitudes with a sign: integers in ``[-(2^bits - 1), 2^bits - 1]``
  times a per-layer weight scale (threshold units per step and input spike); larger weights
  saturate; ``row_gain`` adds a frozen gain error per synapse row;
* temporal noise: white noise of std ``noise`` (threshold units) added to every membrane at every
  step (an Ornstein-Uhlenbeck membrane noise, new on every run);
* membrane readout (CADC): ``code = round((g v + o - lo) / lsb)`` clipped to ``[0, 2^bits - 1]``
  with a frozen per-neuron gain ``g = 1 + cadc_gain * e`` and offset ``o = cadc_offset * e`` LSB,
  plus ``readout_noise`` LSB of temporal noise; the value returned is ``lo + code * lsb``
  (threshold units, converted with the nominal calibration);
* optionally a synaptic delay of ``delay`` steps per layer, ``dead`` (never spike) and ``hot``
  (a leak potential of ``hot_leak`` above threshold: fire without input) neuron circuits.

Leak potential and noise enter the fast kernels as an extra input current: a drive ``e[t]`` added
to the membrane each step equals the input ``e[t] - decay_syn * e[t-1]`` to the synaptic current
(exact), so the kernels of :mod:`spikegrad.kernels` run the chip with per-neuron constants. The
kernels' synaptic current is then the circuit's plus the step's drive; a run starts from the
circuits' state (as if ``e[-1] = 0``) and returns it (``e[T-1]`` taken off again), so a run
continued from its :attr:`Observables.state` follows the chip's equations exactly (the floats can
differ from one run in the last bit where there is a drive, as the sums are grouped differently).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import LIFParams, LIFState, LIParams, LIState, NetworkState, last
from ..kernels import li_sequence, lif_sequence
from ..kernels.sparse import SparseInputLinear, sparse_linear
from ..models import SeqWise, SpikingMLP
from ..neurons import LI, LIF

__all__ = ["LayerSpec", "NeuronConstants", "Observables", "DelayedInput", "Substrate", "AnalogSubstrate", "layer_specs",
           "quantize_weights", "cadc_read", "SPREAD_NAMES"]

SPREAD_NAMES = ("tau_mem", "tau_syn", "v_th", "v_leak", "synapse")
"""Parameters with fixed-pattern mismatch; each takes ``mismatch`` unless ``spreads`` overrides it."""

_MIN_FACTOR = 0.1  # smallest mismatch factor of a time constant or threshold (keeps them positive)
_DEAD_V_TH = 1e4   # threshold of a dead neuron circuit (threshold units): it never spikes


class LayerSpec(NamedTuple):
    """One layer as a substrate sees it.

    weight: ``[N_out, N_in]`` (threshold units of current per input spike).
    params: nominal constants, :class:`~spikegrad.functional.LIFParams` (spiking layer) or
        :class:`~spikegrad.functional.LIParams` (leaky-integrator readout); 0-dim or ``[N_out]``.
    spike_fn: the layer's surrogate (used by the kernels' forward pass only); None for a readout.
    max_density: the layer computes its input on the non-zeros of its input up to this density
        (:func:`~spikegrad.kernels.sparse_linear`), or None (dense).
    w_rec: recurrent weights ``[N_out, N_out]`` on the layer's previous-step spikes, or None.
    """

    weight: Tensor
    params: LIFParams | LIParams
    spike_fn: Any
    max_density: float | None
    w_rec: Tensor | None = None

    def rows(self) -> int:
        """Synapse rows the layer needs: its inputs, plus its own neurons when recurrent."""
        return self.weight.shape[1] + (0 if self.w_rec is None else self.w_rec.shape[1])


class NeuronConstants(NamedTuple):
    """Per-circuit constants of one layer on a chip, each ``[N]``: per-step decays, threshold, and
    leak potential (threshold units; None when it is 0 everywhere)."""

    decay_mem: Tensor
    decay_syn: Tensor
    v_th: Tensor
    v_leak: Tensor | None


class Observables(NamedTuple):
    """What a substrate measured in one run.

    spikes: per hidden (spiking) layer, spikes ``[T, B, N]`` in {0, 1}.
    v: per hidden layer, sampled membrane ``[T, B, N]`` (threshold units, after reset), or None
        where not recorded.
    readout: sampled membrane of the readout layer ``[T, B, C]`` (threshold units).
    state: the final state of the circuits of every layer (hidden layers, then the readout), a
        :class:`~spikegrad.functional.NetworkState`: per layer the exact (not sampled)
        :class:`~spikegrad.functional.LIFState` / :class:`~spikegrad.functional.LIState` ``[B, N]``,
        the same fields as the software model's, wrapped in a :class:`DelayedInput` on a chip with a
        synaptic delay. Pass it as ``state=`` to the next :meth:`Substrate.run` to continue the run;
        None from a substrate that cannot read its circuits' state.
    """

    spikes: tuple[Tensor, ...]
    v: tuple[Tensor | None, ...]
    readout: Tensor
    state: NetworkState | None = None


class DelayedInput(NamedTuple):
    """State of a layer on a chip with a synaptic delay of ``d`` steps: its circuits' state and
    ``pending``, its last ``d`` input steps ``[d, B, N_in]`` (the first ``d`` inputs of the next run)."""

    neuron: LIFState | LIState
    pending: Tensor


def layer_specs(model: nn.Module) -> list[LayerSpec]:
    """Describe a :class:`~spikegrad.models.SpikingMLP` as :class:`LayerSpec`\\ s (weights not copied).

    Raises:
        ValueError: a model a substrate cannot run (not a SpikingMLP, biases, adaptive or other
            hidden neurons than ``LIF``, a readout other than ``LI``), with what to change.
    """
    if not isinstance(model, SpikingMLP):
        raise ValueError(f"a substrate runs a spikegrad.models.SpikingMLP (Linear -> LIF layers, LI readout), got "
                         f"{type(model).__name__}; build the network as SpikingMLP(sizes=[...])")
    specs = []
    last = len(model.layers) - 1
    for k, (seq, neuron) in enumerate(zip(model.layers, model.neurons)):
        lin = seq.module if isinstance(seq, SeqWise) else seq
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"layer {k}: a substrate maps Linear layers onto synapse arrays, got {type(lin).__name__}")
        if lin.bias is not None:
            raise ValueError(f"layer {k}: the substrate has no bias currents; build the model with bias=False")
        density = lin.max_density if isinstance(lin, SparseInputLinear) else None
        if k < last:
            if type(neuron) is not LIF:
                raise ValueError(f"layer {k}: the substrate's neurons are LIF neurons (recurrent or not), got "
                                 f"{type(neuron).__name__}; use neuron=lif for the hidden layers")
            specs.append(LayerSpec(lin.weight, neuron.params(), neuron.surrogate, density, neuron.w_rec))
        else:
            if type(neuron) is not LI:
                raise ValueError(f"the substrate reads the output layer's membrane, so the readout must be a "
                                 f"leaky integrator (LI), got {type(neuron).__name__}; use readout=LI")
            specs.append(LayerSpec(lin.weight, neuron.params(), None, density))
    return specs


def quantize_weights(w: Tensor, bits: int, scale: Tensor | float) -> Tensor:
    """Signed ``bits``-bit weights: ``clamp(round(w / scale), -(2^bits - 1), 2^bits - 1) * scale``.

    Args:
        w: weights (any shape, threshold units). bits: magnitude bits (6 on BrainScaleS-2: -63..63).
        scale: weight per integer step (> 0), a number or a 0-dim tensor.
    Returns:
        quantized weights, shape and dtype of ``w``; rounding is half to even, larger weights saturate.
    """
    q = 2**bits - 1
    return torch.clamp(torch.round(w / scale), -q, q) * scale


def cadc_read(v: Tensor, lo: float, hi: float, bits: int | None, gain: Tensor | float = 1.0,
              offset: Tensor | float = 0.0, noise: Tensor | float = 0.0) -> Tensor:
    """Membrane samples as an analog-to-digital converter returns them, in threshold units.

    ``code = clamp(round((gain * v + offset + noise - lo) / lsb), 0, 2^bits - 1)``, value
    ``lo + code * lsb`` with ``lsb = (hi - lo) / (2^bits - 1)``.

    Args:
        v: membrane ``[T, B, N]`` (threshold units). lo, hi: the converter's input range.
        bits: converter resolution; None returns ``gain * v + offset + noise`` unclipped.
        gain: per-neuron gain ``[N]`` (or a number). offset, noise: in threshold units, broadcast
            against ``v``.
    Returns:
        ``[T, B, N]``, dtype of ``v``.
    """
    u = v * gain + offset + noise
    if bits is None:
        return u
    levels = 2**bits - 1
    lsb = (hi - lo) / levels
    return lo + torch.clamp(torch.round((u - lo) / lsb), 0, levels) * lsb


class Substrate(nn.Module):
    """Interface of a substrate (see the module docstring for how to wrap a real chip).

    Subclasses implement :meth:`run`, and may extend :meth:`check` (e.g. for a chip's size) and
    :meth:`settings` (what metrics record about the substrate).
    """

    def run(self, x_seq: Tensor, layers: Sequence[LayerSpec], record_v: bool = False,
            state: NetworkState | None = None) -> Observables:
        """Run the network forward on the substrate, without autograd.

        Args:
            x_seq: input spikes ``[T, B, N_in]`` (the model's input, flattened).
            layers: the network (:func:`layer_specs`).
            record_v: also return the hidden layers' membrane traces (where the substrate can).
            state: None (every circuit at rest), or :attr:`Observables.state` of a previous run to
                continue it (checked by :meth:`~spikegrad.functional.NetworkState.of`). A chip
                that cannot set its circuits' state raises a ValueError for a state other than None.
        Returns:
            :class:`Observables`.
        """
        raise NotImplementedError

    def check(self, layers: Sequence[LayerSpec]) -> None:
        """Raise a ValueError if the substrate cannot run ``layers`` (default: every network fits)."""

    def settings(self) -> dict[str, Any]:
        """The substrate's settings as a flat dict of numbers and strings (for metrics)."""
        return {"substrate": type(self).__name__}


def _number(who: str, name: str, value: Any, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ValueError(f"{who}: {name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _bits(who: str, name: str, value: Any, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"{who}: {name} must be an int in [1, {high}] (bits), or None to switch it off, "
                         f"got {value!r}")
    return value


def _range(who: str, name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be two numbers [low, high] (threshold units), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{who}: {name} must be finite with low < high, got {value!r}")
    return lo, hi


class AnalogSubstrate(Substrate):
    """A simulated analog neuromorphic chip (model in the module docstring).

    Args:
        mismatch: relative fixed-pattern spread sigma of ``tau_mem``, ``tau_syn``, ``v_th``, the
            leak potential (times ``v_th``) and the synapse gains (0 to 0.5 is the studied range).
        chip: seed of the chip: the same seed gives the same fixed pattern, another seed another.
        spreads: per-parameter spreads overriding ``mismatch``, names in :data:`SPREAD_NAMES`
            (e.g. ``{"synapse": 0.05}``); a None value keeps ``mismatch``.
        weight_bits: magnitude bits of the signed integer weights (None: no quantization).
        weight_max: largest weight per layer (threshold units; the scale is ``weight_max /
            (2^bits - 1)``): one number for all layers, a list with one per layer, or None to
            scale each layer to its largest weight at every run.
        row_gain: relative spread of a frozen gain error per synapse row.
        noise: std of the temporal membrane noise per step (threshold units).
        cadc_bits: resolution of the membrane readout (None: the exact membrane, no clipping).
        cadc_range: input range of the readout of hidden neurons (threshold units).
        output_range: input range of the readout of the output neurons (threshold units).
        cadc_gain: relative spread of the frozen per-neuron readout gain.
        cadc_offset: std of the frozen per-neuron readout offset (LSB).
        readout_noise: std of the temporal readout noise (LSB).
        delay: synaptic delay of every layer (steps, >= 0).
        dead: fraction of neuron circuits that never spike. hot: fraction that fire without input.
        hot_leak: leak potential of a hot circuit (threshold units; > 1 makes it fire periodically).
        neurons: neuron circuits of the chip. rows: synapse rows (inputs per neuron).
        noise_seed: seed of the temporal noise (membrane and readout).
        backend: kernel backend (see :func:`spikegrad.kernels.lif_sequence`).
    """

    def __init__(self, mismatch: float = 0.0, chip: int = 0, spreads: dict[str, float | None] | None = None,
                 weight_bits: int | None = 6, weight_max: float | Sequence[float] | None = None,
                 row_gain: float = 0.0, noise: float = 0.0, cadc_bits: int | None = 8,
                 cadc_range: Sequence[float] = (-2.0, 2.0), output_range: Sequence[float] = (-8.0, 24.0),
                 cadc_gain: float = 0.0, cadc_offset: float = 0.0, readout_noise: float = 0.0, delay: int = 0,
                 dead: float = 0.0, hot: float = 0.0, hot_leak: float = 2.0, neurons: int = 512, rows: int = 256,
                 noise_seed: int = 0, backend: str = "auto"):
        super().__init__()
        who = "AnalogSubstrate"
        self._args = {k: v for k, v in locals().items() if k not in ("self", "who", "__class__")}
        self.mismatch = _number(who, "mismatch (relative spread)", mismatch, 0.0, 1.0)
        unknown = set(spreads or {}) - set(SPREAD_NAMES)
        if unknown:
            raise ValueError(f"{who}: unknown names in spreads: {sorted(unknown)}; known: {list(SPREAD_NAMES)}")
        self.spreads = {n: self.mismatch if (spreads or {}).get(n) is None
                        else _number(who, f"spreads.{n}", spreads[n], 0.0, 1.0) for n in SPREAD_NAMES}
        if isinstance(chip, bool) or not isinstance(chip, int):
            raise ValueError(f"{who}: chip must be an int seed, got {chip!r}")
        self.chip = chip
        self.weight_bits = _bits(who, "weight_bits", weight_bits, 16)
        if weight_max is None or isinstance(weight_max, (int, float)):
            wm = [] if weight_max is None else [weight_max]
        else:
            wm = list(weight_max)
        for w in wm:
            _number(who, "weight_max", w, 1e-12)
        self.weight_max = None if weight_max is None else [float(w) for w in wm]
        self.row_gain = _number(who, "row_gain", row_gain, 0.0, 1.0)
        self.noise = _number(who, "noise (threshold units)", noise)
        self.cadc_bits = _bits(who, "cadc_bits", cadc_bits, 16)
        self.cadc_range = _range(who, "cadc_range", cadc_range)
        self.output_range = _range(who, "output_range", output_range)
        self.cadc_gain = _number(who, "cadc_gain", cadc_gain, 0.0, 1.0)
        self.cadc_offset = _number(who, "cadc_offset (LSB)", cadc_offset)
        self.readout_noise = _number(who, "readout_noise (LSB)", readout_noise)
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(f"{who}: delay must be an int >= 0 (steps), got {delay!r}")
        self.delay = delay
        self.dead = _number(who, "dead (fraction)", dead, 0.0, 1.0)
        self.hot = _number(who, "hot (fraction)", hot, 0.0, 1.0)
        if self.dead + self.hot > 1:
            raise ValueError(f"{who}: dead + hot must be <= 1 (fractions of the neuron circuits), got {dead} + {hot}")
        self.hot_leak = _number(who, "hot_leak (threshold units)", hot_leak, -math.inf)
        for name, value in (("neurons", neurons), ("rows", rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{who}: {name} must be an int >= 1, got {value!r}")
        self.neurons, self.rows = neurons, rows
        self.noise_seed = int(noise_seed)
        self.backend = backend
        self._noise_gen: torch.Generator | None = None
        g = torch.Generator().manual_seed(chip)  # the chip: one fixed draw, in a fixed order
        for name in ("tau_mem", "tau_syn", "v_th", "v_leak", "cadc_gain", "cadc_offset"):
            self.register_buffer(f"e_{name}", torch.randn(neurons, generator=g), persistent=False)
        self.register_buffer("fault", torch.rand(neurons, generator=g), persistent=False)  # dead / hot draw
        self.register_buffer("e_synapse", torch.randn(rows, neurons, generator=g), persistent=False)
        self.register_buffer("e_row", torch.randn(rows, generator=g), persistent=False)

    @classmethod
    def ideal(cls, **kw: Any) -> "AnalogSubstrate":
        """A substrate with mismatch, noise and quantization off: it reproduces the software model."""
        return cls(**{"mismatch": 0.0, "weight_bits": None, "cadc_bits": None, **kw})

    def replace(self, **changes: Any) -> "AnalogSubstrate":
        """A new substrate with these settings changed (e.g. ``chip=1``: another chip, same settings)."""
        return type(self)(**{**self._args, **changes})

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"substrate": type(self).__name__, "mismatch": self.mismatch, "chip": self.chip}
        out.update({f"spread_{n}": v for n, v in self.spreads.items()})
        out.update(weight_bits=self.weight_bits, row_gain=self.row_gain, noise=self.noise,
                   cadc_bits=self.cadc_bits, cadc_gain=self.cadc_gain, cadc_offset=self.cadc_offset,
                   readout_noise=self.readout_noise, delay=self.delay, dead=self.dead, hot=self.hot)
        out["weight_max"] = "auto" if self.weight_max is None else ",".join(f"{w:g}" for w in self.weight_max)
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings().items() if k != "substrate")

    # ------------------------------------------------------------------------- the fixed pattern
    def _factor(self, name: str, sl: slice) -> Tensor | None:
        """``1 + sigma * e`` of the circuits ``sl`` (clamped at 0.1), or None without spread."""
        sigma = self.spreads[name]
        return None if sigma == 0 else (1 + sigma * getattr(self, f"e_{name}")[sl]).clamp(min=_MIN_FACTOR)

    def check(self, layers: Sequence[LayerSpec]) -> None:
        n_total = sum(s.weight.shape[0] for s in layers)
        if n_total > self.neurons:
            raise ValueError(f"the network has {n_total} neurons but the chip has {self.neurons} neuron circuits; "
                             f"use a smaller network or a larger chip (substrate.neurons={n_total})")
        for k, s in enumerate(layers):
            if s.rows() > self.rows:
                what = f"{s.weight.shape[1]} inputs" + ("" if s.w_rec is None else f" and {s.w_rec.shape[1]} recurrent rows")
                raise ValueError(f"layer {k} has {what} but the chip has {self.rows} synapse rows; use fewer inputs "
                                 f"or a larger chip (substrate.rows={s.rows()})")
        if self.weight_max is not None and len(self.weight_max) not in (1, len(layers)):
            raise ValueError(f"weight_max lists {len(self.weight_max)} values for a network of {len(layers)} layers; "
                             "give one number, or one per layer")

    def neuron_constants(self, spec: LayerSpec, neurons: slice, dtype: torch.dtype = torch.float32,
                         device: torch.device | str = "cpu") -> NeuronConstants:
        """The constants of the neuron circuits ``neurons`` running a layer with nominal constants
        ``spec.params``: mismatch, dead and hot circuits applied (each ``[N]``)."""
        p = spec.params
        n = spec.weight.shape[0]
        ones = torch.ones(n, dtype=dtype, device=device)
        dm = torch.as_tensor(p.decay_mem).to(device, dtype) * ones
        ds = torch.as_tensor(p.decay_syn).to(device, dtype) * ones
        f_mem, f_syn = self._factor("tau_mem", neurons), self._factor("tau_syn", neurons)
        if f_mem is not None:  # decay = exp(-1 / tau): tau * f gives decay ** (1 / f)
            dm = dm ** (1 / f_mem.to(device, dtype))
        if f_syn is not None:
            ds = ds ** (1 / f_syn.to(device, dtype))
        spiking = spec.spike_fn is not None
        v_th = torch.as_tensor(p.v_th).to(device, dtype) * ones if spiking else ones
        v_leak = None
        if self.spreads["v_leak"] > 0:
            v_leak = self.spreads["v_leak"] * self.e_v_leak[neurons].to(device, dtype) * v_th
        if spiking and self.hot > 0:
            hot = (self.fault[neurons] >= 1 - self.hot).to(device)
            v_leak = torch.where(hot, self.hot_leak * v_th, torch.zeros_like(v_th) if v_leak is None else v_leak)
        if spiking:
            f_th = self._factor("v_th", neurons)
            if f_th is not None:
                v_th = v_th * f_th.to(device, dtype)
            if self.dead > 0:
                dead = (self.fault[neurons] < self.dead).to(device)
                v_th = torch.where(dead, torch.full_like(v_th, _DEAD_V_TH), v_th)
        return NeuronConstants(dm, ds, v_th, v_leak)

    def chip_weights(self, k: int, w: Tensor, neurons: slice) -> Tensor:
        """Layer ``k``'s weights ``[N_out, rows]`` as the chip applies them (quantized, saturated,
        with synapse and row gains), for the neuron circuits ``neurons``; a recurrent layer passes
        ``[W, W_rec]`` (``[N_out, N_in + N_out]``), one synapse array with one weight scale."""
        w = w.detach()
        if self.weight_bits is not None:
            q = 2**self.weight_bits - 1
            if self.weight_max is None:
                top = w.abs().max()
                scale = torch.where(top > 0, top / q, torch.ones_like(top))
            else:
                scale = self.weight_max[k if len(self.weight_max) > 1 else 0] / q
            w = quantize_weights(w, self.weight_bits, scale)
        n_in = w.shape[1]
        if self.spreads["synapse"] > 0:
            gain = (1 + self.spreads["synapse"] * self.e_synapse[:n_in, neurons]).clamp(min=0)  # [N_in, N_out]
            w = w * gain.t().to(w.dtype)
        if self.row_gain > 0:
            w = w * (1 + self.row_gain * self.e_row[:n_in]).clamp(min=0).to(w.dtype)
        return w

    def _noise(self, shape: Sequence[int], std: float, like: Tensor) -> Tensor:
        if self._noise_gen is None:
            self._noise_gen = torch.Generator().manual_seed(self.noise_seed)
        return torch.empty(*shape, dtype=like.dtype).normal_(0.0, std, generator=self._noise_gen).to(like.device)

    def _membrane_drive(self, x: Tensor, decay_syn: Tensor, drive: Tensor | None) -> Tensor:
        """Input current that adds ``drive [T, B, N]`` (or ``[N]``) to the membrane every step
        (``e[t] - decay_syn e[t-1]``, see the module docstring)."""
        if drive is None:
            return x
        e = torch.broadcast_to(drive, x.shape)
        x = x + e
        x[1:].addcmul_(e[:-1], decay_syn, value=-1)
        return x

    # ------------------------------------------------------------------------------------ running
    @torch.no_grad()
    def run(self, x_seq: Tensor, layers: Sequence[LayerSpec], record_v: bool = False,
            state: NetworkState | None = None) -> Observables:
        self.check(layers)
        h = x_seq.flatten(2)  # [T, B, N_in]
        if x_seq.dim() < 3 or h.shape[-1] != layers[0].weight.shape[1]:
            raise ValueError(f"the network takes {layers[0].weight.shape[1]} inputs per step but the input has shape "
                             f"{tuple(x_seq.shape)}; pass [T, B, features...] spikes that match the first layer")
        states = NetworkState.of("AnalogSubstrate.run", state, len(layers))
        dtype = h.dtype
        spikes, vs, finals = [], [], []
        offset = 0
        readout = h
        for k, (spec, st) in enumerate(zip(layers, states)):
            pending, delayed = None, isinstance(st, DelayedInput)
            if st is not None and (delayed != (self.delay > 0) or delayed and len(st.pending) != self.delay):
                got = f"a DelayedInput of {len(st.pending)} steps" if delayed else type(st).__name__
                raise ValueError(f"AnalogSubstrate.run: the state of layer {k} ({got}) is not from a chip with "
                                 f"delay={self.delay}; continue a run with the state a run on this substrate returned")
            if delayed:
                st, pending = st
            if self.delay:  # [d + T, B, N_in]: the inputs still on their way, then this run's
                first = h.new_zeros(self.delay, *h.shape[1:]) if pending is None else pending.to(h)
                h = torch.cat([first, h])
                h, pending = h[:-self.delay], h[-self.delay:]
            n = spec.weight.shape[0]
            sl = slice(offset, offset + n)
            offset += n
            w = spec.weight.to(dtype)
            w_rec = None
            if spec.w_rec is not None:  # one synapse array: forward rows, then the recurrent rows
                w, w_rec = self.chip_weights(k, torch.cat([w, spec.w_rec.to(dtype)], 1), sl).split(
                    [w.shape[1], n], dim=1)
            else:
                w = self.chip_weights(k, w, sl)
            x = sparse_linear(h, w, None, spec.max_density) if spec.max_density is not None else F.linear(h, w)
            c = self.neuron_constants(spec, sl, dtype, x.device)
            spiking = spec.spike_fn is not None
            drive = None if c.v_leak is None else (1 - c.decay_mem) * c.v_leak  # [N]
            if self.noise > 0:
                xi = self._noise(x.shape, self.noise, x)
                drive = xi if drive is None else xi.add_(drive)
            x = self._membrane_drive(x, c.decay_syn, drive)
            lo, hi = self.cadc_range if spiking else self.output_range
            if spiking:
                p = spec.params
                v_reset = torch.as_tensor(p.v_reset).to(x.device, dtype)
                params = LIFParams(c.decay_mem, c.decay_syn, c.v_th, v_reset, p.reset, p.detach_reset, p.refractory)
                s, out = lif_sequence(x, st, params, spec.spike_fn, self.backend, record=record_v,
                                      w_rec=None if w_rec is None else w_rec.contiguous())
                spikes.append(s)
                vs.append(self._read(out.v, sl, lo, hi) if record_v else None)
                final = last(out) if record_v else out
                h = s
            else:
                v_seq, final = li_sequence(x, st, LIParams(c.decay_mem, c.decay_syn), "auto")
                readout = self._read(v_seq, sl, lo, hi)
            if drive is not None:  # the kernels' current holds the last step's drive (module docstring)
                final = final._replace(i=final.i - (drive[-1] if drive.dim() == 3 else drive))
            finals.append(final if pending is None else DelayedInput(final, pending))
        return Observables(tuple(spikes), tuple(vs), readout, NetworkState(finals))

    def _read(self, v: Tensor, sl: slice, lo: float, hi: float) -> Tensor:
        """Sampled membrane ``[T, B, N]`` of the circuits ``sl`` through the readout model."""
        lsb = (hi - lo) / (2**self.cadc_bits - 1) if self.cadc_bits is not None else 1.0
        gain = 1.0 if self.cadc_gain == 0 else (1 + self.cadc_gain * self.e_cadc_gain[sl]).to(v.device, v.dtype)
        offset = 0.0 if self.cadc_offset == 0 else (self.cadc_offset * lsb * self.e_cadc_offset[sl]).to(v.device, v.dtype)
        noise = 0.0 if self.readout_noise == 0 else self._noise(v.shape, self.readout_noise * lsb, v)
        if self.cadc_bits is None and self.cadc_gain == 0 and self.cadc_offset == 0 and self.readout_noise == 0:
            return v
        return cadc_read(v, lo, hi, self.cadc_bits, gain, offset, noise)
