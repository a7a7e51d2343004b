"""Helpers over Detectron2 dataset dicts ("records"). G: objects of one image; M: regions."""
from typing import Tuple

import torch
from detectron2.structures import Boxes, BoxMode, pairwise_iou

__all__ = ["annotation_boxes", "match_regions"]


def annotation_boxes(record: dict, device="cpu") -> Boxes:
    """The record's annotation boxes as XYXY_ABS ``Boxes`` (G x 4; 0 x 4 without annotations)."""
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]]
    return Boxes(torch.tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4))  # G x 4


def match_regions(record: dict, regions: Boxes) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match each region to the object of ``record`` it overlaps most.

    Returns the IoU matrix (M x G), each region's best IoU (M; 0 where the record has no object)
    and that object's ``category_id`` (M; -1 where the record has no object)."""
    gt = annotation_boxes(record, device=regions.device)
    iou = pairwise_iou(regions, gt)  # M x G
    if not len(gt):
        return iou, torch.zeros(len(regions), device=regions.device), torch.full((len(regions),), -1, dtype=torch.long)
    best, match = iou.max(1)  # M, M
    categories = torch.tensor([a["category_id"] for a in record["annotations"]], dtype=torch.long)
    return iou, best, categories[match.cpu()]
