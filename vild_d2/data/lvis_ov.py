"""Open-vocabulary registration of LVIS-format datasets.

A dataset is registered with a *vocabulary*: ``"all"`` (every category of the json, for
evaluation and supervised upper bounds) or ``"base"`` (only non-rare categories, for ViLD
training, so the training classifier never sees a novel class). Contiguous class ids index
that vocabulary; metadata records each class's LVIS frequency and which ids are novel.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from detectron2.data.datasets.lvis import load_lvis_json

from ..artifacts import json_errors_named, read_json, write_json
from ..config import expand_path

logger = logging.getLogger(__name__)

__all__ = ["register_ov_lvis_instances", "ov_lvis_metadata",
           "load_ov_lvis_json", "register_from_config"]

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
        # Detectron2's LVIS convention: the first synonym names the class.
        "thing_classes": [(c.get("synonyms") or [c["name"]])[0] for c in cats],
        "class_synonyms": [c.get("synonyms") or [c["name"]] for c in cats],
        "class_frequencies": freqs,
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
        "novel_class_ids": [i for i, f in enumerate(freqs) if f == "r"],
        "base_class_ids": [i for i, f in enumerate(freqs) if f != "r"],
        "vocabulary": vocabulary,
    }


def load_ov_lvis_json(json_file: str, image_root: str, id_map: Dict[int, int], prepare_hint: str = "",
                      fmt: str = "lvis") -> List[dict]:
    """Detectron2's LVIS (or COCO) loader, with category ids mapped through ``id_map`` (json id ->
    contiguous id); annotations of categories outside the vocabulary are dropped, images kept."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"dataset json {json_file} not found. {prepare_hint}".strip())
    with json_errors_named(json_file, "dataset json"):
        if fmt == "lvis":
            # Detectron2 joins image_root and the coco_url folder by string addition.
            root = image_root if image_root.endswith(os.sep) else image_root + os.sep
            try:
                dicts, offset = load_lvis_json(json_file, root), 1  # category_id = json id - 1
            except KeyError as e:
                if e.args != ("coco_url",):
                    raise
                raise ValueError(f"{json_file}: an LVIS-format image needs a 'coco_url' (its last two parts, "
                                 "FOLDER/FILE, are joined to the image root); register a json whose images have "
                                 "'file_name' instead with format 'coco'") from e
        else:
            dicts, offset = load_coco_json(json_file, image_root), 0  # raw json ids
    for record in dicts:
        annos = [a for a in record.get("annotations", []) if a["category_id"] + offset in id_map]
        for a in annos:
            a["category_id"] = id_map[a["category_id"] + offset]
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
    novel_classes: Sequence[str] = (),
    fmt: str = "lvis",
) -> None:
    """Register an LVIS-format dataset under ``name`` with LVIS evaluation.

    Args:
        vocabulary: ``"all"`` or ``"base"`` (drop rare-category annotations and classes).
        categories: the json's category list; read from ``json_file`` when omitted
            (pass it to register before the file exists).
        prepare_hint: appended to the error raised when ``json_file`` is missing.
        novel_classes: class names treated as novel (rare), for jsons without LVIS ``frequency``.
        fmt: ``"lvis"`` (LVIS evaluation) or ``"coco"`` (COCO json, open-vocabulary COCO evaluation).
    """
    if categories is None:
        if not os.path.isfile(json_file):
            raise FileNotFoundError(f"dataset json {json_file} not found. {prepare_hint}".strip())
        categories = read_json(json_file, "dataset json")["categories"]
    if fmt not in ("lvis", "coco"):
        raise ValueError(f"dataset format must be 'lvis' or 'coco', got {fmt!r}")
    unknown = set(novel_classes) - {c["name"] for c in categories}
    if unknown:
        raise ValueError(f"novel classes {sorted(unknown)} are not categories of {json_file}")
    categories = [dict(c, frequency="r") if c["name"] in set(novel_classes) else c for c in categories]
    meta = ov_lvis_metadata(categories, vocabulary)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    DatasetCatalog.register(name, lambda: load_ov_lvis_json(json_file, image_root, id_map, prepare_hint, fmt))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root,
                                  evaluator_type="lvis" if fmt == "lvis" else "coco_ov", **meta)
    logger.debug("registered %s (%d classes, vocabulary=%s)", name, len(meta["thing_classes"]), vocabulary)


def register_from_config(cfg) -> None:
    """Register the datasets listed in ``DATASETS.VILD.REGISTER`` (entries
    ``[name, json_file, image_root, vocabulary, format]``, the last two optional; paths may use
    ``$DETECTRON2_DATASETS``), with ``DATASETS.VILD.NOVEL_CLASSES`` as novel names for jsons without
    LVIS frequencies. A name registered already (by an earlier config in this process) is kept."""
    for entry in cfg.DATASETS.VILD.REGISTER:
        if not 3 <= len(entry) <= 5:
            raise ValueError(f"DATASETS.VILD.REGISTER entry {entry} must be [name, json_file, image_root"
                             ", vocabulary (all|base), format (lvis|coco)]")
        name, json_file, image_root, vocabulary, fmt = (list(entry) + ["all", "lvis"][len(entry) - 3:])[:5]
        if name in DatasetCatalog.list():
            continue
        register_ov_lvis_instances(name, expand_path(json_file), expand_path(image_root),
                                   vocabulary=vocabulary, fmt=fmt, novel_classes=cfg.DATASETS.VILD.NOVEL_CLASSES,
                                   prepare_hint=f"(DATASETS.VILD.REGISTER entry {name!r})")


def write_base_split(src: str, dst: str) -> Dict[str, int]:
    """Copy an LVIS json without its rare-category annotations (images and categories kept)."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src} not found: download LVIS v1 (see datasets/README.md)")
    data = read_json(src, "LVIS json")
    rare = {c["id"] for c in data["categories"] if c.get("frequency") == "r"}
    before = len(data["annotations"])
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] not in rare]
    write_json(dst, data, indent=None)
    kept = len(data["annotations"])
    stats = {"images": len(data["images"]), "annotations": kept, "dropped": before - kept}
    logger.info("wrote %s: %s", dst, stats)
    return stats
