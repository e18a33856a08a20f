#!/usr/bin/env python3
"""Street-scene-like calibration photos for a detector, made from single-object photos.

A detector sees several objects of different sizes in one wide frame; an ImageNet
photo shows one object filling the frame. Calibrating YOLOv5 on ImageNet photos
fits its activation ranges to the wrong statistics, so this makes COCO-like
frames the way YOLOv5's own training does: 2x2 mosaics with a random centre and a
random scale per photo, on a grey (114) canvas of a random landscape or portrait
shape. Deterministic (--seed). The photos must not be evaluation photos: the
shipped `tests/data/images/coco-like-calib` was made from the ImageNet
calibration photos, never from bus.jpg, which is what the int8 detector is
tested on.

    pip install pillow
    python3 tools/coco_like.py tests/data/images/imagenet-calib tests/data/images/coco-like-calib
"""

import argparse
import pathlib
import random

from PIL import Image

SHAPES = [(640, 480), (640, 640), (480, 640), (640, 360)]
GREY = (114, 114, 114)


def photos(folder):
    names = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not names:
        raise SystemExit(f"{folder}: no .jpg/.jpeg/.png photos")
    return names


def paste_scaled(canvas, photo, box, rng):
    """Fits `photo` into `box` (x0, y0, x1, y1) at a random scale, anchored to
    the mosaic centre corner as YOLOv5 does, so objects get cut at the seams."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    scale = rng.uniform(0.5, 1.5) * max(w / photo.width, h / photo.height)
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    img = photo.resize(size, Image.BILINEAR)
    left = x0 if x0 > 0 else x1 - img.width
    top = y0 if y0 > 0 else y1 - img.height
    tile = Image.new("RGB", (w, h), GREY)
    tile.paste(img, (left - x0, top - y0))
    canvas.paste(tile, (x0, y0))


def mosaic(paths, rng):
    width, height = rng.choice(SHAPES)
    canvas = Image.new("RGB", (width, height), GREY)
    xc = round(rng.uniform(0.25, 0.75) * width)
    yc = round(rng.uniform(0.25, 0.75) * height)
    quadrants = [(0, 0, xc, yc), (xc, 0, width, yc), (0, yc, xc, height), (xc, yc, width, height)]
    for path, box in zip(rng.sample(paths, 4), quadrants):
        with Image.open(path) as photo:
            paste_scaled(canvas, photo.convert("RGB"), box, rng)
    return canvas


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photos", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = photos(args.photos)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        mosaic(paths, rng).save(args.out / f"mosaic_{i:03}.jpg", quality=90)
    print(f"wrote {args.count} mosaics of {len(paths)} photos to {args.out}")


if __name__ == "__main__":
    main()
