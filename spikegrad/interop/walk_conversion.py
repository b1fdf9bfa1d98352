"""The walker of the converted networks (:mod:`spikegrad.conversion`) for :func:`~spikegrad.interop.to_nir`."""

from __future__ import annotations

import math

import numpy as np

from ..conversion.snn import SpikingNetwork
from .export import Exporter, _pair, walk

__all__ = ["walk_converted"]


@walk.register(SpikingNetwork)
def walk_converted(snn: SpikingNetwork, ex: Exporter, prefix: str = "") -> None:
    """Nodes of a converted SNN (:mod:`spikegrad.conversion`), built from its traced program (the
    caller's ``input_shape`` and ``prefix`` are not used)."""
    nir = ex.nir
    if snn.readout != "membrane":
        raise ValueError(f"to_nir: the converted network's readout={snn.readout!r} draws random output spikes; "
                         "NIR has no such node. Convert with readout='membrane'")
    nodes, shapes = snn.nodes(), snn.shapes
    current = next(i for i, n in enumerate(nodes) if n.kind == "input")
    for i, n in enumerate(nodes):
        if n.kind == "input" or shapes[i] is None:
            continue  # structural values (sizes) carry no signal
        who = f"{n.name} ({n.where})"
        data = [j for j in n.inputs if shapes[j] is not None]
        if data != [current]:
            raise ValueError(f"to_nir: {who} reads {[nodes[j].name for j in data]}; only chains (each layer "
                             "reading the previous one) export, not branches or additions")
        shape = tuple(shapes[current])
        for k, g in enumerate(n.gains):
            if g is not None:
                ex.add(f"{n.name}.gain", nir.Scale(scale=ex.array(g, shape)))
        p = n.params
        if n.kind == "conv":
            ex.add(n.name, ex.conv(who, p["weight"], p["bias"], dict(n.conf, groups=n.conf.get("groups", 1)),
                                       shape))
        elif n.kind == "linear":
            w = ex.array(p["weight"])
            ex.add(n.name, nir.Linear(weight=w) if p["bias"] is None else nir.Affine(weight=w,
                                                                                        bias=ex.array(p["bias"])))
        elif n.kind == "avgpool":
            c = n.conf
            k2, s2, p2 = (_pair(v) for v in (c["kernel_size"], c.get("stride") or c["kernel_size"], c["padding"]))
            if c.get("ceil_mode") or not c.get("count_include_pad", True) or c.get("divisor_override") is not None:
                raise ValueError(f"to_nir: {who}: only ceil_mode=False, count_include_pad=True and no "
                                 "divisor_override are supported")
            ex.add(n.name, nir.AvgPool2d(kernel_size=np.array(k2), stride=np.array(s2), padding=np.array(p2)))
        elif n.kind == "relu":
            ex.neuron(n.name, snn.if_layers[snn.neurons.index(i)], shape)
        elif n.kind == "call" and tuple(shapes[i]) == shape:
            pass  # a reshape to the same per-sample shape
        elif n.kind == "call" and len(shapes[i]) == 1 and shapes[i][0] == math.prod(shape):
            if len(shape) > 1:
                ex.add(n.name, nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
        else:
            why = {"maxpool": "its max-pooling passes the spikes of the input with the largest spike count so "
                              "far (a stateful gate NIR has no node for); convert an ANN with average pooling "
                              "(LeNet pool='avg')",
                   "scale": "an unfolded batch-norm (scale and shift) has no NIR node; fold it into the "
                            "preceding layer"}.get(n.kind, "NIR has no node for it")
            raise ValueError(f"to_nir: cannot export {who} of the converted network: {why}")
        current = i
    if current != snn.out:
        raise ValueError("to_nir: the converted network's output is not the end of its chain")
    out_shape = tuple(shapes[current])
    if snn.readout_gain is not None:
        ex.add("readout.gain", nir.Scale(scale=ex.array(snn.readout_gain, out_shape)))
    ex.add("readout", nir.I(r=np.full(out_shape, 1.0 / ex.dt)))  # the membrane readout sums the current
    # the chain ends here: set the shapes a walker through Exporter.module would have
    ex.in_shape = tuple(shapes[next(i for i, n in enumerate(nodes) if n.kind == "input")])
    ex.shape = out_shape
