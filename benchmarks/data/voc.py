"""PASCAL VOC 2012 multi-label classification over the 20 object classes.

Layout (what ``torchvision.datasets.VOCDetection(root, year="2012", download=True)`` leaves)::

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
                            Annotations/<id>.xml
                            ImageSets/Main/train.txt, val.txt      (one image id per line)

Target: float32 (20,) 0/1 vector, class c present iff the image has a non-difficult object of c.
The official test set is not public, so: train = ``train.txt`` minus a seeded ``val_share`` (10 %)
held out as val; test = the official ``val.txt``. Images are decoded lazily (PIL). Train: random
resized crop (option ``crop_scale``, default 0.25..1 of the area, so that crops rarely lose every
labelled object; aspect 3/4..4/3) to ``image_size`` and horizontal flip, both from per-item seeds;
``crop_scale: null`` trains on the val/test view (no crop) with the flip only. Val/test: resize the
short side to ``image_size * 8/7`` (256 for 224) and centre-crop. ImageNet mean/std normalisation.

Every image of the selected splits (after ``limit``) is checked when loading (:func:`check_image`),
so a bad file is a one-line DatasetError naming it before any training: readable header, 1..10000
px per side, within PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, left enabled),
an 8-bit mode convertible to RGB, and for a JPEG complete data (ends with the end-of-image marker,
else decoded at 1/8 scale to decide). No pixel of a complete file is decoded: measured 42 us per
file on a warm page cache (0.6 ms for the 14 images of the test fixture; about 0.4 s per 10k
500x375 VOC-sized JPEGs, against about 11 s per 10k to decode them; a JPEG without the end marker
costs about 0.9 ms). Damage inside the compressed data of a complete file is found only when the
image is decoded, still as a DatasetError naming it.
"""

from __future__ import annotations

import math
import random
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from benchmarks.data.common import (
    EpochDraws,
    check_limit,
    check_options,
    check_root,
    fingerprint,
    limit_indices,
    one_line,
    require,
    split_train_val,
)
from benchmarks.data.splits import DATASETS, DatasetError, DataSplits

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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
DEFAULTS = {"image_size": 224, "val_share": 0.1, "crop_scale": list(CROP_SCALE)}
FINGERPRINT_SKIP = ("crop_scale",)  # augmentation: in the run identity via data.options, not a data property
MAX_SIDE = 10_000  # px per side; VOC 2012 images are at most 500 x 500
RGB_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")  # 8-bit, convert("RGB") is exact
JPEG_END = b"\xff\xd9"  # EOI marker
HOW_TO_GET = (
    "get it with --download, or torchvision.datasets.VOCDetection(root, year='2012', download=True), "
    "or unpack VOCtrainval_11-May-2012.tar into the data dir so that <data dir>/VOCdevkit/VOC2012/ exists"
)


class VocImages(Dataset):
    """Lazily decoded VOC images.

    ids: image ids; targets: float32 (N, 20). Item: (float32 (3, S, S) normalised, float32 (20,)).
    """

    def __init__(
        self,
        base: Path,
        ids: list[str],
        targets: Tensor,
        *,
        size: int,
        augment: bool,
        seed: int,
        crop_scale: tuple[float, float] | None = CROP_SCALE,
    ) -> None:
        self.base, self.ids, self.targets = base, ids, targets
        self.size, self.augment, self.crop_scale = size, augment, crop_scale
        self.draws = EpochDraws(seed)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Tie augmentation to (seed, index, epoch); see :class:`EpochDraws`."""
        self.draws.set_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self._decode(self.base / "JPEGImages" / f"{self.ids[index]}.jpg")
        rng = random.Random(self.draws.next(index)) if self.augment else None
        if rng is not None and self.crop_scale is not None:
            top, left, height, width = crop_params(rng, image.width, image.height, self.crop_scale)
            image = TF.resized_crop(image, top, left, height, width, [self.size, self.size], antialias=True)
        else:
            image = TF.resize(image, round(self.size * 8 / 7), antialias=True)
            image = TF.center_crop(image, [self.size, self.size])
        if rng is not None and rng.random() < 0.5:
            image = TF.hflip(image)
        x = TF.pil_to_tensor(image).to(torch.float32) / 255
        return (x - self.mean) / self.std, self.targets[index].clone()

    @staticmethod
    def _decode(path: Path) -> Image.Image:
        """The RGB image at ``path``; unreadable -> DatasetError naming it."""
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise DatasetError(f"voc: cannot decode JPEG {path} ({error}); {HOW_TO_GET}") from None


def check_image(path: Path) -> None:
    """Refuse ``path`` (DatasetError naming it) unless it is a readable image of 1..MAX_SIDE px per side,
    within PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``; above it is an error here, not
    a warning), in an 8-bit mode that converts to RGB, and, for a JPEG, with its data complete.

    Cheap: ``Image.open`` + ``verify()`` parse the header only (no pixel is decoded); a JPEG is
    complete when its last two bytes are the end-of-image marker; only a JPEG without it (truncated,
    or trailing bytes after the marker) is decoded, at 1/8 scale (``draft``), to decide.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                (width, height), mode, kind = image.size, image.mode, image.format
                image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        limit = f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}"
        raise _bad_image(path, f"refused by PIL's decompression-bomb check ({limit}): {error}") from None
    except UnidentifiedImageError:
        raise _bad_image(path, "PIL cannot identify it as an image (not an image file, or cut short)") from None
    except Exception as error:  # PIL raises many kinds on damaged files
        raise _bad_image(path, f"not a readable image ({type(error).__name__}: {error})") from None
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise _bad_image(path, f"size {width} x {height} px (expected 1..{MAX_SIDE} px per side)")
    if mode not in RGB_MODES:
        raise _bad_image(path, f"mode {mode!r} does not convert to 8-bit RGB (expected one of {', '.join(RGB_MODES)})")
    problem = _jpeg_defect(path) if kind == "JPEG" else ""
    if problem:
        raise _bad_image(path, f"truncated or corrupt JPEG data ({problem})")


def _jpeg_defect(path: Path) -> str:
    """'' if the JPEG at ``path`` ends with its end-of-image marker or else decodes at 1/8 scale;
    otherwise the decoder's complaint."""
    with path.open("rb") as handle:
        handle.seek(-len(JPEG_END), 2)
        if handle.read() == JPEG_END:
            return ""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as error:  # the decoder's error on damaged data
        return f"{type(error).__name__}: {error}"
    return ""


def _bad_image(path: Path, problem: str) -> DatasetError:
    """The one-line error for a bad image: file, what is wrong, and the fix."""
    return DatasetError(
        f"voc: bad image {path}: {one_line(problem)}; replace it by re-extracting the archive; {HOW_TO_GET}"
    )


def _check_images(base: Path, ids: list[str]) -> None:
    """:func:`check_image` on the JPEG of every id, before any training."""
    for image_id in sorted(set(ids)):
        check_image(base / "JPEGImages" / f"{image_id}.jpg")


def crop_params(
    rng: random.Random, width: int, height: int, scale: tuple[float, float] = CROP_SCALE
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random-resized crop covering ``scale`` (fractions) of the
    image's area (torchvision's algorithm, own RNG)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    w, h = width, height  # fallback: central crop with the aspect clamped to CROP_RATIO
    if width / height < CROP_RATIO[0]:
        h = round(width / CROP_RATIO[0])
    elif width / height > CROP_RATIO[1]:
        w = round(height * CROP_RATIO[1])
    return (height - h) // 2, (width - w) // 2, h, w


def parse_annotation(path: Path) -> Tensor:
    """float32 (20,) presence vector of the non-difficult objects in one VOC XML file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise DatasetError(f"voc: malformed annotation {path} ({error}); {HOW_TO_GET}") from None
    target = torch.zeros(len(VOC_CLASSES), dtype=torch.float32)
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DatasetError(
                f"voc: annotation {path} has an object of unknown class {name!r} (expected one of "
                f"the 20 VOC classes); {HOW_TO_GET}"
            )
        if (obj.findtext("difficult") or "0").strip() != "1":
            target[VOC_CLASSES.index(name)] = 1.0
    return target


def _read_ids(path: Path) -> list[str]:
    """Image ids listed in an ImageSets/Main file, one per line (first column)."""
    require(path, "voc", "an image-set list of the VOC layout", HOW_TO_GET)
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"voc: image-set list {path} is empty; {HOW_TO_GET}")
    return ids


def _annotate(base: Path, ids: list[str]) -> tuple[Tensor, list[tuple[str, int]]]:
    """(targets float32 (N, 20), manifest (name, bytes) of the XML and JPEG files)."""
    targets, entries = [], []
    for image_id in ids:
        xml = require(base / "Annotations" / f"{image_id}.xml", "voc", "annotation", HOW_TO_GET)
        jpeg = require(base / "JPEGImages" / f"{image_id}.jpg", "voc", "image", HOW_TO_GET)
        targets.append(parse_annotation(xml))
        entries += [(f"Annotations/{xml.name}", xml.stat().st_size), (f"JPEGImages/{jpeg.name}", jpeg.stat().st_size)]
    return torch.stack(targets), entries


def _options(options: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """DEFAULTS updated with the checked ``options``; ``limit`` checked too."""
    opts = check_options("voc", options, DEFAULTS)
    check_limit("voc", limit)
    size, val_share = opts["image_size"], opts["val_share"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise DatasetError(f"voc: option image_size must be an int >= 8, got {size!r}")
    if isinstance(val_share, bool) or not isinstance(val_share, (int, float)) or not 0 < val_share < 1:
        raise DatasetError(f"voc: option val_share must lie in (0, 1), got {val_share!r}")
    opts["crop_scale"] = _crop_scale(opts["crop_scale"])
    return opts


def _crop_scale(value: Any) -> tuple[float, float] | None:
    """The ``crop_scale`` option: None (no random crop) or (low, high), 0 < low <= high <= 1 (area fractions)."""
    if value is None:
        return None
    numbers = isinstance(value, (list, tuple)) and len(value) == 2
    numbers = numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers or not 0 < value[0] <= value[1] <= 1:
        raise DatasetError(
            f"voc: option crop_scale must be null or [low, high] with 0 < low <= high <= 1, got {value!r}"
        )
    return float(value[0]), float(value[1])


@DATASETS.register("voc")
def load(
    root: Path | None, *, seed: int, download: bool = False, limit: int | None = None, **options: Any
) -> DataSplits:
    """VOC 2012 multi-label: (3, S, S) inputs, float32 (20,) targets; train/val from train.txt,
    test = val.txt. Options: image_size (S, default 224), val_share (default 0.1), crop_scale (area
    fractions of the training crops, default [0.25, 1]; null: no crop)."""
    opts = _options(options, limit)
    size, val_share = opts["image_size"], opts["val_share"]
    if download and root is not None:
        import torchvision

        root = check_root("voc", root, HOW_TO_GET, create=True)
        torchvision.datasets.VOCDetection(str(root), year="2012", image_set="trainval", download=True)
    root = check_root("voc", root, HOW_TO_GET)
    base = require(root / "VOCdevkit" / "VOC2012", "voc", "the unpacked VOC 2012 devkit", HOW_TO_GET, folder=True)
    lists = base / "ImageSets" / "Main"
    train_ids, test_ids = _read_ids(lists / "train.txt"), _read_ids(lists / "val.txt")
    train_targets, train_entries = _annotate(base, train_ids)
    test_targets, test_entries = _annotate(base, test_ids)
    n_val = max(1, round(val_share * len(train_ids))) if len(train_ids) > 1 else 0
    train_idx, val_idx = split_train_val(len(train_ids), n_val, seed, 0)
    parts = {
        "train": (train_ids, train_targets, train_idx),
        "val": (train_ids, train_targets, val_idx),
        "test": (test_ids, test_targets, torch.arange(len(test_ids))),
    }
    splits = {}
    for number, (name, (ids, targets, idx)) in enumerate(parts.items()):
        idx = idx[limit_indices(len(idx), limit, seed, 1 + number)]
        splits[name] = VocImages(
            base,
            [ids[i] for i in idx.tolist()],
            targets[idx].clone(),
            size=size,
            augment=name == "train",
            seed=seed,
            crop_scale=opts["crop_scale"],
        )
    _check_images(base, [image_id for split in splits.values() for image_id in split.ids])
    lists_entries = [(f"ImageSets/Main/{n}", (lists / n).stat().st_size) for n in ("train.txt", "val.txt")]
    described = {k: v for k, v in opts.items() if k not in FINGERPRINT_SKIP}
    fp = fingerprint(lists_entries + train_entries + test_entries, dataset="voc", seed=seed, limit=limit, **described)
    return DataSplits(
        **splits, num_classes=len(VOC_CLASSES), input_shape=(3, size, size), multilabel=True, fingerprint=fp
    )
