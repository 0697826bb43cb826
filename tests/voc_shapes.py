"""A learnable VOC-layout data set: small coloured shapes on noisy backgrounds (deterministic from a seed).

``make_voc_shapes(root)`` writes ``root/VOCdevkit/VOC2012`` exactly as the VOC loader reads it
(JPEGImages, Annotations with bounding boxes, ImageSets/Main/train.txt and val.txt). Each of the
``classes`` VOC classes used (the first ones of the 20) is drawn as one fixed (shape, colour) pair,
so telling the classes apart needs both the shape and the colour; every image holds 2-3 objects of
``object_px`` size (default 10-20 px on a 96 px image, i.e. 1-4 % of the area each) on a
noisy, smoothly shaded background. It mirrors the set on which issue 15 was measured (96x96 images,
2-3 small objects, 10 of the 20 classes, 1,680 training images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.fixtures import VOC_CLASSES

SHAPES = ("disc", "square", "triangle", "cross", "ring")
COLOURS = ((220, 40, 40), (40, 90, 230), (240, 200, 30), (40, 180, 60))  # red, blue, yellow, green (RGB)


def class_style(c: int) -> tuple[str, tuple[int, int, int]]:
    """The (shape, RGB colour) of class index ``c``: shapes cycle fastest, so classes 0 and 5 share a
    shape and differ by colour."""
    return SHAPES[c % len(SHAPES)], COLOURS[(c // len(SHAPES)) % len(COLOURS)]


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A grey-brown gradient with per-pixel noise (uint8 RGB, ``size`` x ``size`` px)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(70, 170, 3)[None, None, :] + rng.uniform(-40, 40, 3)[None, None, :] * (xx + yy)[..., None] / 2
    pixels = base + rng.normal(0, 18, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    """Draw ``shape`` filling ``box`` = (x0, y0, x1, y1) in px."""
    x0, y0, x1, y1 = box
    w = max(2, (x1 - x0) // 4)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "cross":
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - w // 2, y0, cx + w // 2, y1), fill=colour)
        draw.rectangle((x0, cy - w // 2, x1, cy + w // 2), fill=colour)
    else:  # ring
        draw.ellipse(box, outline=colour, width=w)


def render(rng: np.random.Generator, classes: list[int], size: int, object_px: tuple[int, int]):
    """One image with one object per entry of ``classes``; returns (PIL image, [(class, box)])."""
    image = background(rng, size)
    draw = ImageDraw.Draw(image)
    objects = []
    for c in classes:
        side = int(rng.integers(object_px[0], object_px[1] + 1))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        shape, colour = class_style(c)
        jitter = tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255)) for v in colour)
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        draw_shape(draw, shape, box, jitter)
        objects.append((c, box))
    return image, objects


def annotation(image_id: str, objects, size: int) -> str:
    """A VOC XML annotation of ``objects`` [(class index, (x0, y0, x1, y1))] (1-based VOC pixel boxes)."""
    parts = "".join(
        f"<object><name>{VOC_CLASSES[c]}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax>"
        f"<ymax>{y1 + 1}</ymax></bndbox></object>"
        for c, (x0, y0, x1, y1) in objects
    )
    return (
        f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename><size><width>{size}</width>"
        f"<height>{size}</height><depth>3</depth></size>{parts}</annotation>"
    )


def make_voc_shapes(
    root: Path,
    *,
    train: int = 1680,
    test: int = 420,
    size: int = 96,
    classes: int = 10,
    objects: tuple[int, int] = (2, 3),
    object_px: tuple[int, int] = (10, 20),
    seed: int = 0,
) -> Path:
    """Write ``train`` + ``test`` images (train.txt / val.txt) of ``size`` px with ``objects`` (min,
    max) distinct classes each, drawn from the first ``classes`` VOC classes. Returns the VOC2012 folder."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"2012_{i:06d}" for i in range(train + test)]
    for image_id in ids:
        count = int(rng.integers(objects[0], objects[1] + 1))
        chosen = sorted(int(c) for c in rng.choice(classes, size=count, replace=False))
        image, objs = render(rng, chosen, size, object_px)
        image.save(base / "JPEGImages" / f"{image_id}.jpg", quality=90)
        (base / "Annotations" / f"{image_id}.xml").write_text(annotation(image_id, objs, size))
    (base / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids[:train]) + "\n")
    (base / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids[train:]) + "\n")
    return base
