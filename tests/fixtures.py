"""Tiny data sets in the exact on-disk layouts the paper's loaders read (no downloads).

``make_gsc(root)``, ``make_cifar(root)``, ``make_voc(root)`` each write under ``root`` and
return the folder the layout is rooted at (what ``load(root, ...)`` expects is ``root`` itself).
``truncate``, ``set_wav_format_tag`` and ``write_16bit_png`` damage files the way testers did.
"""

from __future__ import annotations

import pickle
import struct
import wave
from pathlib import Path

import numpy as np
from PIL import Image

GSC_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


# ---------------------------------------------------------------------------------- GSC ----


def write_wav(path: Path, samples: np.ndarray, *, rate: int = 16_000, width: int = 2, channels: int = 1) -> Path:
    """Write float samples in [-1, 1] as PCM WAV with the given rate, bytes per sample, channels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = {1: 127, 2: 32767, 4: 2**31 - 1}[width]
    ints = np.clip(samples, -1, 1) * scale
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}[width]
    data = (ints + 128 if width == 1 else ints).astype(dtype)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(np.repeat(data, channels).tobytes())
    return path


WAV_HEADER_BYTES = 44  # what Python's wave module writes before the samples (RIFF, fmt, data headers)


def truncate(path: Path, keep: int) -> Path:
    """Cut ``path`` to its first ``keep`` bytes (headers that declare more stay as they are)."""
    path.write_bytes(path.read_bytes()[:keep])
    return path


def set_wav_format_tag(path: Path, tag: int) -> Path:
    """Overwrite the format tag of a WAV written by :func:`write_wav` (1 = PCM, 3 = IEEE float)."""
    raw = bytearray(path.read_bytes())
    raw[20:22] = struct.pack("<H", tag)
    path.write_bytes(bytes(raw))
    return path


def make_gsc(
    root: Path,
    *,
    version: str = "v0.02",
    words: tuple[str, ...] = GSC_WORDS[:4] + ("bed", "cat"),
    speakers: int = 5,
    noise_seconds: float = 12.0,
    seed: int = 0,
) -> Path:
    """Speech Commands layout with ``speakers`` clips per word (one per speaker), 0.5..1 s
    sine-plus-noise WAVs; speaker 0 -> testing_list, speaker 1 -> validation_list; two noise files.

    Returns ``root/SpeechCommands/speech_commands_<version>``.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "SpeechCommands" / f"speech_commands_{version}"
    val, test = [], []
    for w, word in enumerate(words):
        for s in range(speakers):
            length = int(16_000 * rng.uniform(0.5, 1.0))
            t = np.arange(length) / 16_000
            audio = 0.5 * np.sin(2 * np.pi * (200 + 150 * w) * t) + 0.05 * rng.standard_normal(length)
            name = f"{word}/{s:08x}_nohash_0.wav"
            write_wav(base / name, audio)
            (test if s == 0 else val if s == 1 else []).append(name)
    (base / "validation_list.txt").write_text("\n".join(val) + "\n")
    (base / "testing_list.txt").write_text("\n".join(test) + "\n")
    for i in range(2):
        noise = 0.3 * rng.standard_normal(int(16_000 * noise_seconds))
        write_wav(base / "_background_noise_" / f"noise_{i}.wav", noise)
    return base


# -------------------------------------------------------------------------------- CIFAR ----


def py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch dict pickled byte for byte as Python 2 / numpy 1 wrote the real CIFAR-10 archive
    (protocol 2, str keys and array bytes, ``numpy.core.multiarray._reconstruct``)."""

    def string(raw: bytes) -> bytes:  # SHORT_BINSTRING or BINSTRING
        return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw))) + raw

    n, d = data.shape
    dtype = b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R(K\x03" + string(b"|")
    dtype += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
    array += b"(K\x01J" + struct.pack("<i", n) + b"J" + struct.pack("<i", d) + b"\x86" + dtype
    array += b"\x89" + string(data.astype(np.uint8).tobytes()) + b"tb"
    label_list = b"](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."


def make_cifar(
    root: Path, *, train_batches: int = 2, per_batch: int = 50, test: int = 20, seed: int = 0, py2: bool = True
) -> Path:
    """``cifar-10-batches-py`` with ``train_batches`` data batches and a test batch of random
    uint8 images (label c has mean brightness rising with c), pickled as in the real archive
    (``py2``) or by this Python (protocol 2, as torchvision-era tools re-save). Returns the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, train_batches + 1)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else per_batch
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        data = np.clip(rng.normal(20 * np.array(labels)[:, None] + 30, 20, size=(n, 3072)), 0, 255)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data.astype(np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        raw = py2_batch(batch[b"data"], labels) if py2 else pickle.dumps(batch, protocol=2)
        (folder / name).write_bytes(raw)
    return folder


# ---------------------------------------------------------------------------------- VOC ----


def voc_xml(image_id: str, objects: list[tuple[str, bool]], size: tuple[int, int] = (64, 48)) -> str:
    """A VOC annotation with the given (class name, difficult) objects."""
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(difficult)}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        f"<xmax>10</xmax><ymax>10</ymax></bndbox></object>"
        for name, difficult in objects
    )
    return (
        f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename><size><width>"
        f"{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def write_16bit_png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A 16-bit grayscale PNG (PIL mode I;16) at ``path`` (whatever its suffix), a gradient."""
    pixels = (np.arange(size[0] * size[1], dtype=np.uint16) * 20).reshape(size[1], size[0])
    with path.open("wb") as handle:
        Image.fromarray(pixels).save(handle, format="PNG")
    return path


def make_voc(root: Path, *, train: int = 10, val: int = 4, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """``VOCdevkit/VOC2012`` with ``train`` + ``val`` random JPEGs; image i has class i % 20 (not
    difficult), and class (i + 1) % 20 marked difficult only. Returns the VOC2012 folder."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"2008_{i:06d}" for i in range(train + val)]
    for i, image_id in enumerate(ids):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "JPEGImages" / f"{image_id}.jpg", quality=80)
        objects = [(VOC_CLASSES[i % 20], False), (VOC_CLASSES[(i + 1) % 20], True)]
        (base / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, objects, size))
    (base / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids[:train]) + "\n")
    (base / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids[train:]) + "\n")
    return base
