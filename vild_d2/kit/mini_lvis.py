"""Mini-LVIS: a small synthetic stand-in of LVIS v1 with the real 1203 categories.

It rehearses the LVIS recipe end to end on CPU (Detectron2's built-in ``lvis_v1_train`` /
``lvis_v1_val`` registrations, the base split, the CLIP region cache, LVIS evaluation) with every
tensor at its real size. ``root`` plays ``$DETECTRON2_DATASETS``::

    lvis/lvis_v1_train.json, lvis/lvis_v1_val.json   LVIS v1 annotations, all 1203 categories
    lvis/mini_lvis_settings.json                      the settings, written last: completion marker
    coco/train2017/000000XXXXXX.jpg                   images, found through each ``coco_url``
    coco/val2017/000000XXXXXX.jpg                     (image ids are unique across both splits)

Images: :mod:`vild_d2.kit.synthetic_images` (star-shaped objects in their category's colours).
Objects come from all three frequency groups in both splits; a share of training images holds only
rare objects (ViLD sees those only through the CLIP region cache). The world is fully labelled:
each image's ``neg_category_ids`` is a random sample of its absent categories.
"""
import dataclasses
import logging
from pathlib import Path
from typing import Dict, List

import numpy as np
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

from .synthetic_images import ImageSettings, build_world, category_appearance, render_image

logger = logging.getLogger(__name__)

__all__ = ["MiniLVISSettings", "build_mini_lvis", "category_appearance"]

SPLITS = ("train", "val")
MARKER = "lvis/mini_lvis_settings.json"
BUILDING = "lvis/.mini_lvis_building.json"  # present while a build runs: its leftovers are ours
TAG = "vild_d2 mini-LVIS (synthetic)"
GROUP_WEIGHTS = {"f": 0.5, "c": 0.3, "r": 0.2}  # share of objects per frequency group
_SPLIT_SEED = {"train": 1, "val": 2}


@dataclasses.dataclass(frozen=True)
class MiniLVISSettings(ImageSettings):
    rare_only_fraction: float = 1 / 6  # share of training images whose objects are all rare
    num_negatives: int = 300  # neg_category_ids per image (sampled among its absent categories)
    not_exhaustive_every: int = 4  # every n-th image lists one present category as not exhaustive
    seed: int = 0
    version: int = 1  # bump when the generator's output changes

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.rare_only_fraction < 1.0 or self.num_negatives < 0 or self.not_exhaustive_every < 1:
            raise ValueError("need 0 <= rare_only_fraction < 1, num_negatives >= 0, not_exhaustive_every >= 1")


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

    def pools(n: int) -> List[List[int]]:
        if index == 0:  # room for one object of each frequency group
            n = max(n, min(3, s.max_objects))
        return [by_group[g] for g in _groups(s, split, index, n, rng)]

    return render_image(rng, s, path, pools)


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
    """Write the mini-LVIS world under ``root``; return False when it was already there (see
    :func:`~vild_d2.kit.synthetic_images.build_world`: atomic files, settings marker last, files not
    written here refused)."""
    root, s = Path(root), settings
    by_group = {g: sorted(c["id"] for c in LVIS_CATEGORIES if c["frequency"] == g) for g in GROUP_WEIGHTS}

    def assemble(split: str, objects: List[List[dict]], first_ann_id: int) -> dict:
        data = _lvis_json(s, split, objects, first_ann_id)
        freqs = {c["frequency"] for c in data["categories"] if c["instance_count"]}
        if freqs != set(GROUP_WEIGHTS):
            raise RuntimeError(f"mini-LVIS {split} split has objects of frequency groups {sorted(freqs)} only; "
                               "raise max_objects or the image size")
        return data

    return build_world(root, s, "mini-LVIS", MARKER, BUILDING,
                       {split: [root / f"coco/{split}2017/{i:012d}.jpg" for i in _image_ids(s, split)]
                        for split in SPLITS},
                       {split: root / f"lvis/lvis_v1_{split}.json" for split in SPLITS},
                       lambda split, index, path: _render(s, split, index, by_group, path), assemble)
