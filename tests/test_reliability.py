"""Reliability of the training loop: no silent wrong result, no lost run, no cryptic error.

Each exactness test compares against an uninterrupted run of the same configuration (an
independent reference computed by the same public API), bit for bit on CPU.
"""

import functools
import logging
import math
import signal
import threading

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from spikegrad.data import RandomShift
from spikegrad.encoding import CurrentEncoder, LatencyEncoder, RateEncoder
from spikegrad.losses import MaxOverTime
from spikegrad.models import SpikingMLP
from spikegrad.neurons import LIF
from spikegrad.regularizers import LowerRate, UpperRate
from spikegrad.sharpening import AdaptiveSharpener, SimpleSharpener, SurrogateAnnealer
from spikegrad.training import (CheckpointWriteError, NonFiniteLossError, ResumeError, fit, load_checkpoint,
                                save_checkpoint)
from spikegrad.training.loop import _log_epoch
from synthetic import synthetic


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO, logger="spikegrad")


def loaders(shift=0, seeded=True):
    x, y = synthetic()
    gen = torch.Generator().manual_seed(0) if seeded else None
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16, shuffle=True, generator=gen,
                       collate_fn=RandomShift(shift, gen) if shift else None)
    val = DataLoader(TensorDataset(x[64:80], y[64:80]), batch_size=8)
    test = DataLoader(TensorDataset(x[80:], y[80:]), batch_size=8)
    return train, val, test


def build(lr=1e-2, optim=torch.optim.Adam):
    torch.manual_seed(0)
    model = SpikingMLP([9, 12, 3], neuron=functools.partial(LIF, tau_mem=5.0, tau_syn=2.0), weight_gain=3.0,
                       readout_gain=1.0)
    return model, optim(model.parameters(), lr=lr)


def run(out, epochs=3, *, encoder="rate", sharpener=None, shift=0, seeded=True, regularizers=(), resume=None,
        loss=None, wrap=None, scheduler=None, lr=1e-2, optim=torch.optim.Adam, **kw):
    """One fit on the synthetic task; ``wrap(train, val, test)`` may replace the loaders."""
    model, opt = build(lr, optim)
    tr, va, te = loaders(shift, seeded)
    if wrap is not None:
        tr, va, te = wrap(tr, va, te)
    enc = {"rate": RateEncoder(T=8, max_rate=0.8), "latency": LatencyEncoder(T=8),
           "current": CurrentEncoder(T=8)}[encoder]
    sh = sharpener(model) if sharpener is not None else None
    sched = scheduler(opt) if scheduler is not None else None
    res = fit(model, tr, va, te, opt, loss or MaxOverTime(), epochs=epochs, encoder=enc, scheduler=sched,
              regularizers=list(regularizers), sharpener=sh, out_dir=out, resume=resume,
              generator=torch.Generator().manual_seed(5), progress=False, **kw)
    return model, res


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def _signal_main_thread(sig) -> None:
    """Send ``sig`` to this process's main thread. A signal sent to the process (``os.kill``) can land
    on a worker thread (OpenMP's), and then the main thread may run the Python handler only after a
    second signal sent right after it: two pending signals of one kind run the handler once."""
    signal.pthread_kill(threading.main_thread().ident, sig)


class SignalAt:
    """Loss that sends ``sig`` to this process on its ``at``-th training call (after the encoder drew)."""

    def __init__(self, sig, at):
        self.sig, self.at, self.calls, self.inner = sig, at, 0, MaxOverTime()

    def __call__(self, out, y):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                _signal_main_thread(self.sig)
        return self.inner(out, y)

    def predict(self, out):
        return self.inner.predict(out)


class SignalOnPass:
    """Iterable over ``loader`` that sends ``sig`` when batch ``at`` of pass ``on_pass`` is requested."""

    def __init__(self, loader, sig, on_pass, at=1):
        self.loader, self.sig, self.on_pass, self.at, self.passes = loader, sig, on_pass, at, 0

    def __iter__(self):
        self.passes += 1
        for k, batch in enumerate(self.loader):
            if self.passes == self.on_pass and k == self.at:
                _signal_main_thread(self.sig)
            yield batch


def interrupted(out, sig, **kw):
    stop = KeyboardInterrupt if sig == signal.SIGINT else SystemExit
    with pytest.raises(stop) as info:
        run(out, **kw)
    if sig == signal.SIGTERM:
        assert info.value.code == 143
    return out / "interrupted.pt"


# ------------------------------------------------------------------------ 4: exact resume, per component
COMPONENTS = {
    "rate_encoder": {},
    "latency_encoder": {"encoder": "latency"},
    "current_encoder": {"encoder": "current"},
    "shift_augmentation": {"shift": 1},
    "unseeded_loader": {"seeded": False},  # shuffling drawn from the global generator
    "regularizers": {"regularizers": (UpperRate(0.1, 1.0), LowerRate(1.0, 0.01))},
    "per_batch_annealer": {"sharpener": lambda m: SurrogateAnnealer(
        m, functools.partial(SimpleSharpener, start_epoch=0, duration=2, per_batch=True, batches_per_epoch=4,
                             mode="bottom_up"), slope_min=1.0, slope_max=25.0)},
    "adaptive_annealer": {"sharpener": lambda m: SurrogateAnnealer(
        m, functools.partial(AdaptiveSharpener, min_init_epochs=1, rate=0.5, monitor="val_loss",
                             batches_per_epoch=4), slope_min=1.0, slope_max=25.0)},
}


@pytest.mark.parametrize("component", list(COMPONENTS))
def test_sigint_inside_a_batch_then_resume_is_exact(tmp_path, component):
    kw = COMPONENTS[component]
    full, ref = run(tmp_path / "full", **kw)
    # SIGINT arrives while the 7th batch (epoch 2, batch 3) runs, after the encoder drew for it: the batch
    # completes and the run stops before the next one
    ckpt = interrupted(tmp_path / "cut", signal.SIGINT, loss=SignalAt(signal.SIGINT, 7), **kw)
    resumed, res = run(tmp_path / "cut", resume=ckpt, **kw)
    assert_same_weights(full, resumed)
    assert res["test_accuracy"] == ref["test_accuracy"]
    for a, b in zip(ref["history"], res["history"]):  # the interrupted epoch's metrics cover all its batches
        assert a["train_loss"] == b["train_loss"] and a["train_samples"] == b["train_samples"], (a, b)


# ------------------------------------------------------------- 8: interrupt at each phase, SIGINT and SIGTERM
def _val(on_pass):
    return lambda sig: (lambda tr, va, te: (tr, SignalOnPass(va, sig, on_pass), te))


def _test_phase(sig):
    return lambda tr, va, te: (tr, va, SignalOnPass(te, sig, 1))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["train", "validation", "test", "checkpoint write"])
def test_interrupt_at_each_phase_saves_a_checkpoint_that_resumes_exactly(tmp_path, phase, sig, monkeypatch, caplog):
    full, ref = run(tmp_path / "full")
    kw = {}
    if phase == "train":
        kw["loss"] = SignalAt(sig, 3)
    elif phase == "validation":
        kw["wrap"] = _val(2)(sig)
    elif phase == "test":
        kw["wrap"] = _test_phase(sig)
    else:
        real_save, calls = torch.save, []

        def save(obj, f, *a, **k):  # the signal arrives while last.pt of epoch 2 is being written
            calls.append(f)
            if len(calls) == 3:
                _signal_main_thread(sig)
            return real_save(obj, f, *a, **k)

        monkeypatch.setattr(torch, "save", save)
    ckpt = interrupted(tmp_path / "cut", sig, **kw)
    monkeypatch.undo()
    assert ckpt.is_file() and not list((tmp_path / "cut").glob("*.tmp"))
    assert f"during {phase}" in caplog.text and f"resume={ckpt}" in caplog.text
    if phase == "checkpoint write":
        assert torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["state"]["epoch"] == 2
    resumed, res = run(tmp_path / "cut", resume=ckpt)
    assert_same_weights(full, resumed)
    assert res["test_accuracy"] == ref["test_accuracy"] and res["val_accuracy"] == ref["val_accuracy"]
    assert [h["val_accuracy"] for h in res["history"]] == [h["val_accuracy"] for h in ref["history"]]


def test_second_signal_stops_at_once_without_writing(tmp_path, caplog):
    class Twice(SignalAt):
        def __call__(self, out, y):
            if torch.is_grad_enabled() and self.calls + 1 == self.at:
                _signal_main_thread(self.sig)  # the first one, then the second below
            return super().__call__(out, y)

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, loss=Twice(signal.SIGINT, 6))
    assert not (tmp_path / "interrupted.pt").exists() and "no checkpoint written" in caplog.text
    assert {sig: signal.getsignal(sig) for sig in before} == before  # the handlers of before the run, restored


# ----------------------------------------------------------------------------- 2: use_best always holds
class WorseAfterFirstPass:
    """Validation iterable whose labels are right on the first pass and wrong afterwards: epoch 1 is best."""

    def __init__(self, loader):
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        for x, y in self.loader:
            yield x, (y if self.passes == 1 else (y + 1) % 3)


def test_use_best_without_out_dir_and_after_resume_into_a_new_folder(tmp_path):
    best, ref = run(None, epochs=1)  # the reference: the weights after epoch 1
    worse = lambda tr, va, te: (tr, WorseAfterFirstPass(va), te)  # noqa: E731
    model, res = run(None, epochs=3, wrap=worse)
    assert_same_weights(best, model)
    assert res["test_accuracy"] == ref["test_accuracy"]
    # a 2-epoch run (best at epoch 1), resumed into a new folder for a third epoch that is not better either
    run(tmp_path / "a", epochs=2, wrap=worse)
    model, res = run(tmp_path / "b", epochs=3, resume=tmp_path / "a" / "last.pt",
                     wrap=lambda tr, va, te: (tr, WorseAfterFirstPass(WorseAfterFirstPass(va)), te))
    assert_same_weights(best, model)
    assert res["test_accuracy"] == ref["test_accuracy"]


# --------------------------------------------------------------------- 3: resume semantics and overrides
def test_extending_a_finished_run_uses_the_new_horizon_and_the_new_lr(tmp_path, caplog):
    cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=1)
    short, _ = run(tmp_path, epochs=1, scheduler=cosine)
    caplog.clear()
    longer = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=2)
    model, res = run(tmp_path, epochs=2, lr=0.3, scheduler=longer, resume=tmp_path / "last.pt")
    # epoch 2 of a 2-epoch cosine schedule at base lr 0.3: 0.3 * (1 + cos(pi / 2)) / 2
    assert res["history"][1]["lr"] == pytest.approx(0.3 * (1 + math.cos(math.pi / 2)) / 2)
    assert res["history"][0]["lr"] == pytest.approx(1e-2)  # epoch 1 as it ran
    assert any((a != b).any() for a, b in zip(short.state_dict().values(), model.state_dict().values()))
    assert "epochs 1 -> 2" in caplog.text and "optimizer lr 0.01 -> 0.3" in caplog.text
    assert "restored: weights, Adam state" in caplog.text


def test_unchanged_resume_reports_an_exact_continuation(tmp_path, caplog):
    run(tmp_path, epochs=1)
    run(tmp_path, epochs=1, resume=tmp_path / "last.pt")
    assert "overridden: nothing (exact continuation)" in caplog.text


def test_overrides_that_cannot_apply_are_errors(tmp_path):
    run(tmp_path, epochs=2)
    with pytest.raises(ResumeError, match=r"completed 2 epochs.*epochs >= 2"):
        run(tmp_path / "x", epochs=1, resume=tmp_path / "last.pt")
    with pytest.raises(ResumeError, match=r"optimizer Adam, but this run built SGD.*optim=adam"):
        run(tmp_path / "y", epochs=3, optim=torch.optim.SGD, resume=tmp_path / "last.pt")


# ----------------------------------------------------------------------------- 5: bad trainer arguments
@pytest.mark.parametrize("bad", [-1.0, 0, float("nan"), float("inf"), True])
def test_bad_grad_clip_is_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="grad_clip must be a positive finite number"):
        run(tmp_path, epochs=1, grad_clip=bad)


def test_grad_clip_bounds_the_update(tmp_path):
    """With SGD (no momentum) the first update is -lr * clipped gradient: its norm is lr * grad_clip."""
    model, opt = build(lr=1.0, optim=torch.optim.SGD)
    before = [p.detach().clone() for p in model.parameters()]
    tr, _, _ = loaders()
    one = [next(iter(tr))]
    fit(model, one, None, None, opt, MaxOverTime(), epochs=1, encoder=LatencyEncoder(T=8), grad_clip=0.01,
        progress=False)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert float(step.norm()) == pytest.approx(0.01, rel=1e-4)


# ---------------------------------------------------------------------- 6, 7: non-finite values are caught
@pytest.mark.parametrize("record_v", [True, False])
def test_nan_in_a_hidden_layer_input_names_the_layer_and_step(tmp_path, record_v):
    model, opt = build()
    model.record_v = record_v  # states come back as whole sequences or as the final step
    with torch.no_grad():
        model.layers[0].module.weight[0, 0] = float("inf")  # 0 * inf = NaN in the first hidden layer's input
    x = torch.zeros(8, 4, 9)  # [T, B, N]: pixel 0 is silent until step 3
    x[3:, :, 0] = 1.0
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(NonFiniteLossError, match=r"layer 'neurons\.0' \(LIF\).*NaN from time step 0"):
        fit(model, [(x, y)], None, None, opt, MaxOverTime(), epochs=1, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()


def test_nan_in_the_data_is_named(tmp_path):
    model, opt = build()
    x = torch.rand(8, 4, 9)
    x[5, 2, 3] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"NaN from time step 5.*input batch itself holds NaN"):
        fit(model, [(x, torch.zeros(4, dtype=torch.long))], None, None, opt, MaxOverTime(), epochs=1,
            progress=False)


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


class InfGradAt(SignalAt):
    """Finite loss whose gradient is infinite on the ``at``-th training call."""

    def __call__(self, out, y):
        loss = self.inner(out, y)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                return _InfGrad.apply(loss)
        return loss


def test_infinite_gradient_on_an_epochs_last_batch_keeps_the_good_checkpoint(tmp_path):
    ref, _ = run(tmp_path / "ref", epochs=1)
    with pytest.raises(NonFiniteLossError, match=r"gradient became non-finite at epoch 2, batch 4.*kept at .*last\.pt"):
        run(tmp_path / "cut", loss=InfGradAt(None, 8))
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert ckpt["state"]["epoch"] == 1
    for a, b in zip(ref.state_dict().values(), ckpt["model"].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class Poison:
    """A sharpener hook that makes a weight infinite after epoch 2 or, with ``interrupt``, after batch 2 of
    epoch 2, followed there by a Ctrl-C (the interrupted run then has non-finite weights to save)."""

    def __init__(self, model, interrupt=False):
        self.model, self.interrupt = model, interrupt

    def poison(self):
        with torch.no_grad():
            self.model.layers[1].module.weight[0, 0] = float("inf")

    def on_batch_end(self, epoch, batch, loss):
        if self.interrupt and (epoch, batch) == (1, 1):
            self.poison()
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, metrics):
        if not self.interrupt and epoch == 1:
            self.poison()

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize("out_dir", [True, False])
def test_no_checkpoint_is_written_from_non_finite_weights(tmp_path, out_dir):
    """Checked once per checkpoint, when it is built: also without an output folder (the run stops there)."""
    with pytest.raises(NonFiniteLossError, match=r"weights became non-finite after epoch 2 \(layers\.1\.module\."):
        run(tmp_path if out_dir else None, sharpener=Poison)
    if out_dir:
        assert torch.load(tmp_path / "last.pt", weights_only=False)["state"]["epoch"] == 1


def test_an_interrupt_saves_no_checkpoint_from_non_finite_weights(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"weights became non-finite during train of epoch 2 \(layers\.1\."):
        run(tmp_path, sharpener=functools.partial(Poison, interrupt=True))
    assert not (tmp_path / "interrupted.pt").exists()
    assert torch.load(tmp_path / "last.pt", weights_only=False)["state"]["epoch"] == 1


def test_nan_in_validation_data_is_an_error_not_an_accuracy(tmp_path):
    model, opt = build()
    x, y = torch.rand(8, 4, 9), torch.zeros(4, dtype=torch.long)  # [T, B, N], no encoder
    bad = x.clone()
    bad[2, 1, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"validation: .*'neurons\.0'.*NaN from time step 2.*batch 1"):
        fit(model, [(x, y)], [(bad, y)], None, opt, MaxOverTime(), epochs=1, progress=False)


# ----------------------------------------------------------------------------- 10: failed checkpoint write
def test_failed_checkpoint_write_cleans_up_and_says_where(tmp_path, monkeypatch):
    run(tmp_path, epochs=1)
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4160 vs 4096")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"could not write the checkpoint .*last\.pt.*MiB free.*"
                                                   r"previous last\.pt is unchanged"):
        run(tmp_path, epochs=2, resume=tmp_path / "last.pt")
    monkeypatch.setattr(torch, "save", real_save)
    assert not list(tmp_path.glob("*.tmp"))
    assert torch.load(tmp_path / "last.pt", weights_only=False)["state"]["epoch"] == 1


# ------------------------------------------------------------------------------- unreadable checkpoints
def test_truncated_garbage_and_folder_checkpoints_are_explained(tmp_path):
    run(tmp_path, epochs=1)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"123 not a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    model, _ = build()
    for name in ("half.pt", "garbage.pt", "empty.pt"):
        with pytest.raises(ValueError, match=rf"checkpoint .*{name} cannot be read: it is truncated"):
            load_checkpoint(tmp_path / name, model)
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_checkpoint(tmp_path, model)
    save_checkpoint({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a spikegrad checkpoint"):
        load_checkpoint(tmp_path / "other.pt", model)


# -------------------------------------------------------------------------------------------- TensorBoard
class Recorder(SummaryWriter):
    """A real SummaryWriter (its histogram writer rejects an all-NaN/Inf input) that also keeps what it got."""

    def __init__(self, log_dir):
        super().__init__(str(log_dir))
        self.scalars, self.histograms, self.figures = {}, {}, {}

    def add_scalar(self, tag, value, step, *a, **k):
        super().add_scalar(tag, value, step, *a, **k)
        self.scalars.setdefault(tag, []).append((step, value))

    def add_histogram(self, tag, values, step, *a, **k):
        super().add_histogram(tag, values, step, *a, **k)
        self.histograms.setdefault(tag, []).append(values)

    def add_figure(self, tag, fig, step, *a, **k):
        self.figures[tag] = fig
        super().add_figure(tag, fig, step, *a, close=False, **k)


def test_lr_is_logged_for_the_epoch_it_was_used_in(tmp_path):
    writer = Recorder(tmp_path / "tb")
    cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=2)
    run(tmp_path, epochs=2, scheduler=cosine, writer=writer, log_samples=1)
    assert writer.scalars["lr"] == [(1, pytest.approx(1e-2)), (2, pytest.approx(1e-2 * 0.5))]
    fig = writer.figures["readout/sample0"]
    lines = fig.axes[0].get_lines()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    true = int(synthetic()[1][80])  # the first test sample's label
    assert len(lines) == 3 and labels == [f"class {c}" + (" (true)" if c == true else "") for c in range(3)]
    assert f"true label {true}" in fig.axes[0].get_title()


def test_infinite_weights_do_not_crash_the_histograms(tmp_path):
    model, _ = build()
    with torch.no_grad():
        model.layers[0].module.weight.fill_(float("inf"))
        model.layers[1].module.weight[0, 0] = float("nan")
    writer = Recorder(tmp_path)
    record = {"train_loss": 1.0, "train_accuracy": 0.5, "train_spikes_per_input": None, "lr": 0.1}
    with pytest.warns(RuntimeWarning) as warned:
        _log_epoch(writer, model, record, 0, None)
    messages = [str(w.message) for w in warned]
    assert any("weights/layers.0.module.weight: 108 of 108 values are NaN/Inf" in m for m in messages)
    assert any("weights/layers.1.module.weight: 1 of 36 values are NaN/Inf" in m for m in messages)
    assert "weights/layers.0.module.weight" not in writer.histograms
    assert len(writer.histograms["weights/layers.1.module.weight"][0]) == 3 * 12 - 1


def test_label_outside_the_model_classes_is_named(tmp_path):
    model, opt = build()
    x, y = torch.rand(8, 4, 9), torch.tensor([0, 1, 7, 2])
    with pytest.raises(ValueError, match=r"label 7 is outside the 3 classes of the model output \(0\.\.2\)"):
        fit(model, [(x, y)], None, None, opt, MaxOverTime(), epochs=1, progress=False)


@pytest.mark.slow
def test_importing_plots_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('pdf'); import spikegrad.plots, spikegrad.training; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "pdf"


def test_malformed_loaders_labels_and_schedulers_are_named(tmp_path):
    model, opt = build()
    x, y = torch.rand(8, 4, 9), torch.tensor([0, 1, 2, 0])
    args = (None, None, opt, MaxOverTime())
    with pytest.raises(ValueError, match="train loader yielded no samples"):  # was: train_loss 0.0
        fit(model, [], *args, epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"must yield \(x, y\) pairs.*got a tuple of 1 items"):
        fit(model, [(x,)], *args, epochs=1, progress=False)
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        fit(model, [(x, y.float())], *args, epochs=1, progress=False)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    with pytest.raises(ValueError, match="ReduceLROnPlateau cannot be used"):
        fit(model, [(x, y)], *args, epochs=1, scheduler=plateau, progress=False)


def test_mid_epoch_resume_with_other_batches_per_epoch_is_an_error(tmp_path):
    ckpt = interrupted(tmp_path, signal.SIGINT, loss=SignalAt(signal.SIGINT, 3))
    assert torch.load(ckpt, weights_only=False)["state"]["batch"] == 3  # the batch in flight completes

    def bigger_batches(tr, va, te):
        return DataLoader(tr.dataset, batch_size=32, shuffle=True, generator=tr.generator), va, te

    with pytest.raises(ResumeError, match=r"stopped after batch 3 of an epoch of 4 batches.*has 2 batches"):
        run(tmp_path, resume=ckpt, wrap=bigger_batches)


def test_dropout_resume_is_exact(tmp_path):
    """Dropout draws from the global generator inside the forward pass; a mid-batch SIGINT must not shift it."""
    from spikegrad.losses import CrossEntropy

    class Loss(SignalAt):
        def __init__(self, sig, at):
            super().__init__(sig, at)
            self.inner = CrossEntropy()

    def go(out, **kw):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                    torch.nn.Linear(16, 3))
        tr, va, te = loaders()
        fit(model, tr, va, te, torch.optim.SGD(model.parameters(), lr=0.1), kw.pop("loss", CrossEntropy()), epochs=3,
            out_dir=out, progress=False, **kw)
        return model

    full = go(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        go(tmp_path / "cut", loss=Loss(signal.SIGINT, 6))
    assert_same_weights(full, go(tmp_path / "cut", resume=tmp_path / "cut" / "interrupted.pt"))


def test_resuming_a_run_that_stopped_sharp_trains_no_further(tmp_path):
    from spikegrad.losses import CrossEntropy
    from spikegrad.sharpening import WhetstoneMLP

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 6, generator=g), torch.randint(0, 2, (32,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)

    def go(resume=None):
        torch.manual_seed(0)
        model = WhetstoneMLP([6, 8], n_classes=2, n_hot=2)
        sharpener = SimpleSharpener(model, start_epoch=1, duration=0.5, per_batch=True)
        res = fit(model, loader, None, None, torch.optim.Adam(model.parameters(), 1e-2), CrossEntropy(), epochs=10,
                  sharpener=sharpener, out_dir=tmp_path, resume=resume, progress=False)
        return model, res

    stopped, res = go()
    assert res["epochs"] == 2  # every layer sharp after epoch 2
    again, res = go(resume=tmp_path / "last.pt")
    assert res["epochs"] == 2
    assert_same_weights(stopped, again)


def test_config_changes_on_resume_are_reported_and_split_changes_refused(tmp_path, caplog):
    config = {"seed": 0, "T": 8, "data": {"name": "folder", "val_size": 16, "subset": None}, "trainer": {"epochs": 1}}
    run(tmp_path, epochs=1, config=config)
    with pytest.raises(ResumeError, match=r"seed 0 -> 1 would change the train / validation split"):
        run(tmp_path / "b", epochs=2, resume=tmp_path / "last.pt", config={**config, "seed": 1})
    with pytest.raises(ResumeError, match=r"data\.val_size 16 -> 8 would change"):
        run(tmp_path / "b", epochs=2, resume=tmp_path / "last.pt",
            config={**config, "data": {**config["data"], "val_size": 8}})
    caplog.clear()
    run(tmp_path / "b", epochs=1, resume=tmp_path / "last.pt", config={**config, "T": 16})
    assert "overridden: T 8 -> 16" in caplog.text
