from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from spikegrad.surrogates import SURROGATES

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def cfg_for(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_registry_and_surrogate_configs_agree():
    files = {p.stem for p in (CONF / "surrogate").glob("*.yaml")}
    assert files == set(SURROGATES)
    for name in files:
        s = instantiate(cfg_for(f"surrogate={name}").surrogate)
        assert type(s) is SURROGATES[name]


def test_required_experiments_exist():
    assert {"mnist16", "fashion16", "mnist16_sparse"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment):
    cfg = cfg_for(f"experiment={experiment}")
    model = instantiate(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    data = instantiate(cfg.data)
    assert data.batch_size > 0
    instantiate(cfg.loss)
    if cfg.encoding is not None:
        assert instantiate(cfg.encoding).T == cfg.T


def test_mnist16_is_the_brainscales_network():
    cfg = cfg_for("experiment=mnist16")
    model = instantiate(cfg.model)
    assert model.sizes == [256, 246, 10] and cfg.data.size == 16
    assert type(model.neurons[0]).__name__ == "LIF" and type(model.neurons[1]).__name__ == "LI"
    assert cfg.encoding._target_.endswith("LatencyEncoder")


def test_documented_overrides_apply():
    cfg = cfg_for("experiment=mnist16", "trainer.epochs=3", "seed=7", "data.root=/tmp/x", "data.subset=100",
                  "surrogate=atan", "surrogate.slope=4", "device=cpu")
    assert (cfg.trainer.epochs, cfg.seed, cfg.data.root, cfg.data.subset, cfg.device) == (3, 7, "/tmp/x", 100, "cpu")
    model = instantiate(cfg.model)
    s = model.neurons[0].surrogate
    assert type(s).__name__ == "ATan" and float(s.slope) == 4.0


def test_each_layer_gets_its_own_surrogate():
    model = instantiate(cfg_for("model.sizes=[256,32,32,10]").model)
    a, b = model.neurons[0].surrogate, model.neurons[1].surrogate
    assert a is not b and a.slope.data_ptr() != b.slope.data_ptr()


def test_unknown_choice_is_rejected_with_the_options():
    with pytest.raises(Exception, match="fast_sigmoid"):
        cfg_for("surrogate=nope")
    with pytest.raises(Exception, match="epoch"):
        cfg_for("trainer.epoch=3")


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.startswith("whetstone")])
def test_whetstone_experiments_are_published_whetstone(experiment):
    cfg = cfg_for(f"experiment={experiment}")
    model = instantiate(cfg.model)
    sharpener = instantiate(cfg.sharpen)(model)
    acts = [m for m in model.modules() if hasattr(m, "min_width")]
    assert acts and all(a.min_width == 0.0 for a in acts)        # exact gradient of the current activation
    assert sharpener.stop_when_sharp                              # training ends once every layer is sharp
    assert type(model.decoder).__name__ == "SoftmaxDecoder"       # softmax((2o - 1)(2K - 1)^T), random key
    key = model.decoder.key
    assert key.shape == (10, 100) and key.sum(1).tolist() == [10.0] * 10 and key.sum(0).max() > 1  # overlapping
    ste = cfg_for(f"experiment={experiment}", "sharpen.gradient=ste", "sharpen.stop_when_sharp=false",
                  "model.decoder=nhot")
    model = instantiate(ste.model)
    sharpener = instantiate(ste.sharpen)(model)
    assert all(a.min_width == 1.0 for a in model.modules() if hasattr(a, "min_width"))
    assert not sharpener.stop_when_sharp and type(model.decoder).__name__ == "NHotDecoder"


def test_every_sharpen_choice_builds_on_a_whetstone_model():
    for name in ("simple", "scheduled", "adaptive"):
        cfg = cfg_for("experiment=whetstone_mnist", f"sharpen={name}")
        sharpener = instantiate(cfg.sharpen)(instantiate(cfg.model))
        assert type(sharpener).__name__.lower().startswith(name) and sharpener.gradient == "exact"
    cfg = cfg_for("experiment=whetstone_mnist", "sharpen=adaptive")
    assert (cfg.sharpen.cz_rate, cfg.sharpen.sig_increase, cfg.sharpen.patience) == (0.126, 0.15, 1)  # Whetstone's


def test_lower_rate_regularizer_is_per_sample_by_default():
    for experiment in ("mnist16", "mnist16_sparse"):
        lower = instantiate(cfg_for(f"experiment={experiment}").regularizer.lower)
        assert lower.form == "per_sample"
    cfg = cfg_for("experiment=mnist16", "regularizer.lower.form=batch_mean")
    assert instantiate(cfg.regularizer.lower).form == "batch_mean"
