"""Drawing and serialising detections (used by ``make demo`` and ``demo.py``)."""
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.layers import nms
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

__all__ = ["draw_detections", "default_scale", "best_label_per_object", "detections_to_json"]

MIN_DRAWN_SIDE = 480  # smaller images are drawn upscaled, so that labels fit and stay readable
MAX_UPSCALED_SIDE = 1600  # but never so much that a long thin strip becomes a giant canvas
NOVEL_COLOUR = (1.0, 0.0, 1.0)
BASE_COLOUR = (0.0, 0.8, 1.0)


def best_label_per_object(inst: Instances, iou_threshold: float = 0.5) -> Instances:
    """Class-agnostic NMS: of detections overlapping at IoU > ``iou_threshold`` keep the
    highest-scoring one. Detectron2 keeps one detection per class and box, so an object can carry
    several names; drawn, each object then shows its best one."""
    return inst[nms(inst.pred_boxes.tensor, inst.scores, iou_threshold)]


def default_scale(height: int, width: int) -> float:
    """The drawing scale of an image: upscaled so the shorter side is at least ``MIN_DRAWN_SIDE``,
    the longer one at most ``MAX_UPSCALED_SIDE``; never downscaled."""
    return min(max(1.0, MIN_DRAWN_SIDE / max(1, min(height, width))), max(1.0, MAX_UPSCALED_SIDE / max(height, width)))


def draw_detections(image: np.ndarray, inst: Instances, class_names: Sequence[str],
                    novel_ids: Sequence[int] = (), scale: Optional[float] = None,
                    one_label_iou: Optional[float] = 0.5) -> np.ndarray:
    """H x W x 3 RGB image with boxes, masks and ``name score`` labels; novel classes in magenta.
    ``scale``: drawing scale (None: upscale so the shorter side is at least ``MIN_DRAWN_SIDE``, the
    longer one at most ``MAX_UPSCALED_SIDE``).
    ``one_label_iou``: draw only each object's best label (``best_label_per_object``); None: all."""
    if scale is None:
        scale = default_scale(*image.shape[:2])
    if one_label_iou is not None:
        inst = best_label_per_object(inst, one_label_iou)
    novel = set(novel_ids)
    classes = inst.pred_classes.tolist()
    labels = [f"{class_names[c]}{' (novel)' if c in novel else ''} {s:.2f}"
              for c, s in zip(classes, inst.scores.tolist())]
    vis = Visualizer(image, scale=scale).overlay_instances(
        boxes=inst.pred_boxes, masks=inst.pred_masks if inst.has("pred_masks") else None, labels=labels,
        assigned_colors=[NOVEL_COLOUR if c in novel else BASE_COLOUR for c in classes], alpha=0.3)
    return vis.get_image()


def detections_to_json(inst: Instances, class_names: Sequence[str]) -> List[Dict]:
    """One dict per detection: class name and id, score, XYXY box in image pixels."""
    return [{"class": class_names[c], "class_id": c, "score": round(s, 4), "box_xyxy": [round(v, 2) for v in b]}
            for c, s, b in zip(inst.pred_classes.tolist(), inst.scores.tolist(), inst.pred_boxes.tensor.tolist())]
