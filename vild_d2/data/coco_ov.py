"""COCO open-vocabulary detection: the 48 base / 17 novel split of OVR-CNN and ViLD.

``coco_2017_train_ov_base`` keeps every training image but only the 48 base classes' boxes;
``coco_2017_val_ov_all`` evaluates all 65 classes (AP50 on novel, base and all, see
:class:`vild_d2.evaluation.OVCOCOEvaluator`). The other 15 COCO classes are not used.
"""
import os
from typing import Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.coco import load_coco_json

from ..artifacts import json_errors_named

__all__ = ["COCO_OV_BASE", "COCO_OV_NOVEL", "register_ov_coco_instances", "coco_ov_metadata"]

COCO_OV_NOVEL = ("airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard",
                 "skateboard", "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors")
COCO_OV_BASE = ("person", "bicycle", "car", "motorcycle", "train", "truck", "boat", "bench", "bird", "horse",
                "sheep", "bear", "zebra", "giraffe", "backpack", "handbag", "suitcase", "frisbee", "skis", "kite",
                "surfboard", "bottle", "fork", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
                "carrot", "pizza", "donut", "chair", "bed", "toilet", "tv", "laptop", "mouse", "remote",
                "microwave", "oven", "toaster", "refrigerator", "book", "clock", "vase", "toothbrush")


def coco_ov_metadata(class_names: Sequence[str], novel: Sequence[str]) -> Dict:
    """Metadata for the COCO categories named in ``class_names`` (kept in COCO id order)."""
    cats = [c for c in COCO_CATEGORIES if c.get("isthing") and c["name"] in set(class_names)]
    names = [c["name"] for c in cats]
    return {"thing_classes": names, "class_synonyms": [[n] for n in names],
            "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
            "novel_class_ids": [i for i, n in enumerate(names) if n in set(novel)],
            "base_class_ids": [i for i, n in enumerate(names) if n not in set(novel)]}


def _load(json_file: str, image_root: str, id_map: Dict[int, int]) -> List[dict]:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO json {json_file} not found; see datasets/README.md for the layout "
                                "under $DETECTRON2_DATASETS")
    with json_errors_named(json_file, "COCO json"):
        dicts = load_coco_json(json_file, image_root)  # raw COCO category ids
    for record in dicts:
        annos = [a for a in record.get("annotations", []) if a["category_id"] in id_map]
        for a in annos:
            a["category_id"] = id_map[a["category_id"]]
        record["annotations"] = annos
    return dicts


def register_ov_coco_instances(name: str, json_file: str, image_root: str, class_names: Sequence[str],
                               novel: Sequence[str] = COCO_OV_NOVEL) -> None:
    meta = coco_ov_metadata(class_names, novel)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    DatasetCatalog.register(name, lambda: _load(json_file, image_root, id_map))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco_ov", **meta)
