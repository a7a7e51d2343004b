"""Mini-COCO: a small synthetic stand-in of COCO 2017 with the real 80 categories, to rehearse the
open-vocabulary COCO recipe (48 base / 17 novel classes, :mod:`vild_d2.data.coco_ov`) end to end
on CPU: the ``coco_2017_train_ov_base`` / ``coco_2017_val_ov_all`` registrations, the base split,
the CLIP region cache, AP50 on novel / base / all. ``root`` plays ``$DETECTRON2_DATASETS``::

    coco/annotations/instances_train2017.json   COCO-format annotations, all 80 categories
    coco/annotations/instances_val2017.json
    coco/annotations/mini_coco_settings.json    the settings, written last: completion marker
    coco/train2017/000000XXXXXX.jpg             images (ids unique across both splits)
    coco/val2017/000000XXXXXX.jpg

Images: :mod:`vild_d2.kit.synthetic_images`. Objects are drawn from the 48 base, the 17 novel and
the 15 other COCO classes; the jsons hold every object, as COCO's do, and the registrations keep
the base classes for training and the 65 for evaluation. A share of training images holds only
novel objects: after the base split they have no box, only cached CLIP regions.
"""
import dataclasses
import logging
from pathlib import Path
from typing import Dict, List

import numpy as np
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from vild_d2.data.coco_ov import COCO_OV_BASE, COCO_OV_NOVEL

from .synthetic_images import ImageSettings, build_world, render_image

logger = logging.getLogger(__name__)

__all__ = ["MiniCOCOSettings", "build_mini_coco", "coco_groups"]

SPLITS = ("train", "val")
MARKER = "coco/annotations/mini_coco_settings.json"
BUILDING = "coco/annotations/.mini_coco_building.json"  # present while a build runs: its leftovers are ours
TAG = "vild_d2 mini-COCO (synthetic)"
GROUP_WEIGHTS = {"base": 0.6, "novel": 0.3, "other": 0.1}  # share of objects per group
_SPLIT_SEED = {"train": 3, "val": 4}


@dataclasses.dataclass(frozen=True)
class MiniCOCOSettings(ImageSettings):
    novel_only_fraction: float = 1 / 6  # share of training images whose objects are all novel
    seed: int = 0
    version: int = 1  # bump when the generator's output changes

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.novel_only_fraction < 1.0:
            raise ValueError(f"need 0 <= novel_only_fraction < 1, got {self.novel_only_fraction}")


def coco_groups() -> Dict[str, List[int]]:
    """COCO category ids (thing classes) of the base, novel and other (unused) groups."""
    ids = {c["name"]: c["id"] for c in COCO_CATEGORIES if c.get("isthing")}
    base, novel = [ids[n] for n in COCO_OV_BASE], [ids[n] for n in COCO_OV_NOVEL]
    return {"base": base, "novel": novel, "other": sorted(set(ids.values()) - set(base) - set(novel))}


def _image_groups(s: MiniCOCOSettings, split: str, index: int, n: int, rng) -> List[str]:
    """Groups of an image's objects: all novel on the novel-only training images; the first image
    of each split starts with a base and a novel object, so every split has both."""
    frac = s.novel_only_fraction if split == "train" else 0.0
    if int((index + 1) * frac) > int(index * frac):
        return ["novel"] * n
    groups = [str(g) for g in rng.choice(list(GROUP_WEIGHTS), size=n, p=list(GROUP_WEIGHTS.values()))]
    if index == 0:
        groups[:2] = ["base", "novel"][:n]
    return groups


def _render(s: MiniCOCOSettings, split: str, index: int, groups: Dict[str, List[int]], path: Path) -> List[dict]:
    """Render image ``index`` of ``split`` (seeded by (seed, split, index)), save it, return its objects."""
    rng = np.random.default_rng((s.seed, _SPLIT_SEED[split], index))

    def pools(n: int) -> List[List[int]]:
        n = max(n, min(2, s.max_objects)) if index == 0 else n  # room for a base and a novel object
        return [groups[g] for g in _image_groups(s, split, index, n, rng)]

    return render_image(rng, s, path, pools)


def _image_ids(s: MiniCOCOSettings, split: str) -> List[int]:
    return list(range(1, s.num_train + 1) if split == "train" else range(s.num_train + 1, s.num_train + s.num_val + 1))


def _coco_json(s: MiniCOCOSettings, split: str, objects: List[List[dict]], first_ann_id: int) -> dict:
    images, annotations = [], []
    for image_id, objs in zip(_image_ids(s, split), objects):
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": s.width, "height": s.height,
                       "license": 1})
        for obj in objs:
            annotations.append(dict(id=first_ann_id + len(annotations), image_id=image_id, iscrowd=0, **obj))
    cats = [{"id": c["id"], "name": c["name"], "supercategory": "thing"} for c in COCO_CATEGORIES if c.get("isthing")]
    return {"info": {"description": TAG, "version": str(s.version)},
            "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
            "images": images, "annotations": annotations, "categories": cats}


def build_mini_coco(root, settings: MiniCOCOSettings = MiniCOCOSettings()) -> bool:
    """Write the mini-COCO world under ``root``; return False when it was already there (see
    :func:`~vild_d2.kit.synthetic_images.build_world`: atomic files, settings marker last, files not
    written here, e.g. the real COCO's or a mini-LVIS's images in the same folders, refused)."""
    root, s = Path(root), settings
    groups = coco_groups()

    def assemble(split: str, objects: List[List[dict]], first_ann_id: int) -> dict:
        data = _coco_json(s, split, objects, first_ann_id)
        present = {a["category_id"] for a in data["annotations"]}
        if not (present & set(groups["base"]) and present & set(groups["novel"])):
            raise RuntimeError(f"mini-COCO {split} split lacks base or novel objects; raise max_objects or the "
                               "image size")
        return data

    return build_world(root, s, "mini-COCO", MARKER, BUILDING,
                       {split: [root / f"coco/{split}2017/{i:012d}.jpg" for i in _image_ids(s, split)]
                        for split in SPLITS},
                       {split: root / f"coco/annotations/instances_{split}2017.json" for split in SPLITS},
                       lambda split, index, path: _render(s, split, index, groups, path), assemble)
