"""Datasets registered on ``import vild_d2``, under ``$DETECTRON2_DATASETS`` (default ``datasets``).

* LVIS v1: ``lvis_v1_train_base`` (866 frequent + common classes, every image kept); Detectron2's
  own ``lvis_v1_val`` gets the frequencies and the rare = novel split in its metadata.
* COCO: ``coco_2017_train_ov_base`` (48 classes) and ``coco_2017_val_ov_all`` (48 + 17).

Registration needs no file; loading a missing one raises an error naming how to make it.
"""
import os

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

from ..config import datasets_root
from .coco_ov import COCO_OV_BASE, COCO_OV_NOVEL, register_ov_coco_instances
from .lvis_ov import ov_lvis_metadata, register_ov_lvis_instances

__all__ = ["register_lvis_ov", "register_coco_ov"]


def register_lvis_ov(root: str) -> None:
    hint = "See datasets/README.md (LVIS v1 under $DETECTRON2_DATASETS/lvis, images under coco/)."
    register_ov_lvis_instances("lvis_v1_train_base", os.path.join(root, "lvis/lvis_v1_train.json"),
                               os.path.join(root, "coco"), vocabulary="base", categories=LVIS_CATEGORIES,
                               prepare_hint=hint)
    # Detectron2 registers lvis_v1_val itself; add the open-vocabulary fields to its metadata.
    meta = ov_lvis_metadata(LVIS_CATEGORIES, "all")
    MetadataCatalog.get("lvis_v1_val").set(**{k: meta[k] for k in (
        "class_synonyms", "class_frequencies", "novel_class_ids", "base_class_ids", "vocabulary")})


def register_coco_ov(root: str) -> None:
    ann = os.path.join(root, "coco/annotations")
    register_ov_coco_instances("coco_2017_train_ov_base", os.path.join(ann, "instances_train2017.json"),
                               os.path.join(root, "coco/train2017"), COCO_OV_BASE)
    register_ov_coco_instances("coco_2017_val_ov_all", os.path.join(ann, "instances_val2017.json"),
                               os.path.join(root, "coco/val2017"), COCO_OV_BASE + COCO_OV_NOVEL)


register_lvis_ov(datasets_root())
register_coco_ov(datasets_root())
