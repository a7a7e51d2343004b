"""The toy world's datasets, registered on ``import vild_d2`` under ``$DETECTRON2_DATASETS``:
``<TOY_PREFIX>_train_base`` (base vocabulary, rare annotations removed), ``<TOY_PREFIX>_train_full``
and ``<TOY_PREFIX>_val`` (all 24 categories); and the vocabulary name ``toy``."""
import os

from ..data.builtin import datasets_root
from ..data.lvis_ov import register_ov_lvis_instances
from ..text_classifier import VOCABULARY_ALIASES
from .dataset import SPLIT_FILES, TOY_PREFIX
from .scenes import toy_categories

__all__ = ["register_toy_world", "default_toy_root"]


def default_toy_root() -> str:
    return os.path.join(datasets_root(), TOY_PREFIX)


def register_toy_world(root: str, prefix: str = TOY_PREFIX) -> None:
    cats = [{"id": c.id, "name": c.name, "synonyms": [c.name], "frequency": c.frequency}
            for c in toy_categories()]
    hint = f"Generate it with: python datasets/prepare_toy.py --output {root}"
    for split, vocabulary in (("train_base", "base"), ("train_full", "all"), ("val", "all")):
        register_ov_lvis_instances(
            f"{prefix}_{split}", os.path.join(root, SPLIT_FILES[split]), os.path.join(root, "images"),
            vocabulary=vocabulary, categories=cats, prepare_hint=hint,
        )


register_toy_world(default_toy_root())
VOCABULARY_ALIASES["toy"] = f"{TOY_PREFIX}_val"  # demo.py --vocabulary toy: all 24 classes
