"""One source for defaults: the config file of a class (``conf/<group>/<name>.yaml``) holds the
Python defaults of that class, so ``python train.py`` without an experiment and ``LIF()`` /
``SpikingMLP(sizes)`` in Python build the same thing; experiments hold what a task changes."""

import inspect
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_object

from spikegrad.surrogates import SURROGATES

CONF = Path(__file__).resolve().parents[1] / "conf"
# the files that describe one class each; model/rnn is SpikingMLP with recurrence switched on
CLASS_CONFIGS = sorted([*CONF.glob("neuron/*.yaml"), *CONF.glob("readout/*.yaml"), *CONF.glob("encoding/*.yaml"),
                        *CONF.glob("loss/*.yaml"), *CONF.glob("surrogate/*.yaml"),
                        CONF / "model/mlp.yaml", CONF / "model/conv.yaml", CONF / "model/rnn.yaml"])
PURPOSE = {"model/rnn.yaml": {"recurrent"}}  # keys a class file sets on purpose


def python_defaults(target: str) -> dict:
    obj = get_object(target)
    if target.startswith("spikegrad.surrogates."):
        return {"slope": obj.default_slope}
    return {k: p.default for k, p in inspect.signature(obj).parameters.items() if p.default is not p.empty}


@pytest.mark.parametrize("path", CLASS_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_class_config_holds_the_python_defaults(path):
    cfg = yaml.safe_load(path.read_text()) or {}
    if "_target_" not in cfg:
        pytest.skip("no class")
    defaults = python_defaults(cfg["_target_"])
    skip = PURPOSE.get(f"{path.parent.name}/{path.name}", set())
    checked = 0
    for key, value in cfg.items():
        if key.startswith("_") or key in skip or key not in defaults or isinstance(value, str) and "${" in value:
            continue
        default = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
        assert value == default, f"{path.name}: {key}={value!r} but the Python default is {default!r}"
        checked += 1
    assert checked or cfg["_target_"].endswith(("TimeFirst", "CrossEntropy")) or not defaults


@pytest.mark.parametrize("name", ["randman", "smnist"])
def test_data_config_lists_every_dataclass_field_with_its_default(name):
    import dataclasses

    cfg = yaml.safe_load((CONF / "data" / f"{name}.yaml").read_text())
    fields = {f.name: f.default for f in dataclasses.fields(get_object(cfg.pop("_target_")))}
    assert cfg == fields  # the file documents every setting and its default


def test_every_surrogate_class_default_is_its_config():
    for name, cls in SURROGATES.items():
        path = CONF / "surrogate" / f"{name}.yaml"
        assert yaml.safe_load(path.read_text())["slope"] == cls.default_slope, name


def test_mnist16_states_what_it_changes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mnist16"])
    assert (cfg.neuron.tau_mem, cfg.neuron.tau_syn, cfg.readout.tau_mem, cfg.readout.tau_syn) == (8.0, 4.0, 8.0, 4.0)
    assert cfg.encoding.tau == 8.0 and cfg.model.record_v is False and cfg.model.sparse_input is True
