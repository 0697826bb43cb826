"""Google Speech Commands (Warden 2018) as 12-class keyword spotting on 10x49 MFCC features.

Layout (torchaudio's ``SPEECHCOMMANDS(root, url="speech_commands_v0.02", download=True)``)::

    <root>/SpeechCommands/speech_commands_v0.02/<word>/<speaker>_nohash_<n>.wav   16 kHz, int16, mono
                                               validation_list.txt, testing_list.txt
                                               _background_noise_/*.wav

Classes (TensorFlow speech_commands order): 0 silence, 1 unknown, 2.. yes no up down left right on
off stop go. Splits follow the list files (train = every clip in neither list; speakers are
disjoint). Per split, ``unknown_share`` x (number of keyword clips) clips of other words are drawn
(seeded) as "unknown", and ``silence_share`` x (number of keyword clips) 1 s "silence" clips are
cut from the background-noise files at seeded offsets, scaled by a seeded volume in [0, 1). Each
noise file is divided in time (train 80 %, val 10 %, test 10 %) so splits share no noise audio.

Features (as in Hello Edge, Zhang et al. 2017, used for the ECQx/FantastIC4 MLP_GSC): clips are
zero-padded at the end / cropped to 1 s = 16000 samples; 10 MFCCs (log-mel, 40 mel bands,
20..4000 Hz) over 40 ms windows (640 samples) with 20 ms hop (320 samples), center=False ->
49 frames; flattened time-major to 490 values and normalised per value with the training split's
mean/std. Raw features are cached in ``cache_dir`` (one .pt per fingerprint, written atomically).

Checks, each a one-line DatasetError naming the file or folder, raised before any audio is decoded and
before the cache is written (so a failed load leaves no cache file):
- every keyword folder (one of the 10 words: a class) that exists must hold .wav clips; a missing
  keyword folder is allowed (subsets), and an empty folder of any other word (an "unknown"
  candidate) is ignored, as it contributes no clips;
- every noise file (when scanning) and every clip the selected examples read (on a cache miss,
  before featurising) must be a complete RIFF/WAVE file (:mod:`benchmarks.data.wav`): 16 kHz,
  16-bit, mono PCM, with 1 .. 16000 frames for a clip (>= 1 for a noise file) and as many data
  bytes as its header declares. Headers only: measured 15 us per file on a warm page cache
  (0.5 ms for the 32 WAVs of the test fixture; about 0.15 s per 10k clips, against about 0.4 s per
  10k to read their audio). Clips not used by this load (unpicked "unknown" words, clips left out
  by ``limit``) are not opened.
A feature cache that cannot be loaded (``torch.load(weights_only=True)``) or does not fit is named
in a warning, removed and rebuilt.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from benchmarks.data.common import (
    check_limit,
    check_options,
    check_root,
    fingerprint,
    limit_indices,
    mix,
    one_line,
    require,
    save_atomic,
)
from benchmarks.data.splits import DATASETS, DatasetError, DataSplits
from benchmarks.data.wav import PCM, WavFormatError, WavHeader, read_header

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
CLASSES = ("silence", "unknown") + WORDS
SILENCE, UNKNOWN = 0, 1
SAMPLE_RATE = 16_000
CLIP = SAMPLE_RATE  # samples per example (1 s)
MFCC_CONFIG = {
    "sample_rate": SAMPLE_RATE,
    "n_mfcc": 10,
    "log_mels": True,
    "melkwargs": {
        "n_fft": 640,
        "win_length": 640,
        "hop_length": 320,
        "n_mels": 40,
        "f_min": 20.0,
        "f_max": 4000.0,
        "center": False,
    },
}
NUM_FEATURES = 10 * 49
EXPECTED = "16000 Hz, 16-bit, mono PCM as in Speech Commands"
SPLITS = ("train", "val", "test")
NOISE_SPAN = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}  # share of each noise file
DEFAULTS = {"version": "v0.02", "unknown_share": 0.1, "silence_share": 0.1, "cache_dir": None}
CHUNK = 1024  # clips read and featurised at once (64 MB of float32 audio)
HOW_TO_GET = (
    "get it with --download, or torchaudio.datasets.SPEECHCOMMANDS(root, url='speech_commands_{v}', "
    "download=True), so that <data dir>/SpeechCommands/speech_commands_{v}/ exists"
)

# An example's source: ("wav", relative path) or ("silence", noise relative path, start, volume).
Item = tuple


class Features(Dataset):
    """x: float32 (N, 490) normalised MFCCs; y: int64 (N,). Item: (float32 (490,), int class)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.x[index], int(self.y[index])


@functools.lru_cache(maxsize=1)
def _mfcc() -> torch.nn.Module:
    import torchaudio

    return torchaudio.transforms.MFCC(**MFCC_CONFIG)


def compute_features(waveforms: Tensor) -> Tensor:
    """float32 (N, 16000) audio in [-1, 1) -> float32 (N, 490) MFCCs, 49 frames x 10 coefficients."""
    with torch.no_grad():
        mfcc = _mfcc()(waveforms)  # (N, 10, 49)
    return mfcc.transpose(1, 2).reshape(len(waveforms), NUM_FEATURES).contiguous()


def check_wav(path: Path, how: str, max_frames: int | None = None) -> WavHeader:
    """The header of ``path`` if it is a complete 16 kHz, 16-bit, mono PCM WAV holding 1 ..
    ``max_frames`` frames (no upper bound when None); anything else -> DatasetError naming it."""
    try:
        header = read_header(path)
    except (WavFormatError, OSError) as error:
        raise _bad_wav(path, str(error), how) from None
    found = (header.format, header.rate, header.bits, header.channels)
    if found != (PCM, SAMPLE_RATE, 16, 1):
        kind = "PCM" if header.format == PCM else f"format tag {header.format} (not PCM)"
        problem = f"{header.rate} Hz, {header.bits}-bit, {header.channels} channel(s), {kind}; expected {EXPECTED}"
        raise _bad_wav(path, problem, how)
    if header.frames == 0:
        raise _bad_wav(path, "its data chunk holds no audio (0 frames)", how)
    if max_frames is not None and header.frames > max_frames:
        problem = (
            f"{header.frames} frames ({header.frames / SAMPLE_RATE:.2f} s), longer than the "
            f"{max_frames / SAMPLE_RATE:g} s ({max_frames} frames) of a Speech Commands clip"
        )
        raise _bad_wav(path, problem, how)
    return header


def _bad_wav(path: Path, problem: str, how: str) -> DatasetError:
    """The one-line error for a bad WAV: file, what is wrong, and the fix."""
    return DatasetError(f"gsc: bad WAV {path}: {one_line(problem)}; re-extract the archive or remove the file; {how}")


def read_clip(path: Path, how: str, start: int = 0, max_frames: int | None = None) -> np.ndarray:
    """float32 (16000,) samples from ``start``: zero-padded at the end / cropped to 1 s.
    The file is checked first (see :func:`check_wav`)."""
    header = check_wav(path, how, max_frames)
    count = max(0, min(CLIP, header.frames - start))
    samples = np.fromfile(path, dtype="<i2", count=count, offset=header.offset + 2 * start) if count else []
    clip = np.zeros(CLIP, dtype=np.float32)
    clip[: len(samples)] = np.asarray(samples, dtype=np.float32) / 32768.0
    return clip


def _scan(base: Path, how: str) -> tuple[dict[str, int], list[str], dict[str, int]]:
    """(word clips relpath -> bytes, [validation, testing] list file names, noise relpath -> frames).

    Every noise file is checked here (see :func:`check_wav`); word clips only by name and size."""
    clips = _scan_words(base, how)
    noise = {}
    for path in sorted((base / "_background_noise_").glob("*.wav")):
        noise[f"_background_noise_/{path.name}"] = check_wav(path, how).frames
    return clips, ["validation_list.txt", "testing_list.txt"], noise


def _scan_words(base: Path, how: str) -> dict[str, int]:
    """Word clips relpath -> bytes. A keyword folder (one of WORDS: a class) without clips is an error;
    an empty folder of another word (an "unknown" candidate) contributes nothing and is ignored."""
    clips = {}
    for word in sorted(base.iterdir()):
        if not word.is_dir() or word.name.startswith("_"):
            continue
        found = {f"{word.name}/{path.name}": path.stat().st_size for path in sorted(word.glob("*.wav"))}
        if not found and word.name in WORDS:
            raise DatasetError(
                f"gsc: keyword folder {word} holds no .wav clips, so class {word.name!r} would have no "
                f"examples; re-extract the archive (or delete the folder if this subset leaves the keyword out); {how}"
            )
        clips.update(found)
    if not clips:
        raise DatasetError(f"gsc: no <word>/*.wav clips in {base}; {how}")
    return clips


def _read_list(base: Path, name: str, clips: dict[str, int], how: str) -> set[str]:
    """The clip paths named by list file ``name``; each must exist."""
    path = require(base / name, "gsc", "the split list of the Speech Commands layout", how)
    listed = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    missing = sorted(listed - set(clips))
    if missing:
        raise DatasetError(f"gsc: {path} lists {len(missing)} clip(s) not found under {base}, e.g. {missing[0]}; {how}")
    return listed


def _select(
    base: Path, clips: dict[str, int], noise: dict[str, int], opts: dict, seed: int, how: str
) -> dict[str, list[tuple[Item, int]]]:
    """Per split: the (item, class) examples: keywords, seeded unknowns, seeded silence clips."""
    val = _read_list(base, "validation_list.txt", clips, how)
    test = _read_list(base, "testing_list.txt", clips, how)
    members = {"train": sorted(set(clips) - val - test), "val": sorted(val), "test": sorted(test - val)}
    selected = {}
    for number, split in enumerate(SPLITS):
        rng = np.random.default_rng(mix(seed, number))
        known = [(("wav", p), CLASSES.index(p.split("/")[0])) for p in members[split] if p.split("/")[0] in WORDS]
        others = [p for p in members[split] if p.split("/")[0] not in WORDS]
        n_unknown = min(len(others), round(opts["unknown_share"] * len(known)))
        picks = sorted(rng.choice(len(others), size=n_unknown, replace=False)) if n_unknown else []
        unknown = [(("wav", others[i]), UNKNOWN) for i in picks]
        n_silence = round(opts["silence_share"] * len(known))
        silence = [(item, SILENCE) for item in _silence_items(noise, split, n_silence, rng, base, how)]
        selected[split] = known + unknown + silence
    return selected


def _silence_items(
    noise: dict[str, int], split: str, count: int, rng: np.random.Generator, base: Path, how: str
) -> list[Item]:
    """``count`` seeded 1 s noise clips from this split's time span of the noise files."""
    if count == 0:
        return []
    if not noise:
        raise DatasetError(
            f"gsc: no background-noise WAVs in {base / '_background_noise_'} (needed for the "
            f"'silence' class; or set silence_share=0); {how}"
        )
    names = sorted(noise)
    items = []
    for _ in range(count):
        name = names[rng.integers(len(names))]
        low, high = (round(share * noise[name]) for share in NOISE_SPAN[split])
        if high - low < CLIP:  # span shorter than 1 s: fall back to the whole file
            low, high = 0, noise[name]
        start = int(rng.integers(low, max(low, high - CLIP) + 1))
        items.append(("silence", name, start, round(float(rng.uniform(0.0, 1.0)), 6)))
    return items


def _featurise(base: Path, items: list[Item], how: str) -> Tensor:
    """float32 (N, 490) raw MFCCs of the items, computed CHUNK clips at a time."""
    out = [torch.zeros(0, NUM_FEATURES)]
    for first in range(0, len(items), CHUNK):
        audio = np.stack([_audio(base, item, how) for item in items[first : first + CHUNK]])
        out.append(compute_features(torch.from_numpy(audio)))
    return torch.cat(out)


def _audio(base: Path, item: Item, how: str) -> np.ndarray:
    """float32 (16000,) audio of one item."""
    if item[0] == "wav":
        return read_clip(base / item[1], how, max_frames=CLIP)
    _, name, start, volume = item
    return read_clip(base / name, how, start) * np.float32(volume)


def _cached_features(path: Path, base: Path, selected: dict, how: str) -> dict[str, Tensor]:
    """Raw features per split, from the cache file or computed (and then cached).

    Before any audio is decoded (and so before the cache is written), every WAV the examples read is
    checked (:func:`_check_sources`): a bad file raises and leaves no cache behind."""
    cached = _load_cache(path, selected)
    if cached is not None:
        return cached
    _check_sources(base, selected, how)
    features = {split: _featurise(base, [item for item, _ in selected[split]], how) for split in SPLITS}
    try:
        save_atomic(features, path)
    except OSError as error:
        warnings.warn(f"gsc: could not write feature cache {path} ({error})", stacklevel=3)
    return features


def _load_cache(path: Path, selected: dict) -> dict[str, Tensor] | None:
    """The cached raw features, or None when there is no cache file. A file that cannot be loaded
    (truncated, corrupt: ``torch.load(weights_only=True)``, which builds tensors only) or that does not
    fit ``selected`` is named in a warning and removed, so that the caller rebuilds it."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        problem = _cache_defect(cached, selected)
    except Exception as error:  # a damaged zip/pickle fails in many ways
        problem = f"{type(error).__name__}: {one_line(str(error).split('. ')[0], 160)}"  # first sentence
    if not problem:
        return cached
    warnings.warn(f"gsc: removing unreadable feature cache {path} ({problem}); rebuilding it", stacklevel=4)
    try:
        path.unlink()
    except OSError as error:
        warnings.warn(f"gsc: could not remove {path} ({error})", stacklevel=4)
    return None


def _cache_defect(cached: Any, selected: dict) -> str:
    """'' if ``cached`` holds float32 (N, 490) raw features for every split of ``selected``, else what is wrong."""
    if not isinstance(cached, dict) or set(cached) != set(SPLITS):
        return "expected a dict of train/val/test feature tensors"
    for split in SPLITS:
        value, shape = cached[split], (len(selected[split]), NUM_FEATURES)
        if not isinstance(value, Tensor) or value.dtype != torch.float32 or tuple(value.shape) != shape:
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            return f"{split}: expected float32 {shape}, got {got}"
    return ""


def _check_sources(base: Path, selected: dict, how: str) -> None:
    """Check every word clip the selected examples read (:func:`check_wav`, at most 1 s), headers only;
    the noise files were checked by :func:`_scan`."""
    names = sorted({item[1] for split in SPLITS for item, _ in selected[split] if item[0] == "wav"})
    for name in names:
        check_wav(base / name, how, max_frames=CLIP)


def _moments(train: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and std (>= 1e-5; 1 for fewer than two examples) of (N, 490) features."""
    if len(train) < 2:
        return train.mean(0) if len(train) else torch.zeros(NUM_FEATURES), torch.ones(NUM_FEATURES)
    return train.mean(0), train.std(0).clamp_min(1e-5)


def _options(options: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """DEFAULTS updated with the checked ``options``; ``limit`` checked too."""
    opts = check_options("gsc", options, DEFAULTS)
    check_limit("gsc", limit)
    if opts["version"] not in ("v0.01", "v0.02"):
        raise DatasetError(f"gsc: option version must be 'v0.01' or 'v0.02', got {opts['version']!r}")
    for key in ("unknown_share", "silence_share"):
        if isinstance(opts[key], bool) or not isinstance(opts[key], (int, float)) or opts[key] < 0:
            raise DatasetError(f"gsc: option {key} must be a number >= 0, got {opts[key]!r}")
    return opts


@DATASETS.register("gsc")
def load(
    root: Path | None, *, seed: int, download: bool = False, limit: int | None = None, **options: Any
) -> DataSplits:
    """Speech Commands keyword spotting: (490,) normalised MFCC inputs, 12 classes.

    Options: version ("v0.02" | "v0.01"), unknown_share / silence_share (float >= 0, relative to
    the number of keyword clips per split), cache_dir (folder for the feature cache; default
    ``<root>/.ecqx-bench-cache``).
    """
    opts = _options(options, limit)
    how = HOW_TO_GET.format(v=opts["version"])
    if download and root is not None:
        import torchaudio

        root = check_root("gsc", root, how, create=True)
        torchaudio.datasets.SPEECHCOMMANDS(str(root), url=f"speech_commands_{opts['version']}", download=True)
    root = check_root("gsc", root, how)
    base = root / "SpeechCommands" / f"speech_commands_{opts['version']}"
    require(base, "gsc", "the unpacked Speech Commands archive", how, folder=True)
    clips, lists, noise = _scan(base, how)
    selected = _select(base, clips, noise, opts, seed, how)
    for number, split in enumerate(SPLITS):
        keep = limit_indices(len(selected[split]), limit, seed, 10 + number).tolist()
        selected[split] = [selected[split][i] for i in keep]
        if not selected[split]:
            raise DatasetError(f"gsc: the {split} split of {base} has no examples; {how}")
    entries = list(clips.items()) + [(n, (base / n).stat().st_size) for n in lists] + list(noise.items())
    config = {k: v for k, v in opts.items() if k != "cache_dir"}
    fp = fingerprint(entries, dataset="gsc", seed=seed, limit=limit, mfcc=MFCC_CONFIG, **config)
    cache_dir = Path(opts["cache_dir"]) if opts["cache_dir"] is not None else root / ".ecqx-bench-cache"
    raw = _cached_features(cache_dir / f"gsc-{fp}.pt", base, selected, how)
    mean, std = _moments(raw["train"])
    splits = {
        split: Features((raw[split] - mean) / std, torch.tensor([c for _, c in selected[split]], dtype=torch.int64))
        for split in SPLITS
    }
    return DataSplits(**splits, num_classes=len(CLASSES), input_shape=(NUM_FEATURES,), fingerprint=fp)
