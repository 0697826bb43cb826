"""The paper's data-set loaders on tiny fixtures in the real on-disk layouts."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.data import DATASETS, DatasetError
from benchmarks.data import gsc as gsc_module
from benchmarks.data import voc as voc_module
from tests.fixtures import (
    WAV_HEADER_BYTES,
    make_cifar,
    make_gsc,
    make_voc,
    set_wav_format_tag,
    truncate,
    voc_xml,
    write_16bit_png,
    write_wav,
)

GSC_OPTS = {"unknown_share": 0.5, "silence_share": 0.5}


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_error(call, *needles: str) -> str:
    """``call()`` raises DatasetError whose message contains every needle and a how-to-get hint."""
    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    for needle in (*needles, "download"):
        assert needle in message, message
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------- GSC ----


@pytest.fixture
def gsc_root(tmp_path: Path) -> Path:
    make_gsc(tmp_path / "data")
    return tmp_path / "data"


def load_gsc(root: Path, cache: Path, **extra):
    return DATASETS.get("gsc")(root, seed=0, cache_dir=str(cache), **{**GSC_OPTS, **extra})


def test_gsc_shapes_classes_and_splits(gsc_root: Path, tmp_path: Path) -> None:
    splits = load_gsc(gsc_root, tmp_path / "cache")
    assert (splits.num_classes, splits.input_shape, splits.multilabel) == (12, (490,), False)
    # per split: 4 keywords x speakers; unknown/silence = round(0.5 * keywords)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [12 + 6 + 6, 4 + 2 + 2, 4 + 2 + 2]
    x, y = splits.train[0]
    assert x.shape == (490,) and x.dtype == torch.float32 and isinstance(y, int)
    train_labels = {splits.train[i][1] for i in range(len(splits.train))}
    assert train_labels == {0, 1, 2, 3, 4, 5}  # silence, unknown, yes, no, up, down
    train_x = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    assert train_x.mean(0).abs().max() < 1e-4 and torch.isfinite(train_x).all()
    assert len(splits.fingerprint) == 16


def test_gsc_features_are_cached_and_reused(gsc_root: Path, tmp_path: Path, monkeypatch) -> None:
    first = load_gsc(gsc_root, tmp_path / "cache")
    assert len(files_in(tmp_path / "cache")) == 1

    def fail(waveforms):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(gsc_module, "compute_features", fail)
    second = load_gsc(gsc_root, tmp_path / "cache")
    assert second.fingerprint == first.fingerprint
    assert torch.equal(second.test.x, first.test.x)


def test_gsc_fingerprint_tracks_files_and_options(gsc_root: Path, tmp_path: Path) -> None:
    base = load_gsc(gsc_root, tmp_path / "cache").fingerprint
    assert load_gsc(gsc_root, tmp_path / "cache", unknown_share=0.25).fingerprint != base
    clip = gsc_root / "SpeechCommands/speech_commands_v0.02/yes/00000002_nohash_0.wav"
    write_wav(clip, np.zeros(8000))
    assert load_gsc(gsc_root, tmp_path / "cache").fingerprint != base
    assert len(files_in(tmp_path / "cache")) == 3


def test_gsc_limit_caps_every_split(gsc_root: Path, tmp_path: Path) -> None:
    splits = DATASETS.get("gsc")(gsc_root, seed=1, limit=3, cache_dir=str(tmp_path / "c"), **GSC_OPTS)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [3, 3, 3]


def test_gsc_missing_root_and_folder(tmp_path: Path) -> None:
    load = DATASETS.get("gsc")
    assert_error(lambda: load(None, seed=0), "--data-dir")
    assert_error(lambda: load(tmp_path / "nope", seed=0), str(tmp_path / "nope"))
    assert_error(lambda: load(tmp_path, seed=0, version="v0.01"), "speech_commands_v0.01")


@pytest.mark.parametrize(
    "breakage, needle",
    [
        ("rate", "yes/00000003_nohash_0.wav"),
        ("width", "yes/00000003_nohash_0.wav"),
        ("stereo", "yes/00000003_nohash_0.wav"),
        ("garbage", "yes/00000003_nohash_0.wav"),
        ("no_test_list", "testing_list.txt"),
        ("listed_missing", "validation_list.txt"),
        ("noise_rate", "noise_0.wav"),
    ],
)
def test_gsc_bad_inputs(gsc_root: Path, tmp_path: Path, breakage: str, needle: str) -> None:
    base = gsc_root / "SpeechCommands/speech_commands_v0.02"
    clip, tone = base / "yes/00000003_nohash_0.wav", np.zeros(16000)
    if breakage == "rate":
        write_wav(clip, tone, rate=8000)
    elif breakage == "width":
        write_wav(clip, tone, width=4)
    elif breakage == "stereo":
        write_wav(clip, tone, channels=2)
    elif breakage == "garbage":
        clip.write_bytes(b"RIFF1234 not a wave file")
    elif breakage == "no_test_list":
        (base / "testing_list.txt").unlink()
    elif breakage == "listed_missing":
        (base / "no/00000001_nohash_0.wav").unlink()
    elif breakage == "noise_rate":
        write_wav(base / "_background_noise_/noise_0.wav", np.zeros(48000), rate=44100)
    assert_error(lambda: load_gsc(gsc_root, tmp_path / "cache"), needle)
    assert files_in(tmp_path / "cache") == []


def test_gsc_unknown_option(gsc_root: Path, tmp_path: Path) -> None:
    message = str(pytest.raises(DatasetError, load_gsc, gsc_root, tmp_path / "c", n_mels=64).value)
    assert "n_mels" in message and "unknown_share" in message


# A WAV damaged in each way, the phrase its error names (besides the file), and the file (relative to the base).
BAD_WAVS = {
    "truncated_after_header": ("truncated: the header declares", "yes/00000003_nohash_0.wav"),
    "truncated_mid_data": ("truncated: the header declares", "yes/00000003_nohash_0.wav"),
    "riff_only": ("no fmt and data chunks", "yes/00000003_nohash_0.wav"),
    "no_audio": ("no audio (0 frames)", "yes/00000003_nohash_0.wav"),
    "too_long": ("longer than the 1 s (16000 frames)", "yes/00000003_nohash_0.wav"),
    "float_format": ("format tag 3 (not PCM)", "yes/00000003_nohash_0.wav"),
    "noise_truncated": ("truncated: the header declares", "_background_noise_/noise_1.wav"),
}


def damage_wav(path: Path, breakage: str) -> None:
    """Damage the WAV at ``path`` as ``breakage`` (a key of BAD_WAVS) says."""
    if breakage in ("truncated_after_header", "noise_truncated"):
        truncate(path, WAV_HEADER_BYTES)  # the header still declares every frame
    elif breakage == "truncated_mid_data":
        truncate(path, WAV_HEADER_BYTES + 1001)
    elif breakage == "riff_only":
        truncate(path, 12)
    elif breakage == "no_audio":
        write_wav(path, np.zeros(0))
    elif breakage == "too_long":
        write_wav(path, np.zeros(24000))
    elif breakage == "float_format":
        set_wav_format_tag(path, 3)


@pytest.mark.parametrize("breakage", sorted(BAD_WAVS))
def test_gsc_refuses_a_bad_wav_before_featurising(gsc_root: Path, tmp_path: Path, monkeypatch, breakage: str) -> None:
    phrase, name = BAD_WAVS[breakage]
    base = gsc_root / "SpeechCommands/speech_commands_v0.02"
    damage_wav(base / name, breakage)

    def fail(waveforms):
        raise AssertionError("audio featurised before the WAV check")

    monkeypatch.setattr(gsc_module, "compute_features", fail)
    message = assert_error(lambda: load_gsc(gsc_root, tmp_path / "cache"), str(base / name), phrase)
    assert "re-extract the archive or remove the file" in message
    assert files_in(tmp_path / "cache") == []


def test_gsc_empty_keyword_folder_is_refused_empty_unknown_folder_ignored(gsc_root: Path, tmp_path: Path) -> None:
    base = gsc_root / "SpeechCommands/speech_commands_v0.02"
    reference = load_gsc(gsc_root, tmp_path / "first").fingerprint
    (base / "tree").mkdir()  # a non-keyword word ("unknown" candidate) without clips: ignored
    assert load_gsc(gsc_root, tmp_path / "first").fingerprint == reference
    (base / "left").mkdir()  # a keyword: its class would have no examples
    message = assert_error(lambda: load_gsc(gsc_root, tmp_path / "cache"), str(base / "left"), "holds no .wav clips")
    assert "class 'left'" in message
    assert files_in(tmp_path / "cache") == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong_shape", "not_tensors"])
def test_gsc_unreadable_feature_cache_is_removed_and_rebuilt(
    gsc_root: Path, tmp_path: Path, monkeypatch, damage: str
) -> None:
    first = load_gsc(gsc_root, tmp_path / "cache")
    (cache,) = files_in(tmp_path / "cache")
    intact = cache.read_bytes()
    if damage == "truncated":
        truncate(cache, len(intact) // 2)
    elif damage == "garbage":
        cache.write_bytes(b"\0" * 100)
    elif damage == "wrong_shape":
        torch.save({split: torch.zeros(2, 490) for split in ("train", "val", "test")}, cache)
    elif damage == "not_tensors":  # needs more than weights_only=True builds: refused, not executed
        torch.save({"train": Path("x")}, cache)
    with pytest.warns(UserWarning, match=f"removing unreadable feature cache {cache}"):
        again = load_gsc(gsc_root, tmp_path / "cache")
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.test.y, first.test.y)
    assert files_in(tmp_path / "cache") == [cache]

    def fail(waveforms):
        raise AssertionError("features recomputed despite the rebuilt cache")

    monkeypatch.setattr(gsc_module, "compute_features", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_gsc(gsc_root, tmp_path / "cache").val.x, first.val.x)


# ---------------------------------------------------------------------------- data root ----


@pytest.mark.parametrize("dataset", ["gsc", "cifar10", "voc", "digits"])
@pytest.mark.parametrize("download", [False, True])
def test_data_root_that_is_a_file_is_refused(tmp_path: Path, dataset: str, download: bool) -> None:
    root = tmp_path / "data.tar"
    root.write_bytes(b"not a folder")
    with pytest.raises(DatasetError) as info:
        DATASETS.get(dataset)(root, seed=0, download=download)
    message = str(info.value)
    assert message.startswith(f"{dataset}: data root {root} is a file") and "must be a folder" in message
    assert "\n" not in message and root.read_bytes() == b"not a folder"


# -------------------------------------------------------------------------------- CIFAR ----


def test_cifar_shapes_splits_and_augmentation(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    splits = DATASETS.get("cifar10")(tmp_path, seed=0)
    assert (splits.num_classes, splits.input_shape) == (10, (3, 32, 32))
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [90, 10, 20]
    x, y = splits.val[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert torch.equal(splits.val[3][0], x)  # eval items are deterministic
    train = splits.train
    train.set_epoch(0)
    first = torch.stack([train[i][0] for i in range(20)])
    again = torch.stack([train[i][0] for i in range(20)])
    train.set_epoch(1)
    other = torch.stack([train[i][0] for i in range(20)])
    assert torch.equal(first, again) and not torch.equal(first, other)
    same_seed = DATASETS.get("cifar10")(tmp_path, seed=0)
    same_seed.train.set_epoch(0)
    assert torch.equal(torch.stack([same_seed.train[i][0] for i in range(20)]), first)
    fresh = DATASETS.get("cifar10")(tmp_path, seed=0).train  # no set_epoch: torch's global RNG
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        draws.append(torch.stack([fresh[i][0] for i in range(20)]))
    assert torch.equal(*draws) and not torch.equal(torch.stack([fresh[i][0] for i in range(20)]), draws[0])


@pytest.mark.parametrize("py2", [True, False])
def test_cifar_reads_python2_and_python3_pickles(tmp_path: Path, py2: bool) -> None:
    make_cifar(tmp_path, py2=py2, seed=3)
    reference = pickle.loads((tmp_path / "cifar-10-batches-py/test_batch").read_bytes(), encoding="bytes")
    test = DATASETS.get("cifar10")(tmp_path, seed=0).test
    assert test.images.dtype == torch.uint8 and test.images.shape == (20, 3, 32, 32)
    assert torch.equal(test.images.reshape(20, -1), torch.from_numpy(reference[b"data"]))
    assert test.labels.tolist() == reference[b"labels"]


def test_cifar_limit_and_fingerprint(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    load = DATASETS.get("cifar10")
    small = load(tmp_path, seed=0, limit=7)
    assert [len(s) for s in (small.train, small.val, small.test)] == [7, 7, 7]
    one_batch = tmp_path / "one"
    make_cifar(one_batch, train_batches=1)
    fp = load(one_batch, seed=0).fingerprint
    assert fp != load(tmp_path, seed=0).fingerprint and fp != load(one_batch, seed=1).fingerprint


@pytest.mark.parametrize("breakage", ["truncated", "labels", "shape", "no_test", "no_train", "evil"])
def test_cifar_bad_inputs(tmp_path: Path, breakage: str) -> None:
    folder = make_cifar(tmp_path)
    target = folder / "data_batch_2"
    if breakage == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    elif breakage == "labels":
        target.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    elif breakage == "shape":
        target.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    elif breakage == "no_test":
        target = folder / "test_batch"
        target.unlink()
    elif breakage == "no_train":
        for path in folder.glob("data_batch_*"):
            path.unlink()
        target = folder
    elif breakage == "evil":
        target.write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    assert_error(lambda: DATASETS.get("cifar10")(tmp_path, seed=0), str(target))


def test_cifar_missing_root_and_unknown_option(tmp_path: Path) -> None:
    assert_error(lambda: DATASETS.get("cifar10")(tmp_path, seed=0), "cifar-10-batches-py")
    with pytest.raises(DatasetError, match="augment"):
        DATASETS.get("cifar10")(tmp_path, seed=0, augment=False)


# ---------------------------------------------------------------------------------- VOC ----


def test_voc_shapes_targets_and_splits(tmp_path: Path) -> None:
    make_voc(tmp_path)
    splits = DATASETS.get("voc")(tmp_path, seed=0, image_size=32)
    assert (splits.num_classes, splits.input_shape, splits.multilabel) == (20, (3, 32, 32), True)
    assert splits.task_metric == "map"
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [9, 1, 4]
    assert sorted(splits.train.ids + splits.val.ids) == [f"2008_{i:06d}" for i in range(10)]
    assert splits.test.ids == [f"2008_{i:06d}" for i in range(10, 14)]
    x, target = splits.test[0]  # image 10: class 10 present, class 11 only difficult
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert target.dtype == torch.float32 and target.shape == (20,)
    assert target.nonzero().flatten().tolist() == [10]
    assert splits.train[0][0].shape == (3, 32, 32)
    splits.train.set_epoch(0)
    assert torch.equal(splits.train[2][0], splits.train[2][0])


@pytest.mark.parametrize("breakage", ["xml", "jpeg", "class", "list", "bad_jpeg"])
def test_voc_bad_inputs(tmp_path: Path, breakage: str) -> None:
    base = make_voc(tmp_path)
    load = lambda: DATASETS.get("voc")(tmp_path, seed=0, image_size=32)  # noqa: E731
    if breakage == "xml":
        (base / "Annotations/2008_000003.xml").write_text("<annotation><object>")
        assert_error(load, "2008_000003.xml")
    elif breakage == "jpeg":
        (base / "JPEGImages/2008_000012.jpg").unlink()
        assert_error(load, "2008_000012.jpg")
    elif breakage == "class":
        (base / "Annotations/2008_000001.xml").write_text(voc_xml("2008_000001", [("unicorn", False)]))
        assert_error(load, "2008_000001.xml", "unicorn")
    elif breakage == "list":
        (base / "ImageSets/Main/val.txt").unlink()
        assert_error(load, "val.txt")
    elif breakage == "bad_jpeg":  # found up front, when loading (see test_voc_refuses_a_bad_image_up_front)
        (base / "JPEGImages/2008_000010.jpg").write_bytes(b"not a jpeg")
        assert_error(load, "2008_000010.jpg")


BAD_IMAGES = {
    "garbage": "PIL cannot identify it as an image",
    "truncated": "truncated or corrupt JPEG data",
    "header_only": "not a readable image (OSError: Truncated File Read)",
    "sixteen_bit": "mode 'I;16' does not convert to 8-bit RGB",
    "too_large": "size 64 x 48 px (expected 1..50 px per side)",
    "bomb": "refused by PIL's decompression-bomb check",
    "bomb_warning": "refused by PIL's decompression-bomb check",
}


@pytest.mark.parametrize("breakage", sorted(BAD_IMAGES))
def test_voc_refuses_a_bad_image_up_front(tmp_path: Path, monkeypatch, breakage: str) -> None:
    base = make_voc(tmp_path)
    image = base / "JPEGImages/2008_000005.jpg"  # a train.txt image
    if breakage == "garbage":
        image.write_bytes(b"not a jpeg")
    elif breakage == "truncated":
        truncate(image, len(image.read_bytes()) // 2)  # header intact, scan data cut
    elif breakage == "header_only":
        truncate(image, 300)  # cut inside the JPEG header
    elif breakage == "sixteen_bit":
        write_16bit_png(image)
    elif breakage == "too_large":
        monkeypatch.setattr(voc_module, "MAX_SIDE", 50)
    elif breakage == "bomb":  # 64 x 48 = 3072 px > 2 x limit: PIL's DecompressionBombError
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    elif breakage == "bomb_warning":  # limit < 3072 px <= 2 x limit: PIL only warns; refused all the same
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    if breakage in ("too_large", "bomb", "bomb_warning"):  # every image is "bad": the first one is named
        image = base / "JPEGImages/2008_000000.jpg"
    message = assert_error(lambda: DATASETS.get("voc")(tmp_path, seed=0, image_size=32), str(image))
    assert BAD_IMAGES[breakage] in message and message.startswith(f"voc: bad image {image}: "), message
    assert "re-extracting the archive" in message


def test_voc_image_checks_accept_trailing_bytes_and_respect_limit(tmp_path: Path) -> None:
    base = make_voc(tmp_path)
    image = base / "JPEGImages/2008_000011.jpg"
    image.write_bytes(image.read_bytes() + b"\0" * 16)  # bytes after the end-of-image marker: decodes fine
    DATASETS.get("voc")(tmp_path, seed=0, image_size=32)
    (base / "JPEGImages/2008_000012.jpg").write_bytes(b"not a jpeg")  # a test image left out by limit=1
    splits = DATASETS.get("voc")(tmp_path, seed=0, image_size=32, limit=1)
    assert "2008_000012" not in splits.test.ids


def test_voc_image_damaged_after_loading_is_one_clear_error(tmp_path: Path) -> None:
    base = make_voc(tmp_path)
    splits = DATASETS.get("voc")(tmp_path, seed=0, image_size=32)
    (base / "JPEGImages/2008_000010.jpg").write_bytes(b"not a jpeg")
    assert_error(lambda: splits.test[0], "2008_000010.jpg")


def test_voc_missing_root_and_unknown_option(tmp_path: Path) -> None:
    assert_error(lambda: DATASETS.get("voc")(tmp_path, seed=0), "VOCdevkit")
    with pytest.raises(DatasetError, match="size.*allowed: crop_scale, image_size, val_share"):
        DATASETS.get("voc")(tmp_path, seed=0, size=64)
