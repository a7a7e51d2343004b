"""Synthetic detection images for the stand-in datasets (mini-LVIS, mini-COCO): non-overlapping
random star-shaped polygons on a noisy background, each painted with its category's fixed colour
pattern (the same in every world). Pixels, masks and boxes agree exactly: the mask is the stored
polygon rasterised by pycocotools, box and area come from its RLE."""
import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from detectron2.utils.logger import setup_logger
from PIL import Image
from pycocotools import mask as mask_utils

from vild_d2.artifacts import atomic_path, check_settings, write_json, write_settings
from vild_d2.progress import progress

from .random_clip import CLIP_ARCHS, save_random_clip

logger = logging.getLogger(__name__)

__all__ = ["ImageSettings", "category_appearance", "render_image", "JPEG_QUALITY", "build_world", "prepare_main"]

JPEG_QUALITY = 90


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """What every synthetic world shares: split sizes, image size, objects per image and their size."""
    num_train: int = 24
    num_val: int = 8
    width: int = 640
    height: int = 480
    min_objects: int = 2
    max_objects: int = 6
    min_size: int = 30  # object diameter in pixels (clipped to the image)
    max_size: int = 250

    def __post_init__(self):
        if not (self.num_train >= 1 and self.num_val >= 1):
            raise ValueError(f"num_train and num_val must be >= 1, got {self.num_train}, {self.num_val}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 8 <= self.min_size <= self.max_size or min(self.width, self.height) < self.min_size + 2:
            raise ValueError(f"need 8 <= min_size <= max_size and images at least min_size + 2 pixels wide and "
                             f"high, got sizes {self.min_size}-{self.max_size}, image {self.width}x{self.height}")


def category_appearance(category_id: int) -> Tuple[np.ndarray, np.ndarray, float, int]:
    """The fixed look of a category: (colour, second colour, stripe angle, stripe period in pixels);
    a period of 0 means a solid colour."""
    rng = np.random.default_rng((7919, category_id))
    colours = rng.integers(0, 256, size=(2, 3), dtype=np.uint8)
    period = int(rng.choice([0, 0, 4, 6, 8, 12, 16]))
    return colours[0], colours[1], float(rng.uniform(0, np.pi)), period


def _star_polygon(rng, s: ImageSettings, attempt: int) -> List[float]:
    """A random star-shaped polygon (3-12 vertices) inside the image, shrinking with ``attempt``."""
    top = min(s.max_size, min(s.width, s.height) - 2)
    radius = rng.uniform(s.min_size, max(s.min_size, top * 0.97 ** attempt)) / 2
    n = int(rng.integers(3, 13))
    angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n) + rng.uniform(0, 2 * np.pi)
    radii = radius * (rng.uniform(0.55, 1.0, n) if n > 4 else np.ones(n))
    cx, cy = rng.uniform(radius, s.width - radius), rng.uniform(radius, s.height - radius)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    pts = np.clip(pts, 0, [s.width, s.height])
    return [round(float(v), 2) for v in pts.reshape(-1)]


def _paint(img: np.ndarray, mask: np.ndarray, category_id: int) -> None:
    c1, c2, angle, period = category_appearance(category_id)
    ys, xs = np.nonzero(mask)
    if period:
        stripe = ((xs * np.cos(angle) + ys * np.sin(angle)) // (period / 2)).astype(int) % 2 == 1
        img[ys, xs] = np.where(stripe[:, None], c2, c1)
    else:
        img[ys, xs] = c1


def render_image(rng, s: ImageSettings, path: Path,
                 pools: Callable[[int], Sequence[Sequence[int]]]) -> List[dict]:
    """Render one image with ``rng``, save it as JPEG at ``path`` (atomically), return its objects
    (``category_id``, ``segmentation``, ``bbox``, ``area``). ``pools(n)``: for the n objects drawn
    for the image, the category ids each one's category is picked from (uniformly, with ``rng``)."""
    h, w = s.height, s.width
    base = rng.integers(40, 216, size=3)
    ramp = np.linspace(-25, 25, w)[None, :, None] * rng.choice([-1, 1], size=3)
    img = np.clip(base + ramp + rng.normal(0, 10, size=(h, w, 3)), 0, 255).astype(np.uint8)
    occupied = np.zeros((h, w), bool)
    objects = []
    for pool in pools(int(rng.integers(s.min_objects, s.max_objects + 1))):
        cid = int(rng.choice(pool))
        for attempt in range(60):  # rejection sampling: masks never overlap, so none is occluded
            poly = _star_polygon(rng, s, attempt)
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
            mask = mask_utils.decode(rle).astype(bool)
            if mask.any() and not (mask & occupied).any():
                break
        else:
            logger.debug("%s: no room for an object of category %d", path.name, cid)
            continue
        occupied |= mask
        _paint(img, mask, cid)
        objects.append({"category_id": cid, "segmentation": [poly],
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": float(mask_utils.area(rle))})
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="JPEG", quality=JPEG_QUALITY)
    return objects


def build_world(root: Path, s: ImageSettings, what: str, marker: str, building: str,
                images: Dict[str, List[Path]], jsons: Dict[str, Path],
                render: Callable[[str, int, Path], List[dict]],
                assemble: Callable[[str, List[List[dict]], int], dict]) -> bool:
    """Write a synthetic world under ``root`` (the skeleton of mini-LVIS and mini-COCO); return False
    when it was already there. Per split, ``render(split, index, path)`` draws each of ``images``,
    ``assemble(split, objects, first_annotation_id)`` makes its json, written to ``jsons``.

    Files are written under temporary names and renamed; the settings ``marker`` comes last, so a
    killed build is simply redone (``building`` marks one in progress: its leftovers are ours).
    Other settings, or files not written here (the real dataset, or another world whose images live
    in the same folders), raise :class:`~vild_d2.artifacts.SettingsMismatchError`."""
    wanted = dataclasses.asdict(s)
    folders = sorted({p.parent for p in jsons.values()} | {p[0].parent for p in images.values()})
    others = [] if (root / building).is_file() else [*jsons.values(), *(p for ps in images.values() for p in ps)]
    if check_settings(root / marker, wanted, f"a {what} world", others=others,
                      fix=f"choose another output folder (or delete {', '.join(map(str, folders))} if they hold "
                      f"only an old {what} world)"):
        logger.info("%s already built in %s, reusing it", what, root)
        return False
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    write_json(root / building, wanted)
    next_ann_id = 1
    for split, paths in images.items():
        objects = [render(split, i, p) for i, p in enumerate(progress(paths, desc=f"{what} {split} images",
                                                                         unit="img"))]
        data = assemble(split, objects, next_ann_id)
        write_json(jsons[split], data)
        next_ann_id += len(data["annotations"])
        logger.info("wrote %s: %d images, %d annotations", jsons[split], len(data["images"]), len(data["annotations"]))
    write_settings(root / marker, wanted)
    (root / building).unlink()
    logger.info("%s written to %s (%d train, %d val images)", what, root, s.num_train, s.num_val)
    return True


def prepare_main(description: str, settings_type, build: Callable, default_root: str) -> None:
    """A ``datasets/prepare_mini_*.py`` script: a world of ``settings_type`` built by ``build`` under
    --output (default $DETECTRON2_DATASETS), and optionally a random CLIP of a real architecture."""
    defaults = settings_type()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--output", default=os.environ.get("DETECTRON2_DATASETS", default_root),
                   help="dataset root, used as $DETECTRON2_DATASETS (default: %(default)s)")
    p.add_argument("--num-train", type=int, default=defaults.num_train)
    p.add_argument("--num-val", type=int, default=defaults.num_val)
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the world and of the random CLIP")
    p.add_argument("--width", type=int, default=defaults.width, help="image width")
    p.add_argument("--height", type=int, default=defaults.height, help="image height")
    p.add_argument("--clip", default=None, metavar="PATH", help="also write a random-weight CLIP here")
    p.add_argument("--clip-arch", default="ViT-B/32", choices=sorted(CLIP_ARCHS))
    args = p.parse_args()
    setup_logger(name="vild_d2")
    build(args.output, settings_type(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                                     width=args.width, height=args.height))
    if args.clip:
        save_random_clip(args.clip, arch=args.clip_arch, seed=args.seed)
