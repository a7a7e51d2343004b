"""Datasets registered on ``import vild_d2``: the toy world under ``$DETECTRON2_DATASETS``.

``toy_v1_train_base`` (base vocabulary, rare annotations removed), ``toy_v1_train_full`` and
``toy_v1_val`` (all 24 categories). Registration needs no file; loading a split that was
not generated yet raises an error naming ``datasets/prepare_toy.py``.
"""
import os

from ..toy import SPLIT_FILES, toy_categories
from .lvis_ov import register_ov_lvis_instances

__all__ = ["register_toy_world", "default_toy_root"]


def default_toy_root() -> str:
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "toy_v1")


def register_toy_world(root: str, prefix: str = "toy_v1") -> None:
    cats = [{"id": c.id, "name": c.name, "synonyms": [c.name], "frequency": c.frequency}
            for c in toy_categories()]
    hint = f"Generate it with: python datasets/prepare_toy.py --output {root}"
    for split, vocabulary in (("train_base", "base"), ("train_full", "all"), ("val", "all")):
        register_ov_lvis_instances(
            f"{prefix}_{split}", os.path.join(root, SPLIT_FILES[split]), os.path.join(root, "images"),
            vocabulary=vocabulary, categories=cats, prepare_hint=hint,
        )


register_toy_world(default_toy_root())
