"""Write the toy world to disk in LVIS v1 format: images, three annotation splits, settings.

Layout under ``root``::

    settings.json                      the generation settings (written last: completion marker)
    images/{train,val}/NNNNNN.png
    annotations/<TOY_PREFIX>_{train_base,train_full,val}.json

``train_base`` and ``train_full`` share the training images; ``train_base`` drops every rare
(novel) annotation while the rare objects stay in the pixels, as in ViLD's LVIS setting.
"""
import dataclasses
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from vild_d2.artifacts import SETTINGS, check_settings, read_json, write_json, write_settings
from vild_d2.locking import exclusive
from vild_d2.progress import progress

from .scenes import render_scene, toy_categories

logger = logging.getLogger(__name__)

# Version of the toy world, bumped when the generator's output changes. It names the world's
# datasets (<TOY_PREFIX>_train_base, <TOY_PREFIX>_val, ...), its folder under $DETECTRON2_DATASETS and
# its annotation files; configs/toy/Base-ViLD-Toy-R18-FPN.yaml names the datasets (a test checks it).
TOY_VERSION = 4
TOY_PREFIX = f"toy_v{TOY_VERSION}"
SPLIT_FILES = {split: f"annotations/{TOY_PREFIX}_{split}.json" for split in ("train_base", "train_full", "val")}
_SPLIT_SEED = {"train": 1, "val": 2}


@dataclasses.dataclass(frozen=True)
class ToyWorldSettings:
    num_train: int = 1200
    num_val: int = 300
    seed: int = 0
    min_size: int = 128
    max_size: int = 160
    max_objects: int = 4
    version: int = TOY_VERSION


def _render_one(args):
    """Render image ``idx`` of ``split`` (seeded by (seed, split, idx)), save it, return its record."""
    settings, split, idx, image_dir = args
    rng = np.random.default_rng((settings.seed, _SPLIT_SEED[split], idx))
    img, objects = render_scene(
        rng, toy_categories(), (settings.min_size, settings.max_size), settings.max_objects
    )
    Image.fromarray(img).save(os.path.join(image_dir, f"{idx:06d}.png"))
    anns = []
    for obj in objects:
        rle = mask_utils.encode(np.asfortranarray(obj.mask))
        anns.append({
            "category_id": obj.category_id,
            "segmentation": [obj.polygon],
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": float(mask_utils.area(rle)),
        })
    return {"height": img.shape[0], "width": img.shape[1], "annotations": anns}


def _render_split(settings, split, n, root, workers):
    image_dir = os.path.join(root, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    jobs = [(settings, split, i, image_dir) for i in range(n)]
    desc = f"toy world: {split} images"
    if workers <= 1:
        return [_render_one(j) for j in progress(jobs, desc=desc, unit="img")]
    with ProcessPoolExecutor(workers) as pool:
        return list(progress(pool.map(_render_one, jobs, chunksize=32), total=n, desc=desc, unit="img"))


def _lvis_json(split, records, categories, keep_rare: bool, counts: Dict[int, List[int]]):
    """Assemble an LVIS v1 dict. ``counts``: category id -> [image_count, instance_count]."""
    rare = {c.id for c in categories if c.frequency == "r"}
    all_ids = {c.id for c in categories}
    images, annotations = [], []
    for i, rec in enumerate(records):
        image_id = i + 1
        present = {a["category_id"] for a in rec["annotations"]}
        # Fully labelled world: every absent category is a verified negative (a rare one
        # only where rare annotations are kept, since train_base hides them).
        negatives = sorted(all_ids - present - (set() if keep_rare else rare))
        name = f"{split}/{i:06d}.png"
        images.append({
            "id": image_id, "file_name": name, "coco_url": f"toy://{name}",
            "height": rec["height"], "width": rec["width"], "license": 1,
            "neg_category_ids": negatives, "not_exhaustive_category_ids": [],
        })
        for ann in rec["annotations"]:
            if keep_rare or ann["category_id"] not in rare:
                annotations.append(dict(ann, id=len(annotations) + 1, image_id=image_id))
    cats = [{
        "id": c.id, "name": c.name, "synonyms": [c.name], "synset": f"{c.name}.n.01",
        "def": f"a {c.colour} {c.shape} shape", "frequency": c.frequency,
        "image_count": counts[c.id][0], "instance_count": counts[c.id][1],
    } for c in categories]
    return {"info": {"description": "vild_d2 toy world", "version": str(ToyWorldSettings.version)},
            "licenses": [{"id": 1, "name": "synthetic"}],
            "images": images, "annotations": annotations, "categories": cats}


def read_settings(root) -> dict:
    path = Path(root) / SETTINGS
    return read_json(path, "toy world settings") if path.is_file() else {}


def build_toy_world(root, settings: ToyWorldSettings = ToyWorldSettings(), workers: int = 2) -> bool:
    """Generate the toy world into ``root``; return False when it was already there.

    The world is built in a temporary sibling folder and renamed into place, so a killed
    run leaves nothing half-written. A ``root`` holding a world made with other settings, or other
    files, raises :class:`~vild_d2.artifacts.SettingsMismatchError` instead of being overwritten.
    One job builds a root at a time; a second one waits and then finds the world built.
    """
    root = Path(root)
    with exclusive(root.parent, "toy world build", name=f".{root.name}.lock", wait=True):
        return _build(root, settings, workers)


def _build(root: Path, settings: ToyWorldSettings, workers: int) -> bool:
    wanted = dataclasses.asdict(settings)
    if check_settings(root, wanted, "a toy world", others=sorted(root.iterdir()) if root.is_dir() else ()):
        logger.info("toy world already built in %s, reusing it", root)
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        categories = toy_categories()
        train = _render_split(settings, "train", settings.num_train, tmp, workers)
        val = _render_split(settings, "val", settings.num_val, tmp, workers)
        counts = {c.id: [0, 0] for c in categories}
        for rec in train:
            ids = [a["category_id"] for a in rec["annotations"]]
            for cid in set(ids):
                counts[cid][0] += 1
            for cid in ids:
                counts[cid][1] += 1
        (tmp / "annotations").mkdir()
        for split, records, keep_rare in (("train_base", train, False), ("train_full", train, True),
                                          ("val", val, True)):
            data = _lvis_json(split.split("_")[0], records, categories, keep_rare, counts)
            write_json(tmp / SPLIT_FILES[split], data, indent=None)
        write_settings(tmp, wanted)  # last: marks the world complete
        if root.exists():
            root.rmdir()  # empty, checked above
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("toy world written to %s (%d train, %d val images)", root, settings.num_train, settings.num_val)
    return True
