"""Mini-LVIS: a small synthetic stand-in of LVIS v1 with the real 1203 categories.

It rehearses the LVIS recipe end to end on CPU (Detectron2's built-in ``lvis_v1_train`` /
``lvis_v1_val`` registrations, the base split, the CLIP region cache, LVIS evaluation) with every
tensor at its real size. ``root`` plays ``$DETECTRON2_DATASETS``::

    lvis/lvis_v1_train.json, lvis/lvis_v1_val.json   LVIS v1 annotations, all 1203 categories
    lvis/mini_lvis_settings.json                      the settings, written last: completion marker
    coco/train2017/000000XXXXXX.jpg                   images, found through each ``coco_url``
    coco/val2017/000000XXXXXX.jpg                     (image ids are unique across both splits)

Each image holds non-overlapping random star-shaped polygons on a noisy background, each painted
with its category's fixed colour pattern (the same in every world). Pixels, masks and boxes agree
exactly: the mask is the stored polygon rasterised by pycocotools, box and area come from its RLE.
Objects come from all three frequency groups in both splits; a share of training images holds
only rare objects (ViLD sees those only through the CLIP region cache). The world is fully
labelled: each image's ``neg_category_ids`` is a random sample of its absent categories.
"""
import dataclasses
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from PIL import Image
from pycocotools import mask as mask_utils

from vild_d2.artifacts import atomic_path, check_settings, write_json, write_settings
from vild_d2.progress import progress

logger = logging.getLogger(__name__)

__all__ = ["MiniLVISSettings", "build_mini_lvis", "category_appearance"]

SPLITS = ("train", "val")
MARKER = "lvis/mini_lvis_settings.json"
BUILDING = "lvis/.mini_lvis_building.json"  # present while a build runs: its leftovers are ours
TAG = "vild_d2 mini-LVIS (synthetic)"
GROUP_WEIGHTS = {"f": 0.5, "c": 0.3, "r": 0.2}  # share of objects per frequency group
JPEG_QUALITY = 90
_SPLIT_SEED = {"train": 1, "val": 2}


@dataclasses.dataclass(frozen=True)
class MiniLVISSettings:
    num_train: int = 24
    num_val: int = 8
    width: int = 640
    height: int = 480
    min_objects: int = 2
    max_objects: int = 6
    min_size: int = 30  # object diameter in pixels (clipped to the image)
    max_size: int = 250
    rare_only_fraction: float = 1 / 6  # share of training images whose objects are all rare
    num_negatives: int = 300  # neg_category_ids per image (sampled among its absent categories)
    not_exhaustive_every: int = 4  # every n-th image lists one present category as not exhaustive
    seed: int = 0
    version: int = 1  # bump when the generator's output changes

    def __post_init__(self):
        if not (self.num_train >= 1 and self.num_val >= 1):
            raise ValueError(f"num_train and num_val must be >= 1, got {self.num_train}, {self.num_val}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 8 <= self.min_size <= self.max_size or min(self.width, self.height) < self.min_size + 2:
            raise ValueError(f"need 8 <= min_size <= max_size and images at least min_size + 2 pixels wide and "
                             f"high, got sizes {self.min_size}-{self.max_size}, image {self.width}x{self.height}")
        if not 0.0 <= self.rare_only_fraction < 1.0 or self.num_negatives < 0 or self.not_exhaustive_every < 1:
            raise ValueError("need 0 <= rare_only_fraction < 1, num_negatives >= 0, not_exhaustive_every >= 1")


def category_appearance(category_id: int) -> Tuple[np.ndarray, np.ndarray, float, int]:
    """The fixed look of a category: (colour, second colour, stripe angle, stripe period in pixels);
    a period of 0 means a solid colour."""
    rng = np.random.default_rng((7919, category_id))
    colours = rng.integers(0, 256, size=(2, 3), dtype=np.uint8)
    period = int(rng.choice([0, 0, 4, 6, 8, 12, 16]))
    return colours[0], colours[1], float(rng.uniform(0, np.pi)), period


def _star_polygon(rng, s: MiniLVISSettings, attempt: int) -> List[float]:
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


def _groups(s: MiniLVISSettings, split: str, index: int, n: int, rng) -> List[str]:
    """Frequency groups of an image's objects: all rare on the rare-only training images; the
    first image of each split starts with one object of each group, so every split has all three."""
    frac = s.rare_only_fraction if split == "train" else 0.0
    if int((index + 1) * frac) > int(index * frac):
        return ["r"] * n
    groups = list(rng.choice(list(GROUP_WEIGHTS), size=n, p=list(GROUP_WEIGHTS.values())))
    if index == 0:
        groups[:3] = ["f", "c", "r"][:n]
    return [str(g) for g in groups]


def _render(s: MiniLVISSettings, split: str, index: int, by_group: Dict[str, List[int]], path: Path) -> List[dict]:
    """Render image ``index`` of ``split`` (seeded by (seed, split, index)), save it, return its objects."""
    rng = np.random.default_rng((s.seed, _SPLIT_SEED[split], index))
    h, w = s.height, s.width
    base = rng.integers(40, 216, size=3)
    ramp = np.linspace(-25, 25, w)[None, :, None] * rng.choice([-1, 1], size=3)
    img = np.clip(base + ramp + rng.normal(0, 10, size=(h, w, 3)), 0, 255).astype(np.uint8)
    occupied = np.zeros((h, w), bool)
    objects = []
    n = int(rng.integers(s.min_objects, s.max_objects + 1))
    if index == 0:  # room for one object of each frequency group
        n = max(n, min(3, s.max_objects))
    for group in _groups(s, split, index, n, rng):
        cid = int(rng.choice(by_group[group]))
        for attempt in range(60):  # rejection sampling: masks never overlap, so none is occluded
            poly = _star_polygon(rng, s, attempt)
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
            mask = mask_utils.decode(rle).astype(bool)
            if mask.any() and not (mask & occupied).any():
                break
        else:
            logger.debug("%s image %d: no room for a %s object", split, index, group)
            continue
        occupied |= mask
        _paint(img, mask, cid)
        objects.append({"category_id": cid, "segmentation": [poly],
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)], "area": float(mask_utils.area(rle))})
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="JPEG", quality=JPEG_QUALITY)
    return objects


def _image_ids(s: MiniLVISSettings, split: str) -> List[int]:
    return list(range(1, s.num_train + 1) if split == "train" else range(s.num_train + 1, s.num_train + s.num_val + 1))


def _lvis_json(s: MiniLVISSettings, split: str, objects: List[List[dict]], first_ann_id: int) -> dict:
    """Assemble the LVIS v1 dict of a split; ``objects``: each image's rendered objects."""
    all_ids = np.array(sorted(c["id"] for c in LVIS_CATEGORIES))
    images, annotations = [], []
    counts = {int(c): [0, 0] for c in all_ids}  # category id -> [image_count, instance_count]
    for index, (image_id, objs) in enumerate(zip(_image_ids(s, split), objects)):
        rng = np.random.default_rng((s.seed, _SPLIT_SEED[split], index, 1))
        present = sorted({o["category_id"] for o in objs})
        absent = np.setdiff1d(all_ids, present)
        negatives = rng.choice(absent, size=min(s.num_negatives, len(absent)), replace=False)
        flag = present and index % s.not_exhaustive_every == s.not_exhaustive_every - 1
        not_exhaustive = [int(rng.choice(present))] if flag else []
        images.append({"id": image_id, "width": s.width, "height": s.height, "license": 1,
                       "coco_url": f"http://images.cocodataset.org/{split}2017/{image_id:012d}.jpg",
                       "neg_category_ids": sorted(int(c) for c in negatives),
                       "not_exhaustive_category_ids": not_exhaustive})
        for cid in present:
            counts[cid][0] += 1
        for obj in objs:
            counts[obj["category_id"]][1] += 1
            annotations.append(dict(id=first_ann_id + len(annotations), image_id=image_id, **obj))
    cats = [dict(c, image_count=counts[c["id"]][0], instance_count=counts[c["id"]][1]) for c in LVIS_CATEGORIES]
    return {"info": {"description": TAG, "version": str(s.version)},
            "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
            "images": images, "annotations": annotations, "categories": cats}


def build_mini_lvis(root, settings: MiniLVISSettings = MiniLVISSettings()) -> bool:
    """Write the mini-LVIS world under ``root``; return False when it was already there.

    Files are written under temporary names and renamed; the settings marker comes last, so a
    killed build is simply redone. Other settings, or files not written here (the real LVIS or
    COCO?), raise :class:`~vild_d2.artifacts.SettingsMismatchError` instead of being overwritten.
    """
    root, s = Path(root), settings
    wanted = dataclasses.asdict(s)
    paths = {split: [root / f"coco/{split}2017/{i:012d}.jpg" for i in _image_ids(s, split)] for split in SPLITS}
    jsons = {split: root / f"lvis/lvis_v1_{split}.json" for split in SPLITS}
    # without the marker, files there are someone else's, unless a killed build of ours left them
    others = [] if (root / BUILDING).is_file() else [*jsons.values(), *paths["train"], *paths["val"]]
    if check_settings(root / MARKER, wanted, "a mini-LVIS world", others=others,
                      fix=f"choose another output folder (or delete {root / 'lvis'} and {root / 'coco'} if they hold "
                      "only an old mini-LVIS world)"):
        logger.info("mini-LVIS already built in %s, reusing it", root)
        return False
    for folder in (root / "lvis", *(p[0].parent for p in paths.values())):
        folder.mkdir(parents=True, exist_ok=True)
    write_json(root / BUILDING, wanted)
    by_group = {g: sorted(c["id"] for c in LVIS_CATEGORIES if c["frequency"] == g) for g in GROUP_WEIGHTS}
    next_ann_id = 1
    for split in SPLITS:
        objects = [_render(s, split, i, by_group, p)
                   for i, p in enumerate(progress(paths[split], desc=f"mini-LVIS {split} images", unit="img"))]
        data = _lvis_json(s, split, objects, next_ann_id)
        freqs = {c["frequency"] for c in data["categories"] if c["instance_count"]}
        if freqs != set(GROUP_WEIGHTS):
            raise RuntimeError(f"mini-LVIS {split} split has objects of frequency groups {sorted(freqs)} only; "
                               "raise max_objects or the image size")
        write_json(jsons[split], data)
        next_ann_id += len(data["annotations"])
        logger.info("wrote %s: %d images, %d annotations", jsons[split], len(data["images"]), len(data["annotations"]))
    write_settings(root / MARKER, wanted)
    (root / BUILDING).unlink()
    logger.info("mini-LVIS written to %s (%d train, %d val images)", root, s.num_train, s.num_val)
    return True
