"""Drawing and serialising detections (used by ``make demo`` and ``demo.py``)."""
from typing import Dict, List, Sequence

import numpy as np
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

__all__ = ["draw_detections", "detections_to_json", "convert_rgb"]

NOVEL_COLOUR = (1.0, 0.0, 1.0)
BASE_COLOUR = (0.0, 0.8, 1.0)


def draw_detections(image: np.ndarray, inst: Instances, class_names: Sequence[str],
                    novel_ids: Sequence[int] = (), scale: float = 1.0) -> np.ndarray:
    """H x W x 3 RGB image with boxes, masks and ``name score`` labels; novel classes in magenta."""
    novel = set(novel_ids)
    classes = inst.pred_classes.tolist()
    labels = [f"{class_names[c]}{' (novel)' if c in novel else ''} {s:.2f}" for c, s in zip(classes, inst.scores.tolist())]
    vis = Visualizer(image, scale=scale).overlay_instances(
        boxes=inst.pred_boxes, masks=inst.pred_masks if inst.has("pred_masks") else None, labels=labels,
        assigned_colors=[NOVEL_COLOUR if c in novel else BASE_COLOUR for c in classes], alpha=0.3)
    return vis.get_image()


def detections_to_json(inst: Instances, class_names: Sequence[str]) -> List[Dict]:
    """One dict per detection: class name and id, score, XYXY box in image pixels."""
    return [{"class": class_names[c], "class_id": c, "score": round(s, 4), "box_xyxy": [round(v, 2) for v in b]}
            for c, s, b in zip(inst.pred_classes.tolist(), inst.scores.tolist(), inst.pred_boxes.tensor.tolist())]


def convert_rgb(image: np.ndarray, fmt: str) -> np.ndarray:
    """An H x W x 3 RGB image in the channel order a model was trained on (``INPUT.FORMAT``)."""
    if fmt == "RGB":
        return image
    if fmt == "BGR":
        return np.ascontiguousarray(image[:, :, ::-1])
    raise ValueError(f"INPUT.FORMAT {fmt!r} is not supported here; use RGB or BGR")
