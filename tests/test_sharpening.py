"""Whetstone sharpening: activations, schedules, decoder, export, annealing, TensorBoard, analysis."""

import io
import math
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikegrad.neurons import LIF
from spikegrad.sharpening import (AdaptiveSharpener, NHotDecoder, ScheduledSharpener, SharpBReLU, SharpSigmoid,
                                  SimpleSharpener, SurrogateAnnealer, ThresholdLayer, WhetstoneConvNet, WhetstoneMLP,
                                  activation_figure, agreement, compare, export_binary, log_activation_figure,
                                  log_sharpness, sharpen_act, sharpenable_layers, whetstone_analysis)
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
def test_brelu_hand_values():
    act = SharpBReLU()
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0])
    assert act(x).tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]        # s = 0: clamp(x, 0, 1)
    act.set_sharpness(0.5)                                                   # ramp from 0.25 to 0.75
    x = torch.tensor([0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0])
    assert act(x).tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize("cls", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_full_sharpness_is_exact_step(cls, dtype):
    act = cls(sharpness=1.0)
    up, down = 0.5 + torch.finfo(dtype).eps / 2, 0.5 - torch.finfo(dtype).eps / 4  # neighbours of 0.5
    x = torch.tensor([-3.0, 0.0, down, 0.5, up, 1.0, 7.0], dtype=dtype)
    assert x[2] < 0.5 < x[4]
    y = act(x)
    assert y.dtype == dtype
    assert y.tolist() == (x > 0.5).to(dtype).tolist()
    assert y.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]                 # 0.5 itself maps to 0


def test_sigmoid_hand_values():
    act = SharpSigmoid()
    y = act(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)).tolist()
    assert y == pytest.approx([sig(-2.0), 0.5, sig(2.0)], abs=1e-12)         # sigmoid(4 (x - 0.5))
    act.set_sharpness(0.75)                                                  # slope 4 / 0.25 = 16
    y = act(torch.tensor([0.25, 0.5, 0.625], dtype=torch.float64)).tolist()
    assert y == pytest.approx([sig(-4.0), 0.5, sig(2.0)], abs=1e-12)


@pytest.mark.parametrize("kind", ["brelu", "sigmoid"])
def test_gradient_is_exact_below_min_width(kind):
    # s = 0.3: ramp edges at 0.15 and 0.85; probe away from the kinks
    x = torch.tensor([-0.3, 0.05, 0.3, 0.5, 0.62, 0.8, 0.9, 1.4], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(sharpen_act(x, 0.3, kind, min_width=0.0).sum(), x)
    h = 1e-6
    with torch.no_grad():
        fd = (sharpen_act(x + h, 0.3, kind, 0.0) - sharpen_act(x - h, 0.3, kind, 0.0)) / (2 * h)
    torch.testing.assert_close(g, fd, atol=1e-6, rtol=1e-6)
    if kind == "brelu":
        assert g.tolist() == pytest.approx([0, 0, 1 / 0.7, 1 / 0.7, 1 / 0.7, 1 / 0.7, 0, 0])


def test_gradient_at_full_sharpness_uses_min_width():
    x = torch.tensor([0.35, 0.45, 0.5, 0.55, 0.65], requires_grad=True)
    for s in (0.9, 1.0):  # width 1 - s <= min_width: a boxcar of width 0.2 and height 1 / 0.2
        (g,) = torch.autograd.grad(SharpBReLU(sharpness=s, min_width=0.2)(x).sum(), x)
        assert g.tolist() == pytest.approx([0.0, 5.0, 5.0, 5.0, 0.0])
    (g,) = torch.autograd.grad(SharpBReLU(sharpness=1.0)(x).sum(), x)         # default: STE of the s = 0 ramp
    assert g.tolist() == pytest.approx([1.0] * 5)
    (g,) = torch.autograd.grad(SharpBReLU(sharpness=1.0, min_width=0.0)(x).sum(), x)
    assert g.tolist() == [0.0] * 5                                           # exact: no gradient, no NaN
    (g,) = torch.autograd.grad(SharpSigmoid(sharpness=1.0, min_width=0.5)(x).sum(), x)
    assert g.tolist() == pytest.approx([8 * sig(8 * (v - 0.5)) * (1 - sig(8 * (v - 0.5))) for v in x.tolist()])


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


ADAPTIVE = dict(min_init_epochs=2, patience=2, improvement=0.1, degradation=0.2, rate=0.5, critical=0.5,
                critical_rate=0.25)
# epoch: loss, and the expected phase and sharpness after its end (worked by hand from the docstring)
SCRIPT = [
    (1.00, "waiting", [0, 0]),          # best 1.0; before min_init_epochs
    (0.80, "waiting", [0, 0]),          # improved (0.8 < 0.9): stale 0
    (0.78, "waiting", [0, 0]),          # 0.78 >= 0.72: stale 1 < patience
    (0.77, "sharpening", [0.5, 0]),     # stale 2: start, ref 0.77, +rate
    (0.85, "sharpening", [0.75, 0]),    # 0.85 <= 0.924: ref 0.85, past critical: +critical_rate
    (1.20, "paused", [0.75, 0]),        # 1.2 > 1.02: pause, best 1.2
    (1.05, "paused", [0.75, 0]),        # improved (1.05 < 1.08), not recovered (> 1.02)
    (1.00, "sharpening", [1, 0]),       # recovered (1.0 <= 1.02): resume, layer 0 complete
    (1.10, "sharpening", [1, 0.5]),     # 1.1 <= 1.2: next layer
    (1.50, "paused", [1, 0.5]),         # 1.5 > 1.32
    (1.45, "paused", [1, 0.5]),         # no improvement (>= 1.35): stale 1
    (1.44, "sharpening", [1, 0.75]),    # stale 2: plateau, resume
    (1.40, "done", [1, 1]),
    (5.00, "done", [1, 1]),             # done stays done
]


def test_adaptive_state_machine_follows_script():
    sh = AdaptiveSharpener(layers(2), **ADAPTIVE)
    for epoch, (loss, phase, expected) in enumerate(SCRIPT):
        assert not sh.done
        sh.on_epoch_end(epoch, {"train_loss": loss, "val_loss": None, "val_accuracy": 0.5})
        assert (sh.phase, values(sh)) == (phase, expected), f"epoch {epoch}"
        if sh.done:
            break
    assert sh.done
    assert sh.before["epoch"] == 3.0  # the last epoch trained and evaluated with all layers at 0


def test_adaptive_uniform_and_max_init():
    sh = AdaptiveSharpener(layers(3), mode="uniform", min_init_epochs=0, max_init_epochs=2, patience=5,
                           rate=0.5, critical=1.0)
    assert feed(sh, [3.0, 2.0, 1.0]) == [[0] * 3, [0.5] * 3, [1] * 3]  # forced start after 2 epochs
    assert sh.done


def test_adaptive_per_batch_holds_at_layer_end():
    sh = AdaptiveSharpener(layers(2), min_init_epochs=0, patience=0, rate=0.75, critical=1.0, per_batch=True)
    trace = []
    for epoch in range(4):
        for b in range(4):
            sh.on_batch_end(epoch, b, 1.0)
            trace.append(values(sh))
        sh.on_epoch_end(epoch, {"train_loss": 1.0})
    assert trace[:4] == [[0, 0]] * 4                                # epoch 0: waiting
    assert trace[4:8] == [[0.1875, 0], [0.375, 0], [0.5625, 0], [0.75, 0]]
    assert trace[8:12] == [[0.9375, 0], [1, 0], [1, 0], [1, 0]]     # completes, next layer waits
    assert trace[12:16] == [[1, 0.1875], [1, 0.375], [1, 0.5625], [1, 0.75]]


def test_adaptive_missing_monitor():
    sh = AdaptiveSharpener(layers(1), monitor="val_loss")
    with pytest.raises(ValueError, match="monitor='val_loss'"):
        sh.on_epoch_end(0, {"train_loss": 1.0, "val_loss": None})


@pytest.mark.parametrize("make", [
    lambda acts: SimpleSharpener(acts, start_epoch=1, duration=1.5, per_batch=True),
    lambda acts: AdaptiveSharpener(acts, min_init_epochs=1, patience=0, rate=0.3, critical=0.6, critical_rate=0.2),
    lambda acts: AdaptiveSharpener(acts, min_init_epochs=0, patience=1, rate=0.6, per_batch=True),
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
    lambda m: AdaptiveSharpener(m, **ADAPTIVE),
    lambda m: AdaptiveSharpener(m, min_init_epochs=0, patience=0, rate=0.5, per_batch=True, mode="uniform"),
])
def test_state_round_trips_through_checkpoint(make):
    losses = [s[0] for s in SCRIPT] * 2

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


def test_models_shapes_and_binary_outputs():
    mlp = WhetstoneMLP([784, 32, 16], n_classes=10, n_hot=3, dropout=0.1)
    conv = WhetstoneConvNet(in_shape=(1, 28, 28), channels=(4, 8), hidden=(16,), n_classes=10, n_hot=2)
    for model, x in ((mlp, torch.rand(6, 28, 28)), (conv, torch.rand(6, 1, 28, 28))):
        for a in sharpenable_layers(model):
            a.set_sharpness(1.0)
        model.eval()
        scores = model(x)
        assert scores.shape == (6, 10)
        code = model.code(x)
        assert set(code.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(scores, code.unflatten(-1, (10, -1)).sum(-1))
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
    spikes_model = [c for m, c in zip(ref.layers, codes[1:]) if isinstance(m, SharpBReLU)]
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
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small matrices: one thread is fastest on a busy machine
        try:
            _MNIST_RUN["run"] = _train_mnist(mnist_root)
        finally:
            torch.set_num_threads(threads)
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
    for epoch in range(7):
        model.train()
        perm = torch.randperm(800)
        for b in range(16):
            idx = perm[b * 50:(b + 1) * 50]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sharpener.on_batch_end(epoch, b, loss.item())
        model.eval()
        with torch.no_grad():
            acc = (model(x_test).argmax(-1) == y_test).float().mean().item()
        sharpener.on_epoch_end(epoch, {"train_loss": loss.item(), "val_loss": None, "val_accuracy": acc})
    return model, sharpener, DataLoader(TensorDataset(x_test, y_test), batch_size=100)


def test_mnist_sharpened_net_is_binary_and_learns(mnist_run):
    model, sharpener, test = mnist_run
    assert sharpener.done and [a.get_sharpness() for a in sharpenable_layers(model)] == [1.0, 1.0]
    outs = []
    hooks = [a.register_forward_hook(lambda m, i, o: outs.append(o)) for a in sharpenable_layers(model)]
    x, y = next(iter(test))
    with torch.no_grad():
        acc = (model.eval()(x).argmax(-1) == y).float().mean().item()
    for h in hooks:
        h.remove()
    assert len(outs) == 2 and all(set(o.unique().tolist()) == {0.0, 1.0} for o in outs)
    assert acc > 0.6  # chance is 0.1
    assert sharpener.before["epoch"] == 1.0 and sharpener.before["val_accuracy"] > 0.7


def test_mnist_export_agrees(mnist_run):
    model, _, test = mnist_run
    net = export_binary(model)
    res = compare(model, net, test)
    assert res["agreement"] == 1.0 == agreement(model, net, test)
    assert res["accuracy_binary"] == res["accuracy_model"] > 0.6
    assert 0.0 < res["fraction_active"] < 1.0


def test_whetstone_analysis(mnist_run, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model, sharpener, test = mnist_run
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
    torch.testing.assert_close(torch.as_tensor(fig.axes[0].lines[0].get_ydata()),
                               torch.as_tensor(line.get_xdata()).clamp(0, 1))
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
