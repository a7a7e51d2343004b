"""Where a model's detections land, read from its LVIS results (no model needed).

:func:`confident_detection_breakdown`: where confident detections of novel and of base classes
land (the right object, another object, background). :func:`novel_object_naming`: whether the
model names the novel objects it finds (the class of the top-scoring detection on each).
:func:`class_subset_ap`: LVIS AP, AP50 and AP75 over a subset of the classes (e.g. the base ones).
"""
import copy
from typing import Dict, Iterable, List, Sequence

import torch
from detectron2.structures import Boxes, BoxMode, pairwise_iou

__all__ = ["confident_detection_breakdown", "novel_object_naming", "class_subset_ap"]


def _xyxy(xywh) -> Boxes:
    boxes = torch.tensor(xywh, dtype=torch.float32).view(-1, 4)  # B x 4
    return Boxes(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))


def _by_image(items: Iterable[dict]) -> Dict[int, List[dict]]:
    out: Dict[int, List[dict]] = {}
    for item in items:
        out.setdefault(item["image_id"], []).append(item)
    return out


def confident_detection_breakdown(results: List[dict], gt: dict, novel_category_ids: Iterable[int],
                                  min_score: float = 0.3, iou: float = 0.5) -> Dict[str, Dict[str, int]]:
    """Count detections scoring at least ``min_score`` by predicted group (``novel``/``base``) and by
    where they land: ``right`` (IoU >= ``iou`` with an object of their class, the best-overlapping
    object), ``other_object`` (best-overlapping object of another class) or ``background``.

    ``results``: LVIS/COCO result dicts (image_id, category_id, bbox XYWH, score); ``gt``: the LVIS
    json dict; ``novel_category_ids``: dataset category ids."""
    novel = set(novel_category_ids)
    objects = _by_image(gt["annotations"])
    dets = _by_image(r for r in results if r["score"] >= min_score)
    counts = {g: {"right": 0, "other_object": 0, "background": 0} for g in ("novel", "base")}
    for image_id, mine in dets.items():
        groups = ["novel" if r["category_id"] in novel else "base" for r in mine]
        gts = objects.get(image_id, [])
        if not gts:
            for g in groups:
                counts[g]["background"] += 1
            continue
        overlap = pairwise_iou(_xyxy([r["bbox"] for r in mine]), _xyxy([a["bbox"] for a in gts]))  # dets x objects
        best_iou, best = overlap.max(1)
        for g, r, v, j in zip(groups, mine, best_iou.tolist(), best.tolist()):
            where = "background" if v < iou else (
                "right" if gts[j]["category_id"] == r["category_id"] else "other_object")
            counts[g][where] += 1
    return counts


def novel_object_naming(results: List[dict], gt: dict, novel_category_ids: Iterable[int],
                        iou: float = 0.5) -> Dict:
    """For every object of a novel class in ``gt``: is it ``found`` (a detection of any class at box
    IoU >= ``iou``) and is it ``named_right`` (the top-scoring such detection carries its class)?
    Returns the counts (``objects``, ``found``, ``named_right``) and ``wrong_names``: category id ->
    how often a top detection gave a novel object that wrong class. Arguments as
    :func:`confident_detection_breakdown`."""
    novel = set(novel_category_ids)
    dets = _by_image(results)
    counts, wrong = {"objects": 0, "found": 0, "named_right": 0}, {}
    for image_id, objects in _by_image(a for a in gt["annotations"] if a["category_id"] in novel).items():
        counts["objects"] += len(objects)
        mine = dets.get(image_id, [])
        if not mine:
            continue
        overlap = pairwise_iou(_xyxy([a["bbox"] for a in objects]), _xyxy([r["bbox"] for r in mine]))  # objects x dets
        scores = torch.tensor([r["score"] for r in mine])
        for a, row in zip(objects, overlap):
            hits = torch.nonzero(row >= iou).flatten()
            if not len(hits):
                continue
            counts["found"] += 1
            top = mine[hits[scores[hits].argmax()]]["category_id"]
            if top == a["category_id"]:
                counts["named_right"] += 1
            else:
                wrong[top] = wrong.get(top, 0) + 1
    return {**counts, "wrong_names": wrong}


def class_subset_ap(results: List[dict], gt_json: str, category_ids: Sequence[int], iou_type: str = "bbox",
                    max_dets: int = 300) -> Dict[str, float]:
    """LVIS AP, AP50 and AP75 (in %) of ``results`` (LVIS result dicts) averaged over
    ``category_ids`` only, as the LVIS evaluator computes them (``neg_category_ids`` and all);
    detections of other classes are dropped first. All zero when none is left."""
    from lvis import LVIS, LVISEval, LVISResults

    keep = set(category_ids)
    dets = [copy.copy(r) for r in results if r["category_id"] in keep]  # LVISResults adds keys to each
    if not dets:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    gt = LVIS(gt_json)
    evaluator = LVISEval(gt, LVISResults(gt, dets, max_dets=max_dets), iou_type)
    evaluator.params.cat_ids = sorted(keep & set(gt.get_cat_ids()))
    evaluator.run()
    return {k: 100.0 * float(evaluator.results[k]) for k in ("AP", "AP50", "AP75")}
