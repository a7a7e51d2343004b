"""Open-vocabulary registration of LVIS-format datasets.

A dataset is registered with a *vocabulary*: ``"all"`` (every category of the json, for
evaluation and supervised upper bounds) or ``"base"`` (only non-rare categories, for ViLD
training, so the training classifier never sees a novel class). Contiguous class ids index
that vocabulary; metadata records each class's LVIS frequency and which ids are novel.
"""
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis import load_lvis_json

logger = logging.getLogger(__name__)

__all__ = ["register_ov_lvis_instances", "ov_lvis_metadata", "load_ov_lvis_json"]

VOCABULARIES = ("all", "base")


def _vocabulary(categories: List[dict], vocabulary: str) -> List[dict]:
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary must be one of {VOCABULARIES}, got {vocabulary!r}")
    cats = sorted(categories, key=lambda c: c["id"])
    return [c for c in cats if vocabulary == "all" or c.get("frequency") != "r"]


def ov_lvis_metadata(categories: List[dict], vocabulary: str = "all") -> Dict:
    """Metadata of a vocabulary: class names, LVIS frequencies, id mapping, novel/base ids."""
    cats = _vocabulary(categories, vocabulary)
    freqs = [c.get("frequency", "f") for c in cats]
    return {
        "thing_classes": [c["name"] for c in cats],
        "class_synonyms": [c.get("synonyms") or [c["name"]] for c in cats],
        "class_frequencies": freqs,
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
        "novel_class_ids": [i for i, f in enumerate(freqs) if f == "r"],
        "base_class_ids": [i for i, f in enumerate(freqs) if f != "r"],
        "vocabulary": vocabulary,
    }


def load_ov_lvis_json(json_file: str, image_root: str, id_map: Dict[int, int], prepare_hint: str = "") -> List[dict]:
    """Detectron2's LVIS loader, with category ids mapped through ``id_map`` (json id ->
    contiguous id); annotations of categories outside the vocabulary are dropped, images kept."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"dataset json {json_file} not found. {prepare_hint}".strip())
    # Detectron2 joins image_root and the coco_url folder by string addition.
    root = image_root if image_root.endswith(os.sep) else image_root + os.sep
    dicts = load_lvis_json(json_file, root)  # category_id = json id - 1
    for record in dicts:
        annos = [a for a in record["annotations"] if a["category_id"] + 1 in id_map]
        for a in annos:
            a["category_id"] = id_map[a["category_id"] + 1]
        record["annotations"] = annos
    return dicts


def register_ov_lvis_instances(
    name: str,
    json_file: str,
    image_root: str,
    *,
    vocabulary: str = "all",
    categories: Optional[List[dict]] = None,
    prepare_hint: str = "",
) -> None:
    """Register an LVIS-format dataset under ``name`` with LVIS evaluation.

    Args:
        vocabulary: ``"all"`` or ``"base"`` (drop rare-category annotations and classes).
        categories: the json's category list; read from ``json_file`` when omitted
            (pass it to register before the file exists).
        prepare_hint: appended to the error raised when ``json_file`` is missing.
    """
    if categories is None:
        if not os.path.isfile(json_file):
            raise FileNotFoundError(f"dataset json {json_file} not found. {prepare_hint}".strip())
        categories = json.loads(Path(json_file).read_text())["categories"]
    meta = ov_lvis_metadata(categories, vocabulary)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    DatasetCatalog.register(name, lambda: load_ov_lvis_json(json_file, image_root, id_map, prepare_hint))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="lvis", **meta)
    logger.debug("registered %s (%d classes, vocabulary=%s)", name, len(meta["thing_classes"]), vocabulary)
