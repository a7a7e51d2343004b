"""Helpers over Detectron2 dataset dicts ("records"). G: objects of one image."""
import torch
from detectron2.structures import Boxes, BoxMode

__all__ = ["annotation_boxes"]


def annotation_boxes(record: dict, device="cpu") -> Boxes:
    """The record's annotation boxes as XYXY_ABS ``Boxes`` (G x 4; 0 x 4 without annotations)."""
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]]
    return Boxes(torch.tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4))  # G x 4
