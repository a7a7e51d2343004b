"""The toy world's datasets are registered the way a user's dataset is: by the
``DATASETS.VILD.REGISTER`` entries of a config. The toy configs list the world under
``$DETECTRON2_DATASETS/<TOY_PREFIX>``; :func:`toy_register_opts` points a config at a world elsewhere.

Datasets: ``<prefix>_train_base`` (base vocabulary: rare annotations and classes removed),
``<prefix>_train_full`` and ``<prefix>_val`` (all categories).
"""
import os
from typing import List

from detectron2.config import CfgNode as CN

from vild_d2.config import datasets_root
from vild_d2.data.lvis_ov import register_from_config

from .dataset import SPLIT_FILES, TOY_PREFIX

__all__ = ["default_toy_root", "toy_register_entries", "toy_register_opts", "register_toy_world"]

_SPLITS = (("train_base", "base"), ("train_full", "all"), ("val", "all"))


def default_toy_root() -> str:
    return os.path.join(datasets_root(), TOY_PREFIX)


def toy_register_entries(root: str, prefix: str = TOY_PREFIX) -> List[List[str]]:
    """``DATASETS.VILD.REGISTER`` entries of the world at ``root``, named ``<prefix>_<split>``."""
    return [[f"{prefix}_{split}", os.path.join(str(root), SPLIT_FILES[split]), os.path.join(str(root), "images"),
             vocabulary, "lvis"] for split, vocabulary in _SPLITS]


def toy_register_opts(root: str, prefix: str = TOY_PREFIX) -> List[str]:
    """Config overrides (KEY VALUE) that register the world at ``root`` instead of the configs' own."""
    return ["DATASETS.VILD.REGISTER", repr(toy_register_entries(root, prefix))]


def register_toy_world(root: str, prefix: str = TOY_PREFIX) -> None:
    """Register the (built) world at ``root`` in this process, as a config naming it would."""
    register_from_config(CN({"DATASETS": CN({"VILD": CN({"REGISTER": toy_register_entries(root, prefix),
                                                         "NOVEL_CLASSES": []})})}))
