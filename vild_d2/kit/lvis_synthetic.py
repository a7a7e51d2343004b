"""Synthetic LVIS ground truth and noisy detections, to check and time LVIS evaluators.

No images: only what an LVIS evaluator reads. The ground truth (:func:`synthetic_lvis_gt`) holds
star-shaped polygon objects of log-uniform sizes (small, medium and large in LVIS's sense) from all
three frequency groups, a share of crowded images (dozens of objects of one to three categories),
``neg_category_ids`` sampled among each image's absent categories and one present category listed
in ``not_exhaustive_category_ids`` on a share of images. Box and area come from the polygon's
pycocotools RLE, so both evaluators see the same geometry.

The detections (:func:`synthetic_detections`) are what Detectron2's evaluators gather from
``process``: per image ``{"image_id", "instances": [...]}`` with 0-based contiguous category ids,
XYWH boxes, float32 scores and RLE masks with ``str`` counts. Each object is found with jittered
polygons (one or more copies, some of a wrong class, some with low scores, a few with an empty
mask as Detectron2 outputs when a mask is thresholded away), then every image is filled with
low-scored random and near-miss detections up to ``max_per_image`` (some leave the image: empty
mask, box of zero size); a fixed set of categories is never predicted.
"""
import dataclasses
from typing import Dict, List, Sequence

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["SyntheticLVISSettings", "toy_categories", "lvis_v1_categories", "synthetic_lvis_gt",
           "synthetic_detections"]

GROUP_WEIGHTS = {"f": 0.5, "c": 0.3, "r": 0.2}  # share of objects per frequency group
VERTICES = 10  # per star-shaped polygon
EMPTIED_MASKS = 0.05  # share of hits whose mask is empty (Detectron2's mask head can threshold a box empty)


@dataclasses.dataclass(frozen=True)
class SyntheticLVISSettings:
    num_images: int = 40
    width: int = 320
    height: int = 240
    mean_objects: float = 5.0  # objects per ordinary image: 1 + Poisson(mean_objects - 1)
    crowded_every: int = 6  # every n-th image is crowded
    crowded_objects: int = 40  # objects in a crowded image, of one to three categories
    min_size: float = 6.0  # object diameter in pixels, log-uniform in [min_size, max_size * min(width, height)]
    max_size: float = 1.0
    num_negatives: int = 10  # neg_category_ids per image, sampled among its absent categories
    not_exhaustive_share: float = 0.3  # share of images listing one present category as not exhaustive
    seed: int = 0


def toy_categories(num: int) -> List[dict]:
    """``num`` categories with ids 1..num and frequencies f, c, r, f, c, r, ..."""
    return [{"id": i, "name": f"category_{i}", "frequency": "fcr"[(i - 1) % 3]} for i in range(1, num + 1)]


def lvis_v1_categories() -> List[dict]:
    """LVIS v1's 1,203 categories (ids, names, frequencies) as Detectron2 lists them."""
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    return [{"id": c["id"], "name": c["name"], "frequency": c["frequency"]} for c in LVIS_CATEGORIES]


def _star_polygons(rng, centres: np.ndarray, radii: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, 2 * VERTICES) flat x, y polygons: star shapes around ``centres`` (n, 2) with x / y
    radii ``radii`` (n, 2), clipped to the image."""
    n = len(centres)
    angles = np.sort(rng.uniform(0, 2 * np.pi, (n, VERTICES)), axis=1)
    reach = rng.uniform(0.55, 1.0, (n, VERTICES))
    xs = np.clip(centres[:, :1] + radii[:, :1] * reach * np.cos(angles), 0, width)
    ys = np.clip(centres[:, 1:] + radii[:, 1:] * reach * np.sin(angles), 0, height)
    return np.stack([xs, ys], axis=2).reshape(n, -1)


def _random_shapes(rng, n: int, width: int, height: int, min_size: float = 6.0, max_size: float = 1.0):
    """Centres (n, 2) and x / y radii (n, 2) of objects of log-uniform diameters (see the settings)."""
    diam = np.exp(rng.uniform(np.log(min_size), np.log(max_size * min(width, height)), n))
    aspect = np.exp(rng.uniform(-0.5, 0.5, n))
    radii = np.stack([diam * aspect, diam / aspect], axis=1) / 2
    centres = rng.uniform([0, 0], [width, height], (n, 2))
    return centres, radii


def _rles(polygons: np.ndarray, width: int, height: int) -> List[dict]:
    return mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width)


def synthetic_lvis_gt(categories: Sequence[dict], settings: SyntheticLVISSettings = SyntheticLVISSettings()
                      ) -> dict:
    """An LVIS v1 format ground truth dict (images, annotations, categories) over ``categories``
    (dicts with id, name, frequency)."""
    s = settings
    rng = np.random.default_rng(s.seed)
    by_group = {g: [c["id"] for c in categories if c["frequency"] == g] for g in GROUP_WEIGHTS}
    groups = [g for g in GROUP_WEIGHTS if by_group[g]]
    weights = np.array([GROUP_WEIGHTS[g] for g in groups]) / sum(GROUP_WEIGHTS[g] for g in groups)
    all_ids = np.array([c["id"] for c in categories])
    images, annotations = [], []
    for index in range(s.num_images):
        image_id = index + 1
        if index % s.crowded_every == s.crowded_every - 1:
            n = s.crowded_objects
            pool = [rng.choice(by_group[rng.choice(groups, p=weights)]) for _ in range(rng.integers(1, 4))]
            cats = rng.choice(pool, n)
        else:
            n = 1 + rng.poisson(s.mean_objects - 1)
            cats = [rng.choice(by_group[g]) for g in rng.choice(groups, n, p=weights)]
        centres, radii = _random_shapes(rng, n, s.width, s.height, s.min_size, s.max_size)
        polygons = _star_polygons(rng, centres, radii, s.width, s.height)
        rles = _rles(polygons, s.width, s.height)
        areas, boxes = mask_utils.area(rles), mask_utils.toBbox(rles)
        present = set()
        for cat, poly, area, box in zip(cats, polygons, areas, boxes):
            if area == 0:
                continue
            present.add(int(cat))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cat),
                                "segmentation": [poly.tolist()], "area": float(area), "bbox": box.tolist()})
        absent = np.setdiff1d(all_ids, sorted(present))
        negatives = rng.choice(absent, min(s.num_negatives, len(absent)), replace=False)
        flag = present and rng.random() < s.not_exhaustive_share
        not_exhaustive = [int(rng.choice(sorted(present)))] if flag else []
        images.append({"id": image_id, "width": s.width, "height": s.height,
                       "coco_url": f"http://images.cocodataset.org/val2017/{image_id:012d}.jpg",
                       "neg_category_ids": sorted(int(c) for c in negatives),
                       "not_exhaustive_category_ids": not_exhaustive})
    return {"info": {"description": "vild_d2 synthetic LVIS (evaluator checks)"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": [dict(c) for c in categories]}


def _jittered(rng, polygon: np.ndarray, width: int, height: int, spread: float) -> np.ndarray:
    """``polygon`` (2 * VERTICES,) moved, scaled and with noisy vertices, ``spread`` times its size."""
    xy = polygon.reshape(-1, 2)
    centre, size = xy.mean(axis=0), np.ptp(xy, axis=0).max() + 1
    moved = (xy - centre) * np.exp(rng.normal(0, spread, 2)) + centre + rng.normal(0, spread * size, 2)
    moved += rng.normal(0, spread * size / 4, moved.shape)
    return np.clip(moved, 0, [width, height]).reshape(-1)


def synthetic_detections(gt: dict, *, max_per_image: int = 300, full_share: float = 0.5, related_share: float = 0.5,
                         seed: int = 0, never_predicted_every: int = 7) -> List[Dict]:
    """Noisy detections of ``gt`` in Detectron2's gathered evaluator form (see module doc): crowded
    images and a ``full_share`` of the others hold ``max_per_image``, the rest fewer. A
    ``related_share`` of the filling detections is of a category the image is labelled with (present
    or negative), the rest of any category. Categories whose id is a multiple of
    ``never_predicted_every`` are never predicted."""
    rng = np.random.default_rng(seed)
    cat_ids = np.array(sorted(c["id"] for c in gt["categories"]))
    predictable = cat_ids[cat_ids % never_predicted_every != 0]
    by_image: Dict[int, list] = {im["id"]: [] for im in gt["images"]}
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    out = []
    for image in gt["images"]:
        width, height, anns = image["width"], image["height"], by_image[image["id"]]
        related = np.array(sorted({a["category_id"] for a in anns} | set(image["neg_category_ids"]))
                           or predictable[:1])
        polygons, cats, scores, emptied = [], [], [], []
        for ann in anns:  # hits: one or more jittered copies, some of a wrong class, some weak
            if rng.random() > 0.85:
                continue
            for copy in range(1 + rng.poisson(0.5)):
                polygon = np.asarray(ann["segmentation"][0])
                polygons.append(_jittered(rng, polygon, width, height, 0.06 + 0.06 * copy))
                if rng.random() > 0.8:  # a wrong class: one the image is labelled with, or any
                    cats.append(rng.choice(related if rng.random() < 0.5 else predictable))
                else:
                    cats.append(ann["category_id"])
                weak = rng.random() < 0.3
                scores.append(rng.uniform(0.0, 0.3) if weak else rng.uniform(0.3, 1.0) * (0.6 if copy else 1.0))
                emptied.append(rng.random() < EMPTIED_MASKS)
        crowded = len(anns) > 20
        full = crowded or rng.random() < full_share
        total = max_per_image if full else int(rng.integers(len(polygons) + 1, max_per_image + 1))
        fill = max(0, total - len(polygons))
        near = [a for a in anns for _ in range(2)][: fill // 3]  # near misses: loose copies of objects
        polygons += [_jittered(rng, np.asarray(a["segmentation"][0]), width, height, 0.3) for a in near]
        centres, radii = _random_shapes(rng, fill - len(near), width, height)
        polygons += list(_star_polygons(rng, centres, radii, width, height))
        cats += list(np.where(rng.random(fill) < related_share, rng.choice(related, fill),
                              rng.choice(predictable, fill)))
        scores += list(rng.uniform(0.0, 0.3, fill))
        cats = [c if c % never_predicted_every else c - 1 for c in cats]  # wrong classes too skip them
        emptied += [False] * fill
        out.append({"image_id": image["id"], "instances": _instances(rng, image, polygons, cats, scores, emptied)})
    return out


def _instances(rng, image: dict, polygons: list, cats: list, scores: list, emptied: list) -> List[dict]:
    """Detectron2's json results of one image: 0-based category ids, XYWH boxes (the polygon's, a
    little noisy; of zero size where the polygon left the image) and RLE masks (empty if emptied)."""
    if not polygons:
        return []
    width, height = image["width"], image["height"]
    rles = _rles(np.stack(polygons), width, height)
    boxes = mask_utils.toBbox(rles) + rng.normal(0, 1.0, (len(rles), 4))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], 0.0)
    empty = mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
    instances = []
    for rle, box, cat, score, gone in zip(rles, boxes, cats, np.asarray(scores, dtype=np.float32), emptied):
        rle = empty if gone else rle
        instances.append({"image_id": image["id"], "category_id": int(cat) - 1, "bbox": box.tolist(),
                          "score": float(score), "segmentation": {**rle, "counts": rle["counts"].decode("utf-8")}})
    return instances
