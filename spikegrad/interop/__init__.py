"""NIR export and import (the Neuromorphic Intermediate Representation, PyPI ``nir``).

NIR describes neurons in continuous time: a time constant ``tau`` in seconds, a resistance ``r``,
``v_leak``, ``v_threshold``, ``v_reset``, and no step. spikegrad neurons are discrete: per step,
``i = ds i + x``, ``v = dm v + i`` with ``d = exp(-1 / tau_steps)``
(:mod:`spikegrad.functional`). Moving between the two needs a step ``dt`` (seconds) and a rule,
the *discretization*; both are written into the graph's metadata and read back.

The contract, for a constant of ``tau_steps`` steps with per-step decay ``d`` (``tau_syn`` gives
``ds``, ``tau_mem`` gives ``dm``)::

                      exact                            euler
    tau (s)           tau_steps * dt                   dt / (1 - d)
    r  (membrane)     1 / (1 - dm)                     1 / (1 - dm)     (= tau_mem / dt)
    w_in (synapse)    1 / (1 - ds)                     1 / (1 - ds)     (= tau_syn / dt)
    r  (IF, I)        1 / dt                           1 / dt
    importer's decay  exp(-dt / tau)  == d             1 - dt / tau  == d

* ``"exact"``: one step of the continuous equation with its input held constant over the step
  (``v(t + dt) = e^{-dt/tau} v + (1 - e^{-dt/tau}) r I``) reproduces spikegrad's update; for the
  current-based neurons the current is advanced first and the membrane sees the new current, as
  in spikegrad. An importer that integrates exactly (exponential Euler) gets spikegrad's network.
* ``"euler"``: a forward-Euler importer (``v += dt / tau (v_leak - v + r I)``: snnTorch, Norse,
  SpikingJelly) gets spikegrad's decay and input gain exactly. None of these imports ``LI`` or
  ``CubaLI`` nodes (readouts): :func:`li_as_lif` makes them neurons that never fire.

The same graph read with the other rule has another decay: a per-step decay of 0.5 exported
"exact" (``tau = dt / ln 2``) becomes ``1 - ln 2 = 0.307`` under a forward-Euler importer.

Reset: NIR neurons reset to ``v_reset``; spikegrad's ``reset="zero"`` maps to it and
``reset="none"`` maps to a leaky integrator followed by a ``Threshold`` node. Subtractive reset
has no NIR form: exporting it raises a ValueError unless ``lossy_reset=True``, which exports it as
reset-to-zero with a warning. A recurrent LIF layer (``recurrent=N``) becomes a subgraph
``input -> neuron -> output`` with a ``Linear`` ``W_rec`` from the neuron back to itself (the
form snnTorch reads; the recurrent input arrives one step later, as in spikegrad). Refractory
periods, adaptive thresholds (ALIF), non-spiking surrogates (``spiking=False``) and modules
without a NIR node are refused with an error naming the module. Max-pooling of spikes (a
logical OR) is exported as ``SumPool2d`` then ``Threshold(0.5)``.

Weights and thresholds are exported as CPU arrays of ``dtype`` (float32 by default), from any
device and dtype; the derived time constants and gains (``tau``, ``r``, ``w_in``) are float64 so
that the per-step decays survive the round trip bit for bit. :func:`from_nir` builds a
:class:`NIRNetwork` of spikegrad modules (the neurons run on the fast kernels of
:mod:`spikegrad.kernels`); where a foreign graph's gain ``r * (1 - d)`` is not 1 it inserts a
:class:`Scale` before the neuron.

``nir`` (with numpy and h5py) is an optional dependency: ``pip install "spikegrad[nir]"``.

Modules, one purpose each; each imports only modules listed before it:
:mod:`.contract` (dt, the discretizations, the constants of the table above),
:mod:`.runtime` (the modules that run an imported graph: :class:`NIRNetwork`, :class:`Scale`,
:class:`Threshold`, :class:`SumPool2d`), :mod:`.importer` (:func:`from_nir`), :mod:`.export`
(:func:`to_nir` and the generic exporter, which reaches a model through ``walk``, dispatched on
the model's class, and a layer through ``export_layer``, dispatched on the layer's class), and one
module of walkers per model family: :mod:`.walk_models` (:mod:`spikegrad.models`),
:mod:`.walk_sharpening` (the Whetstone models) and :mod:`.walk_conversion` (the converted
networks). A new model family is exported by registering its walker, ``@walk.register(cls)``.
"""

from __future__ import annotations

from . import walk_conversion, walk_models, walk_sharpening  # noqa: F401  (each registers its family's walker)
from .contract import DISCRETIZATIONS, export_constants, import_decay
from .export import check_nir_export, li_as_lif, save_nir, to_nir
from .importer import from_nir, load_nir
from .runtime import NIRNetwork, Scale, SumPool2d, Threshold

__all__ = ["DISCRETIZATIONS", "to_nir", "from_nir", "save_nir", "load_nir", "check_nir_export", "li_as_lif",
           "NIRNetwork", "Scale", "Threshold", "SumPool2d", "export_constants", "import_decay"]
