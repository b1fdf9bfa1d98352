"""SHD / SSC readers (spikegrad.temporal.shd) on small files written here in the published layout."""

import gzip
import logging
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from spikegrad.temporal.shd import SHDData, download, load_events, speaker_split

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


def _vlen(arrays, dtype):
    out = np.empty(len(arrays), dtype=object)  # element-wise, so equal lengths do not make a 2-D array
    for k, a in enumerate(arrays):
        out[k] = np.asarray(a, dtype=dtype)
    return out


def write_h5(path, times, units, labels, speakers=None, times_key="spikes/times"):
    """An SHD / SSC file: vlen float32 times (s), vlen uint16 units, uint16 labels, extra/ group."""
    with h5py.File(path, "w") as f:
        f.create_dataset(times_key, data=_vlen(times, np.float32), dtype=h5py.vlen_dtype(np.float32))
        f.create_dataset("spikes/units", data=_vlen(units, np.uint16), dtype=h5py.vlen_dtype(np.uint16))
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers, np.uint16))
        f.create_dataset("extra/keys", data=[b"zero", b"one"])
    return Path(path)


def random_file(path, n, n_speakers=6, n_classes=20, seed=0, t_max=1.3):
    """``n`` samples of 0..40 spikes at uniform times in [0, t_max) s; speakers 0..n_speakers-1."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 41, n)
    times = [rng.uniform(0, t_max, c) for c in counts]
    units = [rng.integers(0, 700, c) for c in counts]
    labels = rng.integers(0, n_classes, n)
    speakers = rng.integers(0, n_speakers, n)
    return write_h5(path, times, units, labels, speakers), times, units, labels


def gzip_file(src, dest):
    with open(src, "rb") as f, gzip.open(dest, "wb") as g:
        shutil.copyfileobj(f, g)
    return Path(dest)


def reference_dense(times, units, n_steps, dt_s, channels):
    """Per-spike Python loop: float64 floor(t / dt_s), channel // (700 // channels)."""
    out = torch.zeros(len(times), n_steps, channels)
    for k, (ts, us) in enumerate(zip(times, units)):
        for t, u in zip(np.asarray(ts, np.float32), us):
            step = math.floor(float(t) / dt_s)
            if step < n_steps:
                out[k, step, int(u) // (700 // channels)] += 1
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------ binning
HAND_TIMES = [[0.0, 0.015, 0.0299, 0.031, 0.5, 0.012], [0.0395]]
HAND_UNITS = [[3, 3, 699, 0, 10, 50], [7]]


def test_binning_matches_hand_computed_dense(tmp_path):
    path = write_h5(tmp_path / "shd_train.h5", HAND_TIMES, HAND_UNITS, [4, 19], [2, 5])
    events, speakers = load_events(path, n_steps=4, dt_s=0.01)
    want = torch.zeros(2, 4, 700)
    want[0, 0, 3] = want[0, 1, 3] = want[0, 2, 699] = want[0, 3, 0] = want[0, 1, 50] = 1  # t=0.5 s: dropped
    want[1, 3, 7] = 1
    x = events.dense([0, 1])
    assert x.dtype == torch.float32 and torch.equal(x, want)
    assert events.labels.tolist() == [4, 19] and events.labels.dtype == torch.int64
    assert speakers.tolist() == [2, 5] and speakers.dtype == torch.int64
    assert events.offsets.tolist() == [0, 5, 6]


def test_spikes_after_the_window_are_dropped_and_counted(tmp_path, caplog):
    path = write_h5(tmp_path / "shd_train.h5", HAND_TIMES, HAND_UNITS, [4, 19], [2, 5])
    with caplog.at_level(logging.INFO, logger="spikegrad.data"):
        events, _ = load_events(path, n_steps=4, dt_s=0.01)
    assert events.steps.numel() == 6 and int(events.steps.max()) == 3
    assert "shd_train.h5: 1 of 7 spikes (14.29%) fall after the 4-step window" in caplog.text
    with caplog.at_level(logging.INFO, logger="spikegrad.data"):
        events, _ = load_events(path, n_steps=51, dt_s=0.01)  # t = 0.5 s is step 50: kept
    assert events.steps.numel() == 7 and "0 of 7 spikes" in caplog.text


def test_channel_reduction_sums_neighbouring_channels(tmp_path):
    path = write_h5(tmp_path / "shd_train.h5", HAND_TIMES, HAND_UNITS, [4, 19], [2, 5])
    events, _ = load_events(path, n_steps=4, dt_s=0.01, channels=7)  # groups of 100 channels
    x = events.dense([0, 1])
    assert x.shape == (2, 4, 7) and events.n_units == 7
    assert x[0, 1, 0] == 2  # channels 3 and 50 in step 1 add up in unit 0
    assert x[0, 2, 6] == 1 and x[0, 0, 0] == 1 and x[0, 3, 0] == 1 and x[1, 3, 0] == 1
    assert x.sum() == 6


@pytest.mark.parametrize("channels", [700, 140, 7])
def test_vectorised_reader_equals_per_spike_loop(tmp_path, channels):
    path, times, units, labels = random_file(tmp_path / "shd_train.h5", 60)
    events, _ = load_events(path, n_steps=25, dt_s=0.04, channels=channels)  # 1 s window, spikes up to 1.3 s
    x = events.dense(torch.arange(60))
    assert torch.equal(x, reference_dense(times, units, 25, 0.04, channels))
    assert events.labels.tolist() == labels.tolist()
    full, _ = load_events(path, n_steps=25, dt_s=0.04)
    assert torch.equal(x, full.dense(torch.arange(60)).view(60, 25, channels, 700 // channels).sum(-1))


# --------------------------------------------------------------------------------- gzip
def test_gzip_file_equals_plain_file_and_is_cached_outside_the_data_folder(tmp_path):
    plain, *_ = random_file(tmp_path / "shd_train.h5", 30)
    (tmp_path / "data").mkdir()
    gz = gzip_file(plain, tmp_path / "data" / "shd_train.h5.gz")
    a, spk_a = load_events(plain, 20, 0.05, channels=70)
    b, spk_b = load_events(gz, 20, 0.05, channels=70)
    for field in ("steps", "units", "offsets", "labels"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert torch.equal(spk_a, spk_b)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["shd_train.h5.gz"]  # nothing written beside it
    cached = list((tmp_path / "cache").rglob("*.h5"))
    assert len(cached) == 1 and cached[0].name.startswith("shd_train_")
    mtime = cached[0].stat().st_mtime_ns
    load_events(gz, 20, 0.05)  # decompressed once: the cache copy is reused
    assert list((tmp_path / "cache").rglob("*.h5")) == cached and cached[0].stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------------- errors
def test_truncated_file_says_re_download(tmp_path):
    path, *_ = random_file(tmp_path / "shd_test.h5", 200)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"shd_test\.h5 is not a readable HDF5 file.*re-download"):
        load_events(path, 100, 0.01)
    gz = gzip_file(random_file(tmp_path / "x.h5", 200)[0], tmp_path / "shd_train.h5.gz")
    raw = gz.read_bytes()
    gz.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"shd_train\.h5\.gz could not be decompressed.*re-download"):
        load_events(gz, 100, 0.01)
    assert not list((tmp_path / "cache").rglob("*.h5")) and not list((tmp_path / "cache").rglob("*.part"))


def test_wrong_key_names_the_missing_key_and_the_keys_found(tmp_path):
    path = write_h5(tmp_path / "shd_train.h5", HAND_TIMES, HAND_UNITS, [4, 19], [2, 5], times_key="spikes/time")
    with pytest.raises(ValueError, match=r"no dataset 'spikes/times'; found \[.*'spikes/time'.*\]"):
        load_events(path, 100, 0.01)


def test_bad_values_in_the_file(tmp_path):
    path = write_h5(tmp_path / "a.h5", [[0.1, 0.2]], [[5, 700]], [1], [0])
    with pytest.raises(ValueError, match=r"sample 0 has the channel id 700, outside 0\.\.699"):
        load_events(path, 100, 0.01)
    path = write_h5(tmp_path / "b.h5", [[0.1], [-0.2]], [[5], [6]], [1, 2], [0, 0])
    with pytest.raises(ValueError, match=r"sample 1 has the spike time -0\.2.*finite and >= 0"):
        load_events(path, 100, 0.01)
    path = write_h5(tmp_path / "c.h5", [[0.1], [0.2]], [[5], [6]], [1, 20], [0, 0])
    with pytest.raises(ValueError, match=r"label 20 of sample 1 is outside the 20 classes"):
        load_events(path, 100, 0.01, n_classes=20)
    with h5py.File(tmp_path / "d.h5", "w") as f:  # one more unit array than time arrays
        f.create_dataset("spikes/times", data=_vlen([[0.1]], np.float32), dtype=h5py.vlen_dtype(np.float32))
        f.create_dataset("spikes/units", data=_vlen([[1], [2]], np.uint16), dtype=h5py.vlen_dtype(np.uint16))
        f.create_dataset("labels", data=np.zeros(1, np.uint16))
    with pytest.raises(ValueError, match="one entry per sample"):
        load_events(tmp_path / "d.h5", 100, 0.01)


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=3), r"channels must divide 700.*\[1, 2, 4, 5, 7, 10"),
    (dict(channels=0), "channels must divide 700"),
    (dict(n_steps=0), "n_steps must be an int >= 1"),
    (dict(n_steps=2.5), "n_steps must be an int >= 1"),
    (dict(dt_s=0.0), "dt_s must be a finite number > 0"),
    (dict(dt_s=float("nan")), "dt_s must be a finite number > 0"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    path = write_h5(tmp_path / "a.h5", [[0.1]], [[5]], [1], [0])
    args = dict(n_steps=100, dt_s=0.01) | kwargs
    with pytest.raises(ValueError, match=match):
        load_events(path, **args)
    with pytest.raises(ValueError, match=match):
        SHDData(root=str(tmp_path), **args)


def test_missing_files_list_what_is_expected_where(tmp_path):
    write_h5(tmp_path / "shd_train.h5", [[0.1]], [[5]], [1], [0])
    with pytest.raises(FileNotFoundError, match=r"missing: shd_test\.h5 \(or shd_test\.h5\.gz\)(.|\n)*"
                                                 + str(tmp_path) + r"(.|\n)*data\.root=DIR"):
        SHDData(root=str(tmp_path)).loaders()
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_events(tmp_path / "nope.h5", 100, 0.01)


def test_config_fields_are_checked():
    with pytest.raises(ValueError, match=r"n_classes=20 does not match 'ssc'.*set it to 35"):
        SHDData(name="ssc", n_classes=20)
    with pytest.raises(ValueError, match=r"n_units=700 does not match"):
        SHDData(channels=140, n_units=700)
    with pytest.raises(ValueError, match="name must be one of"):
        SHDData(name="nmnist")
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\)"):
        SHDData(val_fraction=1.0)
    d = SHDData(name="ssc", channels=140)
    assert (d.n_units, d.n_classes) == (140, 35)


# ---------------------------------------------------------------------------------- splits
SPEAKERS = torch.repeat_interleave(torch.arange(10), torch.tensor([30, 10, 25, 40, 15, 20, 35, 5, 12, 8]))


def test_speaker_split_is_disjoint_by_speaker_and_covers_all():
    for seed in range(5):
        train, val = speaker_split(SPEAKERS, 0.2, seed)
        assert len(val) > 0 and torch.equal(torch.cat([train, val]).sort().values, torch.arange(len(SPEAKERS)))
        assert not set(SPEAKERS[train].tolist()) & set(SPEAKERS[val].tolist())
        # the held-out count is the closest to 20% of the 200 samples over the prefixes of the speaker order
        assert abs(len(val) - 40) <= 40


def test_speaker_split_is_seeded():
    a, b = speaker_split(SPEAKERS, 0.1, 3), speaker_split(SPEAKERS, 0.1, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    held = {tuple(sorted(set(SPEAKERS[speaker_split(SPEAKERS, 0.1, s)[1]].tolist()))) for s in range(10)}
    assert len(held) > 1  # other seeds hold out other speakers
    train, val = speaker_split(SPEAKERS, 0.0, 0)
    assert len(val) == 0 and len(train) == len(SPEAKERS)
    with pytest.raises(ValueError, match="at least 2 speakers"):
        speaker_split(torch.zeros(5, dtype=torch.int64), 0.1, 0)


# --------------------------------------------------------------------------------- loaders
def test_shd_loaders_yield_batches_and_hold_out_speakers(tmp_path):
    random_file(tmp_path / "shd_train.h5", 120, n_speakers=8, seed=1)
    gzip_file(random_file(tmp_path / "t.h5", 40, seed=2)[0], tmp_path / "shd_test.h5.gz")
    (tmp_path / "t.h5").unlink()
    data = SHDData(root=str(tmp_path), n_steps=20, dt_s=0.05, channels=70, val_fraction=0.25, batch_size=16,
                   eval_batch_size=32)
    train, val, test = data.loaders(seed=0)
    x, y = next(iter(train))
    assert x.shape == (16, 20, 70) and x.dtype == torch.float32 and y.shape == (16,) and y.dtype == torch.int64
    xt, yt = next(iter(test))
    assert xt.shape == (32, 20, 70) and yt.dtype == torch.int64 and len(test.dataset) == 40
    assert len(train.dataset) + len(val.dataset) == 120 and 0 < len(val.dataset) < 120
    _, speakers = load_events(tmp_path / "shd_train.h5", 20, 0.05)
    train_idx, val_idx = speaker_split(speakers, 0.25, 0)
    assert len(val.dataset) == len(val_idx)
    train, val, _ = SHDData(root=str(tmp_path), val_fraction=0.0, subset=50, batch_size=8).loaders(seed=0)
    assert val is None and len(train.dataset) == 50
    with pytest.raises(ValueError, match="subset=500 exceeds"):
        SHDData(root=str(tmp_path), subset=500).loaders()


def test_ssc_uses_the_validation_file(tmp_path):
    random_file(tmp_path / "ssc_train.h5", 50, n_classes=35, seed=1)
    random_file(tmp_path / "ssc_valid.h5", 13, n_classes=35, seed=2)
    random_file(tmp_path / "ssc_test.h5", 17, n_classes=35, seed=3)
    train, val, test = SHDData(name="ssc", root=str(tmp_path), batch_size=10).loaders(seed=0)
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (50, 13, 17)
    x, y = next(iter(val))
    assert x.shape == (13, 100, 700) and x.dtype == torch.float32 and y.dtype == torch.int64
    with pytest.raises(ValueError, match="outside the 20 classes"):  # SSC labels 20..34 are not SHD's
        shutil.copy(tmp_path / "ssc_train.h5", tmp_path / "shd_train.h5")
        shutil.copy(tmp_path / "ssc_test.h5", tmp_path / "shd_test.h5")
        SHDData(root=str(tmp_path)).loaders()


@pytest.mark.parametrize("stem, n_classes", [("shd", 20), ("ssc", 35)])
def test_yaml_configs_instantiate(tmp_path, stem, n_classes):
    cfg = OmegaConf.load(CONF / f"{stem}.yaml")
    cfg.root, cfg.channels = str(tmp_path), 140
    data = instantiate(cfg)
    assert isinstance(data, SHDData) and data.name == stem and data.download is False
    assert (data.n_units, data.n_classes, data.n_steps, data.dt_s) == (140, n_classes, 100, 0.01)


# -------------------------------------------------------------------------------- download
def test_download_from_a_file_url_checks_the_layout(tmp_path):
    src = tmp_path / "server"
    src.mkdir()
    for split in ("train", "test"):
        gzip_file(random_file(tmp_path / "x.h5", 10)[0], src / f"shd_{split}.h5.gz")
    root = download("shd", tmp_path / "data", base_url=src.as_uri(), progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["shd_test.h5.gz", "shd_train.h5.gz"]
    download("shd", root, base_url=(tmp_path / "empty").as_uri(), progress=False)  # all there: nothing fetched
    train, _, _ = SHDData(root=str(root), val_fraction=0.0).loaders()
    assert len(train.dataset) == 10
    (src / "shd_test.h5.gz").write_bytes(b"\x1f\x8b not a gzip stream")
    (root / "shd_test.h5.gz").unlink()
    with pytest.raises(RuntimeError, match=r"Could not download .*shd_test\.h5\.gz(.|\n)*re-download"):
        download("shd", root, base_url=src.as_uri(), progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["shd_train.h5.gz"]  # no partial file left behind
