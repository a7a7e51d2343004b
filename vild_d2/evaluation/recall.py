"""Proposal recall: how many objects a proposal network finds, novel versus base.

Shapes: G objects of an image, P proposals of an image (the top ``top_k`` used).
"""
from typing import Callable, Dict, Iterable, List

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes, pairwise_iou

from ..data.records import annotation_boxes

__all__ = ["proposal_hits", "recall_summary"]


def proposal_hits(source: Callable, records: Iterable[dict], novel_ids: Iterable[int], top_k: int,
                  iou: float = 0.5) -> Dict[str, List[bool]]:
    """For every object of ``records``: whether one of the top ``top_k`` proposals of ``source``
    (a region-cache proposal source) overlaps it at IoU >= ``iou``; {"novel": [...], "base": [...]}."""
    novel = set(novel_ids)
    hits: Dict[str, List[bool]] = {"novel": [], "base": []}
    for r in records:
        boxes, _ = source(r, read_image(r["file_name"], format="RGB"))
        gt = annotation_boxes(r)  # G x 4
        best = pairwise_iou(gt, Boxes(torch.from_numpy(boxes[:top_k]))).max(1).values \
            if len(boxes) else torch.zeros(len(gt))  # G
        for a, b in zip(r["annotations"], best.tolist()):
            hits["novel" if a["category_id"] in novel else "base"].append(b >= iou)
    return hits


def recall_summary(hits: Dict[str, List[bool]], top_k: int, iou: float) -> Dict:
    """AR@top_k for novel and base objects, with the object counts."""
    recall = {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
    recall.update(objects={k: len(v) for k, v in hits.items()}, top_k=top_k, iou=iou)
    return recall
