"""Whetstone sharpening: activations, schedules, decoder, export, annealing, TensorBoard, analysis."""

import io
import math
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikegrad.neurons import LIF
from spikegrad.sharpening import (AdaptiveSharpener, NHotDecoder, ScheduledSharpener, SharpBReLU, Sharpenable,
                                  SharpSigmoid, SimpleSharpener, SoftmaxDecoder, SurrogateAnnealer, ThresholdLayer,
                                  WhetstoneConvNet, WhetstoneMLP, activation_figure, agreement, compare, export_binary,
                                  log_activation_figure, log_sharpness, random_key, sharpen_act, sharpenable_layers,
                                  whetstone_analysis)
from spikegrad.sharpening.export import fold_threshold
from spikegrad.surrogates import ATan

ACTS = [SharpBReLU, SharpSigmoid]


def sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def layers(n):
    return [SharpBReLU() for _ in range(n)]


def values(schedule):
    return [round(s, 10) for s in schedule.sharpness]


# ------------------------------------------------------------------------------ activations
def whetstone_brelu(x: float, s: float) -> float:
    """Spiking_BRelu of Severa et al. (2019), written out for one number (step strict, as spikegrad's)."""
    if s == 1.0:
        return float(x > 0.5)
    return min(max((x - 0.5) / (1.0 - s + 0.001) + 0.5, 0.0), 1.0)


def whetstone_sigmoid(x: float, s: float) -> float:
    """Spiking_Sigmoid of Severa et al. (2019), written out for one number (step strict, as spikegrad's)."""
    if s == 1.0:
        return float(x > 0.0)
    k = 4.0 * math.log(2.0 + 3.0 ** 0.5) / (1.0 - s + 0.001)
    return 1.0 / (1.0 + math.exp(min(max(-x * k, -40.0), 40.0)))


REFERENCE = {SharpBReLU: whetstone_brelu, SharpSigmoid: whetstone_sigmoid}


@pytest.mark.parametrize("cls", ACTS)
@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_activations_match_whetstone_formulas(cls, s):
    x = torch.linspace(-1.5, 2.0, 351, dtype=torch.float64)
    act = cls(sharpness=s).double()
    stored = act.get_sharpness()  # the float32 buffer's value of s
    ref = torch.tensor([REFERENCE[cls](v, stored) for v in x.tolist()], dtype=torch.float64)
    y = act(x)
    torch.testing.assert_close(y, ref, atol=1e-15, rtol=1e-12)


def test_brelu_hand_values():
    act = SharpBReLU()
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    assert act(x).tolist() == pytest.approx([0.0, 0.5 - 0.5 / 1.001, 0.5, 0.5 + 0.5 / 1.001, 1.0])
    act.set_sharpness(0.5)                                                   # ramp of width 0.5 + eps
    x = torch.tensor([0.0, 0.2495, 0.375, 0.5, 0.625, 0.7505, 1.0], dtype=torch.float64)
    assert act(x).tolist() == pytest.approx([0.0, 0.0, 0.5 - 0.125 / 0.501, 0.5, 0.5 + 0.125 / 0.501, 1.0, 1.0])


def test_sigmoid_hand_values():
    act = SharpSigmoid().double()
    knee = math.log(2 + math.sqrt(3))           # k x at the roots of the sigmoid's third derivative
    w = 1.0 + 1e-3                               # s = 0: width 1 + eps, knees at x = +-w / 4
    y = act(torch.tensor([-w / 4, 0.0, w / 4], dtype=torch.float64)).tolist()
    assert y == pytest.approx([sig(-knee), 0.5, sig(knee)], abs=1e-12)
    assert sig(knee) == pytest.approx((3 + math.sqrt(3)) / 6)
    act.set_sharpness(0.75)                      # k = 4 ln(2 + sqrt 3) / 0.251
    y = act(torch.tensor([-0.1, 0.0, 0.05], dtype=torch.float64)).tolist()
    assert y == pytest.approx([sig(-0.4 * knee / 0.251), 0.5, sig(0.2 * knee / 0.251)], abs=1e-12)


@pytest.mark.parametrize("cls", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_full_sharpness_is_exact_step(cls, dtype):
    act = cls(sharpness=1.0)
    c = cls.center
    if c == 0.5:
        down, up = 0.5 - torch.finfo(dtype).eps / 4, 0.5 + torch.finfo(dtype).eps / 2  # neighbours of 0.5
    else:
        down, up = -torch.finfo(dtype).tiny, torch.finfo(dtype).tiny
    x = torch.tensor([c - 3.0, c - 0.5, down, c, up, c + 0.5, c + 7.0], dtype=dtype)
    assert x[2] < c < x[4]
    y = act(x)
    assert y.dtype == dtype
    assert y.tolist() == (x > c).to(dtype).tolist()
    assert y.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]                 # the center itself maps to 0


@pytest.mark.parametrize("kind", ["brelu", "sigmoid"])
@pytest.mark.parametrize("s", [0.0, 0.3, 0.9, 0.999])
def test_exact_gradient_is_the_derivative_of_the_current_activation(kind, s):
    c = 0.5 if kind == "brelu" else 0.0
    x = c + torch.tensor([-0.9, -0.3, -0.2, -0.1, 0.0, 0.07, 0.2, 0.45, 1.4], dtype=torch.float64) * (1 - s + 1e-3)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(sharpen_act(x, s, kind).sum(), x)             # default min_width 0: exact
    h = 1e-7 * (1 - s + 1e-3)
    with torch.no_grad():
        fd = (sharpen_act(x + h, s, kind) - sharpen_act(x - h, s, kind)) / (2 * h)
    torch.testing.assert_close(g, fd, atol=1e-5 / (1 - s + 1e-3), rtol=1e-5)
    if kind == "brelu":  # ramp of width 1 - s + eps: edges at +-0.5 (1 - s + eps); probes at -0.9 ... 1.4 of it
        slope = 1 / (1 - s + 1e-3)
        assert g.tolist() == pytest.approx([0, slope, slope, slope, slope, slope, slope, slope, 0])


def test_gradient_at_full_sharpness_uses_min_width():
    x = torch.tensor([0.35, 0.45, 0.5, 0.55, 0.65], requires_grad=True)
    for s in (0.9, 1.0):  # width 1 - s <= min_width: a boxcar of width 0.2 + eps and height 1 / (0.2 + eps)
        (g,) = torch.autograd.grad(SharpBReLU(sharpness=s, min_width=0.2)(x).sum(), x)
        assert g.tolist() == pytest.approx([0.0, 1 / 0.201, 1 / 0.201, 1 / 0.201, 0.0])
    (g,) = torch.autograd.grad(SharpBReLU(sharpness=1.0)(x).sum(), x)         # default: exact, no gradient
    assert g.tolist() == [0.0] * 5
    (g,) = torch.autograd.grad(SharpSigmoid(sharpness=1.0)(x - 0.5).sum(), x)
    assert g.tolist() == [0.0] * 5
    (g,) = torch.autograd.grad(SharpBReLU(sharpness=1.0, min_width="ste")(x).sum(), x)  # STE of the s = 0 ramp
    assert g.tolist() == pytest.approx([1 / 1.001] * 5)
    k = 4 * math.log(2 + math.sqrt(3)) / 0.501
    (g,) = torch.autograd.grad(SharpSigmoid(sharpness=1.0, min_width=0.5)(x - 0.5).sum(), x)
    assert g.tolist() == pytest.approx([k * sig(k * (v - 0.5)) * (1 - sig(k * (v - 0.5))) for v in x.tolist()])


def test_gradient_names():
    act = SharpBReLU(min_width="ste")
    assert act.min_width == 1.0
    act.set_gradient("exact")
    assert act.min_width == 0.0
    act.set_gradient(0.25)
    assert act.min_width == 0.25
    with pytest.raises(ValueError, match="gradient must be one of \\['exact', 'ste'\\]"):
        act.set_gradient("straight")


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), "0.5", True])
def test_invalid_sharpness(bad):
    act = SharpBReLU()
    with pytest.raises(ValueError, match="sharpness must be a number in \\[0, 1\\]"):
        act.set_sharpness(bad)
    with pytest.raises(ValueError, match="sharpness"):
        SharpSigmoid(sharpness=bad)
    assert act.get_sharpness() == 0.0


def test_invalid_min_width():
    with pytest.raises(ValueError, match="min_width"):
        SharpBReLU(min_width=1.5)


def test_changing_sharpness_does_not_recompile():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model = nn.Sequential(nn.Linear(3, 4), SharpBReLU())
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = torch.randn(5, 3)
    for s in (0.0, 0.5, 1.0):
        model[1].set_sharpness(s)
        torch.testing.assert_close(compiled(x), model(x), atol=0, rtol=0)
    assert len(graphs) == 1
    assert set(compiled(x).unique().tolist()) <= {0.0, 1.0}


def test_sharpenable_layers_in_module_order():
    model = WhetstoneConvNet(in_shape=(1, 8, 8), channels=(2, 3), hidden=(5,), n_classes=2, n_hot=2)
    found = sharpenable_layers(model)
    assert len(found) == 4
    assert found == [m for m in model.layers if isinstance(m, SharpBReLU)]


# ------------------------------------------------------------------------------ schedules
def feed(schedule, losses, batches=0):
    """Run epochs with the given losses; return the sharpness after each epoch end."""
    out = []
    for epoch, loss in enumerate(losses):
        for b in range(batches):
            schedule.on_batch_end(epoch, b, loss)
        schedule.on_epoch_end(epoch, {"train_loss": loss, "val_loss": loss, "val_accuracy": 1.0 - loss / 10})
        out.append(values(schedule))
    return out


def test_simple_bottom_up_epoch_mode():
    sh = SimpleSharpener(layers(2), start_epoch=1, duration=2)
    assert values(sh) == [0, 0]
    assert feed(sh, [1.0] * 6) == [[0, 0], [0.5, 0], [1, 0], [1, 0.5], [1, 1], [1, 1]]
    assert sh.done
    # epoch 1 still trained at sharpness 0 (its step lands at its end): the last soft epoch
    assert sh.before == {"epoch": 1.0, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.9}


def test_simple_uniform_from_epoch_zero():
    acts = layers(3)
    sh = SimpleSharpener(acts, start_epoch=0, duration=4, mode="uniform")
    assert feed(sh, [1.0] * 4) == [[0.25] * 3, [0.5] * 3, [0.75] * 3, [1.0] * 3]
    assert [a.get_sharpness() for a in acts] == [1.0] * 3
    assert sh.before["epoch"] == 0.0  # epoch 0 trained at sharpness 0, its step came at its end
    sh = SimpleSharpener(layers(3), start_epoch=0, duration=4, mode="uniform", per_batch=True, batches_per_epoch=2)
    assert feed(sh, [1.0] * 4, batches=2)[0] == [0.25] * 3
    assert sh.before is None  # per batch, sharpening started inside epoch 0


def test_simple_per_batch_inside_epoch_zero():
    sh = SimpleSharpener(layers(2), start_epoch=0, duration=1, per_batch=True, batches_per_epoch=4)
    seen = []
    for epoch in range(2):
        for b in range(4):
            sh.on_batch_end(epoch, b, 1.0)
            seen.append(values(sh))
        sh.on_epoch_end(epoch, {"train_loss": 1.0})
    assert seen == [[0.25, 0], [0.5, 0], [0.75, 0], [1, 0], [1, 0.25], [1, 0.5], [1, 0.75], [1, 1]]


def test_simple_per_batch_learns_batch_count():
    sh = SimpleSharpener(layers(1), start_epoch=1, duration=0.5, per_batch=True)
    with pytest.raises(ValueError, match="batches_per_epoch"):
        SimpleSharpener(layers(1), start_epoch=0, per_batch=True).on_batch_end(0, 0, 1.0)
    assert feed(sh, [1.0], batches=4) == [[0]]  # nothing to do in epoch 0: no count needed
    assert sh.batches_per_epoch == 4
    sh.on_batch_end(1, 0, 1.0)
    assert values(sh) == [0.5]


@pytest.mark.parametrize("kw, match", [({"start_epoch": -1}, "start_epoch"), ({"duration": 0}, "duration"),
                                       ({"mode": "top_down"}, "mode"), ({"batches_per_epoch": 0}, "batches_per_epoch")])
def test_simple_invalid_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        SimpleSharpener(layers(2), **kw)


def test_scheduled_windows():
    sh = ScheduledSharpener(layers(3), windows=[(0, 2), (2, 3), (5, 6)])
    assert feed(sh, [1.0] * 6) == [[0.5, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1]]
    assert sh.done
    gen = ScheduledSharpener(layers(3), start=1, duration=2, gap=1)
    assert gen.windows == [(1, 3), (4, 6), (7, 9)]


def test_scheduled_per_batch():
    sh = ScheduledSharpener(layers(2), windows=[(1, 2), (0, 1)], per_batch=True, batches_per_epoch=2)
    seen = []
    for epoch in range(2):
        for b in range(2):
            sh.on_batch_end(epoch, b, 1.0)
            seen.append(values(sh))
        sh.on_epoch_end(epoch, {})
    assert seen == [[0, 0.5], [0, 1], [0.5, 1], [1, 1]]  # windows need not follow layer order


@pytest.mark.parametrize("windows, match", [
    ([(0, 2), (1, 3)], "overlap"), ([(3, 5), (0, 4)], "overlap"), ([(0, 2), (2, 2)], "empty"),
    ([(0, 2), (3, 1)], "empty"), ([(-1, 2), (2, 3)], "< 0"), ([(0, 1)], "2 sharpenable layers"),
    ([(0, 1, 2), (2, 3)], "pair")])
def test_scheduled_invalid_windows(windows, match):
    with pytest.raises(ValueError, match=match):
        ScheduledSharpener(layers(2), windows=windows)


def test_scheduled_rejects_uniform():
    with pytest.raises(ValueError, match="uniform"):
        ScheduledSharpener(layers(2), mode="uniform")


# Port of the logic of Whetstone's AdaptiveSharpener Keras callback (sandialabs/Whetstone,
# whetstone/callbacks.py), written for these tests as one loop over epochs and batches: it yields the
# per-layer sharpness after every batch and the epoch at whose end Keras would stop training.
def whetstone_adaptive(losses, n_batches, n_layers, bottom_up=True, min_init_epochs=10, rate=0.25, cz_rate=0.126,
                       critical=0.75, first_layer_relative_rate=1.0, patience=1, sig_increase=0.15,
                       sig_decrease=0.15):
    sharpness = [0.0] * n_layers
    on, reference, without_improvement, batches_per_epoch, hold = False, 1e6, 0, None, False
    trace, stop_epoch = [], None
    for epoch, loss in enumerate(losses):
        for batch in range(n_batches):                       # on_batch_end
            if on:
                open_layers = [i for i in range(n_layers) if sharpness[i] < 1.0]
                if not open_layers:
                    on = False
                elif bottom_up and not hold:
                    i = open_layers[0]
                    step = cz_rate if sharpness[i] >= critical else rate
                    step *= first_layer_relative_rate if i == 0 else 1.0
                    sharpness[i] = min(1.0, sharpness[i] + step * (1.0 / float(batches_per_epoch)))
                    sharpness[i] = 1.0 if 1.0 - sharpness[i] < 0.001 else sharpness[i]
                    hold = sharpness[i] == 1.0
                elif not bottom_up:
                    step = cz_rate if sharpness[0] >= critical else rate
                    common = min(1.0, sharpness[0] + step * (1.0 / float(batches_per_epoch)))
                    sharpness = [1.0 if 1.0 - common < 1e-6 else common] * n_layers
            trace.append(list(sharpness))
        if all(s == 1.0 for s in sharpness):                 # on_epoch_end: the base class stops training
            stop_epoch = epoch
            break
        hold = False
        relative = (loss - reference) / reference
        worse, better = relative >= sig_increase, relative < sig_increase and relative <= -sig_decrease
        if epoch + 1 >= min_init_epochs:
            without_improvement = 0 if better else without_improvement + 1
            reference = loss if better else reference
            if on and worse:
                on, reference, without_improvement = False, loss, 0
            elif not on and without_improvement > patience:
                on, reference, without_improvement = True, loss, 0
        else:
            reference = loss
        if epoch == 0:
            batches_per_epoch = n_batches
    return trace, stop_epoch


def run_adaptive(sharpener, losses, n_batches):
    """Drive a spikegrad schedule like fit does; same outputs as :func:`whetstone_adaptive`."""
    trace, stop_epoch = [], None
    for epoch, loss in enumerate(losses):
        for b in range(n_batches):
            sharpener.on_batch_end(epoch, b, loss)
            trace.append(sharpener.values())
            assert sharpener.sharpness == pytest.approx(trace[-1], abs=1e-7)  # applied to the layers (float32)
        sharpener.on_epoch_end(epoch, {"train_loss": loss, "val_loss": None, "val_accuracy": 0.5})
        if sharpener.stop_training:
            stop_epoch = epoch
            break
    return trace, stop_epoch


E = 60
LOSS_SCRIPTS = {
    "flat": [1.0] * E,
    "falling": [2.0 * 0.8 ** e for e in range(E)],                                 # improves 20% per epoch
    "slowly_rising": [1.0 * 1.04 ** e for e in range(E)],                          # degrades every ~4 epochs
    "spiking": [1.0 + (0.5 if e % 5 == 4 else 0.0) for e in range(E)],             # a 50% spike every 5th epoch
    "recovering": [2.0 - 0.12 * e if e < 10 else 0.8 + 0.1 * (e - 10) if e < 16 else max(1.4 - 0.15 * (e - 16), 0.3)
                   for e in range(E)],                                             # falls, rises, falls again
    "noisy": (torch.rand(E, generator=torch.Generator().manual_seed(5)) + 0.5).tolist(),
}
ADAPTIVE_SETTINGS = [
    dict(),                                                                         # Whetstone's defaults
    dict(min_init_epochs=3, patience=0, rate=0.4, cz_rate=0.2, critical=0.6, first_layer_relative_rate=0.5),
    dict(min_init_epochs=2, patience=2, sig_increase=0.3, sig_decrease=0.05),
]


@pytest.mark.parametrize("script", sorted(LOSS_SCRIPTS))
@pytest.mark.parametrize("settings", range(len(ADAPTIVE_SETTINGS)))
@pytest.mark.parametrize("mode", ["bottom_up", "uniform"])
def test_adaptive_matches_whetstone_callback(script, settings, mode):
    kw = ADAPTIVE_SETTINGS[settings]
    losses, n_batches = LOSS_SCRIPTS[script], 7
    want, want_stop = whetstone_adaptive(losses, n_batches, 3, bottom_up=mode == "bottom_up", **kw)
    got, got_stop = run_adaptive(AdaptiveSharpener(layers(3), mode=mode, **kw), losses, n_batches)
    assert got_stop == want_stop
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a == pytest.approx(b, abs=1e-12), f"batch {k} (epoch {k // n_batches})"
    if script in ("flat", "noisy"):
        assert got_stop is not None  # these finish within the script


def test_adaptive_flat_loss_by_hand():
    """Flat loss, min_init_epochs=3, patience=1: watched from epoch 2; 2 stale epochs > 1 start it at epoch 3."""
    sh = AdaptiveSharpener(layers(2), min_init_epochs=3, patience=1, rate=0.5, cz_rate=0.25, critical=0.5)
    trace, stop = run_adaptive(sh, [1.0] * 12, 4)
    assert trace[4 * 4 - 1] == [0.0, 0.0]                           # epochs 0-3 train unsharpened
    assert trace[4 * 4:4 * 5] == [[0.125, 0], [0.25, 0], [0.375, 0], [0.5, 0]]     # epoch 4: rate / 4 per batch
    assert trace[4 * 5:4 * 6] == [[0.5625, 0], [0.625, 0], [0.6875, 0], [0.75, 0]]  # critical zone: cz_rate / 4
    assert trace[4 * 7 - 1] == [1.0, 0.0]                          # layer 0 completes on epoch 6's last batch
    assert trace[4 * 7] == [1.0, 0.125]                            # the next layer starts in epoch 7
    assert trace[4 * 10 - 1] == [1.0, 1.0] and stop == 9 and sh.done and sh.stop_training  # epochs 7-9: layer 1


def test_adaptive_waits_for_epoch_end_after_a_layer():
    sh = AdaptiveSharpener(layers(2), min_init_epochs=1, patience=0, rate=0.75, cz_rate=0.75, critical=1.0)
    trace, _ = run_adaptive(sh, [1.0] * 6, 4)
    # epoch 0 ends: improved on 1e6; epoch 1 ends: stale 1 > 0, start; epoch 2 sharpens 0.1875 per batch
    assert trace[8:12] == [[0.1875, 0], [0.375, 0], [0.5625, 0], [0.75, 0]]
    assert trace[12:16] == [[0.9375, 0], [1, 0], [1, 0], [1, 0]]        # completes, the next layer waits
    assert trace[16:20] == [[1, 0.1875], [1, 0.375], [1, 0.5625], [1, 0.75]]


def test_adaptive_degradation_stops_until_the_next_plateau():
    sh = AdaptiveSharpener(layers(1), min_init_epochs=1, patience=1, rate=0.1, cz_rate=0.1)
    losses = [1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.2, 1.2]
    seen = []
    for epoch, loss in enumerate(losses):
        sh.on_batch_end(epoch, 0, loss)
        sh.on_epoch_end(epoch, {"train_loss": loss})
        seen.append((sh.sharpening, round(sh.values()[0], 10), sh.reference_loss))
    assert seen == [(False, 0, 1.0), (False, 0, 1.0), (True, 0, 1.0),       # 2 stale epochs > patience 1: start
                    (True, 0.1, 1.0),                                       # flat: keep going (ref stays 1.0)
                    (False, 0.2, 1.2),                                      # +20% >= 15%: stop, ref 1.2
                    (False, 0.2, 1.2), (True, 0.2, 1.2), (True, 0.3, 1.2)]  # plateau again: resume


def test_adaptive_invalid_arguments():
    for kw, match in (({"min_init_epochs": 0}, "min_init_epochs"), ({"cz_rate": 0.0}, "cz_rate"),
                      ({"first_layer_relative_rate": -1.0}, "first_layer_relative_rate"),
                      ({"sig_increase": 0}, "sig_increase"), ({"patience": -1}, "patience")):
        with pytest.raises(ValueError, match=match):
            AdaptiveSharpener(layers(2), **kw)


def test_adaptive_missing_monitor():
    sh = AdaptiveSharpener(layers(1), monitor="val_loss")
    with pytest.raises(ValueError, match="monitor='val_loss'"):
        sh.on_epoch_end(0, {"train_loss": 1.0, "val_loss": None})


@pytest.mark.parametrize("make", [
    lambda acts: SimpleSharpener(acts, start_epoch=1, duration=1.5, per_batch=True),
    lambda acts: AdaptiveSharpener(acts, min_init_epochs=1, patience=0, rate=0.9, critical=0.6, cz_rate=0.7),
    lambda acts: AdaptiveSharpener(acts, min_init_epochs=1, patience=1, rate=0.6, sig_increase=0.5),
])
def test_bottom_up_order_holds_for_any_losses(make):
    sh = make(layers(4))
    g = torch.Generator().manual_seed(1)
    for epoch in range(60):
        losses = (torch.rand(3, generator=g) * 2).tolist()
        for b, loss in enumerate(losses):
            sh.on_batch_end(epoch, b, loss)
            s = sh.sharpness
            assert all(s[i + 1] == 0 or s[i] == 1 for i in range(3)), s
        sh.on_epoch_end(epoch, {"train_loss": losses[-1]})
    assert sh.done and sh.sharpness == [1.0] * 4


@pytest.mark.parametrize("make", [
    lambda m: SimpleSharpener(m, start_epoch=1, duration=1.5, per_batch=True),
    lambda m: ScheduledSharpener(m, windows=[(0, 2), (3, 4), (4, 6)], per_batch=True, batches_per_epoch=3),
    lambda m: AdaptiveSharpener(m, min_init_epochs=2, patience=0, rate=0.5, cz_rate=0.3, critical=0.5),
    lambda m: AdaptiveSharpener(m, min_init_epochs=1, patience=0, rate=0.5, mode="uniform"),
])
def test_state_round_trips_through_checkpoint(make):
    losses = LOSS_SCRIPTS["recovering"]

    def run(sh, epochs):
        out = []
        for epoch in epochs:
            for b in range(3):
                sh.on_batch_end(epoch, b, losses[epoch])
                out.append(values(sh))
            sh.on_epoch_end(epoch, {"train_loss": losses[epoch]})
            out.append(values(sh))
        return out

    ref = make(WhetstoneMLP([4, 5, 3], n_classes=2, n_hot=2))
    first = run(ref, range(6))
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    model = WhetstoneMLP([4, 5, 3], n_classes=2, n_hot=2)
    resumed = make(model)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert [a.get_sharpness() for a in sharpenable_layers(model)] == ref.sharpness  # re-applied on load
    assert resumed.state_dict() == ref.state_dict()
    assert run(resumed, range(6, 20)) == run(ref, range(6, 20))
    assert first[-1] != [0.0, 0.0, 0.0]  # the run had started sharpening before the checkpoint


def test_load_state_dict_mismatch():
    state = SimpleSharpener(layers(2)).state_dict()
    with pytest.raises(ValueError, match="SimpleSharpener"):
        AdaptiveSharpener(layers(2)).load_state_dict(state)
    with pytest.raises(ValueError, match="n_layers"):
        SimpleSharpener(layers(3)).load_state_dict(state)


@pytest.mark.parametrize("make", [
    lambda acts, **kw: SimpleSharpener(acts, **kw),
    lambda acts, **kw: ScheduledSharpener(acts, **kw),
    lambda acts, **kw: AdaptiveSharpener(acts, **kw),
])
def test_schedules_set_the_gradient_of_their_layers(make):
    acts = [SharpBReLU(min_width=0.3), SharpSigmoid(min_width=0.3)]
    make(acts)
    assert [a.min_width for a in acts] == [0.0, 0.0]            # default: Whetstone's exact gradient
    make(acts, gradient="ste")
    assert [a.min_width for a in acts] == [1.0, 1.0]
    acts[0].set_gradient(0.3)
    make(acts, gradient=None)                                    # None: left as built
    assert [a.min_width for a in acts] == [0.3, 1.0]
    with pytest.raises(ValueError, match="gradient must be one of"):
        make(acts, gradient="straight_through")


def test_stop_training_once_every_layer_is_sharp():
    sh = SimpleSharpener(layers(2), start_epoch=1, duration=1)
    stops = []
    for epoch in range(4):
        sh.on_epoch_end(epoch, {"train_loss": 1.0})
        stops.append(sh.stop_training)
    assert stops == [False, False, True, True] and sh.done      # epochs 1 and 2 sharpen the two layers
    keep = SimpleSharpener(layers(2), start_epoch=1, duration=1, stop_when_sharp=False)
    feed(keep, [1.0] * 4)
    assert keep.done and not keep.stop_training
    model = nn.Sequential(LIF(surrogate=ATan(slope=2.0)))
    annealer = SurrogateAnnealer(model, partial(SimpleSharpener, duration=1), 1.0, 4.0)
    annealer.on_epoch_end(0, {"train_loss": 1.0})
    assert annealer.done and not annealer.stop_training        # annealing never ends training


def test_fit_stops_when_sharp():
    from spikegrad.losses import CrossEntropy
    from spikegrad.training import fit

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 6, generator=g), torch.randint(0, 2, (32,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = WhetstoneMLP([6, 8], n_classes=2, n_hot=2)
    sharpener = SimpleSharpener(model, start_epoch=1, duration=0.5, per_batch=True)
    res = fit(model, loader, None, None, torch.optim.Adam(model.parameters(), 1e-2), CrossEntropy(), epochs=10,
              sharpener=sharpener, progress=False, log_samples=0)
    assert res["epochs"] == 2 and sharpener.done                # 2 layers x 0.5 epochs from epoch 1: done in epoch 1
    model = WhetstoneMLP([6, 8], n_classes=2, n_hot=2)
    sharpener = SimpleSharpener(model, start_epoch=1, duration=0.5, per_batch=True, stop_when_sharp=False)
    res = fit(model, loader, None, None, torch.optim.Adam(model.parameters(), 1e-2), CrossEntropy(), epochs=3,
              sharpener=sharpener, progress=False, log_samples=0)
    assert res["epochs"] == 3


def test_schedule_needs_sharpenable_layers():
    with pytest.raises(ValueError, match="no sharpenable layers"):
        SimpleSharpener(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


# ------------------------------------------------------------------------------ decoder and models
def test_nhot_decoder():
    dec = NHotDecoder(3, 2)
    code = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]])
    assert dec(code).tolist() == [[1.0, 1.0, 2.0], [0.0, 2.0, 0.0]]
    assert dec.encode(torch.tensor([2, 0])).tolist() == [[0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="not divisible by n_classes=3"):
        dec(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="n_hot=3, not 2"):
        dec(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="n_hot"):
        NHotDecoder(3, 0)


def test_random_key():
    key = random_key(10, 100, generator=torch.Generator().manual_seed(0))
    assert key.shape == (10, 100) and key.dtype == torch.float32
    assert set(key.unique().tolist()) == {0.0, 1.0} and key.sum(1).tolist() == [10.0] * 10
    assert torch.equal(key, random_key(10, 100, generator=torch.Generator().manual_seed(0)))   # seeded
    assert not torch.equal(key, random_key(10, 100, generator=torch.Generator().manual_seed(1)))
    assert key.sum(0).max() > 1   # overlapping (Whetstone's default): some unit serves two classes
    disjoint = random_key(10, 105, overlapping=False, generator=torch.Generator().manual_seed(0))
    assert disjoint.sum(1).tolist() == [10.0] * 10 and disjoint.sum(0).max() == 1   # 105 // 10 = 10 per class
    assert torch.linalg.matrix_rank(disjoint) == 10
    with pytest.raises(ValueError, match="width=3 < n_classes=4"):
        random_key(4, 3)


def test_softmax_decoder_known_values():
    key = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    dec = SoftmaxDecoder(key)
    code = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    # each unit adds +1 where code and key agree and -1 where they differ
    ref = [[sum(1.0 if o == k else -1.0 for o, k in zip(row, kr)) for kr in key.tolist()] for row in code.tolist()]
    assert ref == [[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]
    assert dec(code).tolist() == ref
    with pytest.raises(ValueError, match="width 5 but the key has 4 columns"):
        dec(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="0s and 1s"):
        SoftmaxDecoder(torch.full((2, 3), 0.5))


def test_softmax_decoder_with_contiguous_key_is_a_4x_sharper_nhot_decoder():
    nhot = NHotDecoder(3, 4)
    key = torch.eye(3).repeat_interleave(4, dim=1)            # class c owns units [4c, 4c + 4)
    code = (torch.rand(50, 12) < 0.4).float()
    diff = SoftmaxDecoder(key)(code) - 4 * nhot(code)          # logits = 4 * block sums + a per-sample constant
    torch.testing.assert_close(diff, diff[:, :1].expand(-1, 3), atol=0, rtol=0)
    torch.testing.assert_close(SoftmaxDecoder(key)(code).softmax(-1), (4 * nhot(code)).softmax(-1))


def test_models_shapes_and_binary_outputs():
    mlp = WhetstoneMLP([784, 32, 16], n_classes=10, n_hot=3, dropout=0.1)
    conv = WhetstoneConvNet(in_shape=(1, 28, 28), channels=(4, 8), hidden=(16,), n_classes=10, n_hot=2,
                            decoder="nhot")
    for model, x in ((mlp, torch.rand(6, 28, 28)), (conv, torch.rand(6, 1, 28, 28))):
        for a in sharpenable_layers(model):
            a.set_sharpness(1.0)
        model.eval()
        scores = model(x)
        assert scores.shape == (6, 10)
        code = model.code(x)
        assert set(code.unique().tolist()) <= {0.0, 1.0}
        if model is conv:
            assert torch.equal(scores, code.unflatten(-1, (10, -1)).sum(-1))
        else:
            assert torch.equal(scores, (2 * code - 1) @ (2 * mlp.decoder.key - 1).T)
    assert isinstance(mlp.decoder, SoftmaxDecoder) and mlp.decoder.key.sum(1).tolist() == [3.0] * 10
    other = WhetstoneMLP([784, 32, 16], n_classes=10, n_hot=3, dropout=0.1, key_seed=1)
    assert not torch.equal(other.decoder.key, mlp.decoder.key)
    other.load_state_dict(mlp.state_dict())                  # checkpoints carry the key
    assert torch.equal(other.decoder.key, mlp.decoder.key)
    with pytest.raises(ValueError, match="unknown decoder 'sum'; known: softmax, nhot"):
        WhetstoneMLP([4, 3], decoder="sum")
    with pytest.raises(ValueError, match="784 values per sample"):
        mlp(torch.rand(2, 16, 16))


# ------------------------------------------------------------------------------ export
def test_fold_negative_bn_scale_by_hand():
    lin = nn.Linear(1, 1)
    bn = nn.BatchNorm1d(1, eps=0.0).eval()
    with torch.no_grad():
        lin.weight.fill_(1.0), lin.bias.fill_(0.0), bn.weight.fill_(-1.0)
    w, b = fold_threshold(lin, bn)
    assert (w.item(), b.item()) == (-1.0, -0.5)            # y = H(-x - 0.5): spikes iff x < -0.5
    layer = ThresholdLayer(w, -b)
    x = torch.tensor([[-1.0], [-0.5], [0.0], [1.0]], dtype=torch.float64)
    assert layer(x).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    act = SharpBReLU(sharpness=1.0).double()
    assert act(bn.double()(lin.double()(x))).flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


def randomize_bn(model, g):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.randn(n, generator=g))               # about half negative scales
                m.weight[0] = 0.0                                         # a constant unit
                m.bias.copy_(torch.randn(n, generator=g) * 0.5 + 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.2)


@pytest.mark.parametrize("build", [
    lambda: WhetstoneMLP([12, 9, 7], n_classes=3, n_hot=2, dropout=0.2),
    lambda: WhetstoneMLP([12, 9, 7], n_classes=3, n_hot=2, activation="sigmoid", decoder="nhot"),
    lambda: WhetstoneConvNet(in_shape=(2, 8, 8), channels=(3, 4), kernel_size=3, hidden=(6,), n_classes=2, n_hot=3),
])
def test_export_matches_model_exactly(build):
    g = torch.Generator().manual_seed(3)
    model = build()
    randomize_bn(model, g)
    for a in sharpenable_layers(model):
        a.set_sharpness(1.0)
    model.eval()
    net = export_binary(model)
    assert sum(isinstance(m, ThresholdLayer) for m in net.layers) == len(sharpenable_layers(model))
    x = torch.rand(500, *model.layers[0].shape, generator=g, dtype=torch.float64)
    ref = model.double()
    codes = [x]
    for m in ref.layers:  # the model's own binary activations, one per sharpenable block
        codes.append(m(codes[-1]))
    spikes_model = [c for m, c in zip(ref.layers, codes[1:]) if isinstance(m, Sharpenable)]
    scores, spikes_net = net.run(x)
    assert len(spikes_net) == len(spikes_model)
    for a, b in zip(spikes_model, spikes_net):
        assert torch.equal(a, b)
    assert torch.equal(scores, ref(x))
    assert any(0 < float(s.mean()) < 1 for s in spikes_net)  # not a trivial all-0 / all-1 network


def test_export_refuses_soft_model():
    model = WhetstoneMLP([4, 3], n_classes=2, n_hot=1)
    sharpenable_layers(model)[0].set_sharpness(1.0)
    with pytest.raises(ValueError, match="sharpness"):
        export_binary(model)
    assert isinstance(export_binary(model, force=True).layers[1], ThresholdLayer)
    with pytest.raises(ValueError, match="not supported"):
        bad = WhetstoneMLP([4, 3], n_classes=2, n_hot=1)
        bad.layers.append(nn.ReLU())
        export_binary(bad, force=True)


def test_fraction_active_by_hand():
    model = WhetstoneMLP([2, 3], n_classes=2, n_hot=1, batch_norm=False)
    with torch.no_grad():
        model.layers[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model.layers[1].bias.zero_()
        model.layers[3].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        model.layers[3].bias.zero_()
    for a in sharpenable_layers(model):
        a.set_sharpness(1.0)
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 0])
    res = compare(model, export_binary(model), DataLoader(TensorDataset(x, y), batch_size=2))
    # hidden spikes [1,0,1], [0,0,0], [1,1,1] -> (2/3 + 0 + 1) / 3; outputs [1,0], [0,0], [1,1] -> 0, 0, 0
    assert res["fraction_active"] == pytest.approx(5 / 9)
    assert res["accuracy_binary"] == pytest.approx(2 / 3)
    assert res["agreement"] == 1.0 and res["samples"] == 3


# ------------------------------------------------------------------------------ real MNIST
_MNIST_RUN = {}


@pytest.fixture
def mnist_run(mnist_root):
    """A 784-64-40 net trained and sharpened on 800 real MNIST images (built once per session)."""
    if "run" not in _MNIST_RUN:
        _MNIST_RUN["run"] = _train_mnist(mnist_root)
    return _MNIST_RUN["run"]


def _train_mnist(root):
    from spikegrad.data import load_split

    torch.manual_seed(0)
    x, y = load_split("mnist", root, "train", download=False)
    x_train, y_train, x_test, y_test = x[:800], y[:800], x[-400:], y[-400:]
    model = WhetstoneMLP([784, 64], n_classes=10, n_hot=4)
    sharpener = SimpleSharpener(model, start_epoch=2, duration=1.5, per_batch=True)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    loss_fn = nn.CrossEntropyLoss()
    losses, accs = [], []  # per epoch: mean training loss, test accuracy
    for epoch in range(7):
        model.train()
        perm = torch.randperm(800)
        total = 0.0
        for b in range(16):
            idx = perm[b * 50:(b + 1) * 50]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sharpener.on_batch_end(epoch, b, loss.item())
            total += loss.item() / 16
        losses.append(total)
        model.eval()
        with torch.no_grad():
            accs.append((model(x_test).argmax(-1) == y_test).float().mean().item())
        sharpener.on_epoch_end(epoch, {"train_loss": loss.item(), "val_loss": None, "val_accuracy": accs[-1]})
    return model, sharpener, DataLoader(TensorDataset(x_test, y_test), batch_size=100), losses, accs


@pytest.mark.slow
def test_mnist_sharpened_net_is_binary_and_learns(mnist_run):
    """Learning is the loss falling before sharpening starts (epoch 2); the accuracies before and after
    sharpening move with the seed and the CPU: bench/accuracy_spread.py reports them over seeds."""
    model, sharpener, test, losses, accs = mnist_run
    assert sharpener.done and [a.get_sharpness() for a in sharpenable_layers(model)] == [1.0, 1.0]
    outs = []
    hooks = [a.register_forward_hook(lambda m, i, o: outs.append(o)) for a in sharpenable_layers(model)]
    with torch.no_grad():
        model.eval()(next(iter(test))[0])
    for h in hooks:
        h.remove()
    assert len(outs) == 2 and all(set(o.unique().tolist()) == {0.0, 1.0} for o in outs)
    assert losses[1] < losses[0], losses
    assert sharpener.before["epoch"] == 1.0 and sharpener.before["val_accuracy"] == accs[1]


@pytest.mark.slow
def test_mnist_export_agrees(mnist_run):
    model, _, test, _, _ = mnist_run
    net = export_binary(model)
    res = compare(model, net, test)
    assert res["agreement"] == 1.0 == agreement(model, net, test)
    assert res["accuracy_binary"] == res["accuracy_model"]
    assert 0.0 < res["fraction_active"] < 1.0


@pytest.mark.slow
def test_whetstone_analysis(mnist_run, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model, sharpener, test, _, _ = mnist_run
    torch.save({"sharpener": sharpener.state_dict(), "state": {"epoch": 7}}, tmp_path / "last.pt")
    writer = SummaryWriter(str(tmp_path / "tb"))
    res = whetstone_analysis(model=model, train_loader=None, val_loader=test, test_loader=test, device="cpu",
                             writer=writer, out_dir=tmp_path)
    writer.close()
    assert res["agreement"] == 1.0 and res["min_sharpness"] == 1.0
    assert res["accuracy_before_sharpening"] == sharpener.before["val_accuracy"]
    assert res["sharpening_loss"] == pytest.approx(res["accuracy_before_sharpening"] - res["val_accuracy_sharpened"])
    assert res["accuracy_binary"] == res["accuracy_sharpened"]
    net = torch.load(tmp_path / "binary_net.pt", weights_only=False)
    assert agreement(model, net, test) == 1.0


# ------------------------------------------------------------------------------ surrogate annealing
def test_surrogate_annealer_geometric_slopes():
    model = nn.Sequential(LIF(surrogate="atan"), LIF(surrogate=ATan(slope=3.0)))
    ann = SurrogateAnnealer(model, partial(SimpleSharpener, start_epoch=0, duration=2, mode="uniform"),
                            slope_min=1.0, slope_max=16.0)
    assert ann.slopes == [1.0, 1.0]
    ann.on_epoch_end(0, {"train_loss": 1.0})
    assert ann.slopes == pytest.approx([4.0, 4.0]) and not ann.done  # sqrt(1 * 16)
    assert model[0].surrogate.slope.item() == pytest.approx(4.0)
    state = ann.state_dict()
    ann.on_epoch_end(1, {"train_loss": 1.0})
    assert ann.slopes == [16.0, 16.0] and ann.done
    fresh = nn.Sequential(LIF(surrogate="atan"), LIF(surrogate="atan"))
    resumed = SurrogateAnnealer(fresh, partial(SimpleSharpener, start_epoch=0, duration=2, mode="uniform"), 1.0, 16.0)
    resumed.load_state_dict(state)
    assert [m.surrogate.slope.item() for m in fresh] == pytest.approx([4.0, 4.0])
    assert ann.scalars()["slope1"] == 16.0


def test_surrogate_annealer_bottom_up_and_errors():
    model = nn.Sequential(LIF(), LIF())
    ann = SurrogateAnnealer(model, partial(SimpleSharpener, duration=1), slope_min=2.0, slope_max=8.0)
    ann.on_epoch_end(0, {})
    assert ann.slopes == [8.0, 2.0]
    with pytest.raises(ValueError, match="no spikegrad.surrogates.Surrogate"):
        SurrogateAnnealer(nn.Linear(2, 2), partial(SimpleSharpener), 1.0, 2.0)
    with pytest.raises(ValueError, match="slope_min"):
        SurrogateAnnealer(model, partial(SimpleSharpener), 5.0, 2.0)


# ------------------------------------------------------------------------------ TensorBoard
def test_tensorboard_helpers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    acts = [SharpBReLU(sharpness=0.0), SharpSigmoid(sharpness=0.5), SharpBReLU(sharpness=1.0)]
    fig = activation_figure(acts)
    assert len(fig.axes) == 3
    line = fig.axes[2].lines[0]
    assert set(line.get_ydata().tolist()) == {0.0, 1.0}
    x = torch.as_tensor(line.get_xdata())
    torch.testing.assert_close(torch.as_tensor(fig.axes[0].lines[0].get_ydata()),
                               ((x - 0.5) / 1.001 + 0.5).clamp(0, 1))
    x_sigmoid = fig.axes[1].lines[0].get_xdata()             # the sigmoid's panel is centered on its step at 0
    assert (x_sigmoid.min(), x_sigmoid.max()) == pytest.approx((-0.75, 0.75))
    writer = SummaryWriter(str(tmp_path))
    log_sharpness(writer, acts, step=3)
    log_activation_figure(writer, acts, step=3)
    writer.close()
    events = EventAccumulator(str(tmp_path)).Reload()
    assert [(e.step, e.value) for e in events.Scalars("sharpen/layer1")] == [(3, 0.5)]
    assert events.Tags()["images"] == ["sharpen/activations"]


def test_whetstone_analysis_on_unfinished_sharpening(tmp_path):
    model = WhetstoneMLP([6, 5], n_classes=2, n_hot=2)
    sharpenable_layers(model)[1].set_sharpness(0.5)
    data = DataLoader(TensorDataset(torch.rand(40, 6), torch.randint(0, 2, (40,))), batch_size=16)
    with pytest.raises(ValueError, match="not fully sharpened"):
        whetstone_analysis(model=model, test_loader=data, require_sharp=True)
    with pytest.warns(UserWarning, match="fully sharp limit"):
        res = whetstone_analysis(model=model, val_loader=data, test_loader=data, out_dir=tmp_path)
    assert res["min_sharpness"] == 0.0 and res["agreement"] == 1.0
    assert "accuracy_before_sharpening" not in res  # no last.pt with a schedule state in out_dir
    assert sharpenable_layers(model)[1].get_sharpness() == 0.5  # the model itself is left alone
