"""Training and inference vocabularies of a ViLD model, resolved from the config.

Training vocabulary: ``MODEL.VILD.TEXT_EMBEDDINGS`` for the classes of ``DATASETS.TRAIN[0]``
(base classes only in the open-vocabulary setting); an empty key builds it from
``MODEL.VILD.CLIP_MODEL`` and the dataset's class names, cached in ``TEXT_CACHE_DIR``. Inference vocabulary:
``MODEL.VILD.TEST_TEXT_EMBEDDINGS`` for ``DATASETS.TEST[0]`` (base + novel). Novel ids for
ViLD-ensemble: ``DATASETS.VILD.NOVEL_CLASS_IDS``, else the test dataset's metadata.
Shapes: K classes, D embedding dimension.
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from detectron2.data import MetadataCatalog

from ..clip_model import clip_identity
from ..text_classifier import cached_text_classifier, load_text_classifier

__all__ = ["resolve_vocabularies", "dataset_class_names", "vocabulary_placeholders"]

_placeholder_dim: Optional[int] = None


@contextlib.contextmanager
def vocabulary_placeholders(dim: int) -> Iterator[None]:
    """Models built inside the block read no classifier file: both vocabularies are K x ``dim``
    zeros (K = ``MODEL.ROI_HEADS.NUM_CLASSES``), for inference with a vocabulary set afterwards
    (``set_vocabulary``) on a trained model, whose weights never hold the text embeddings."""
    global _placeholder_dim
    previous, _placeholder_dim = _placeholder_dim, dim
    try:
        yield
    finally:
        _placeholder_dim = previous


def dataset_class_names(names: Sequence[str]) -> Optional[List[str]]:
    """Class names of the first registered dataset in ``names`` (None when unknown)."""
    if not names or names[0] not in MetadataCatalog.list():
        return None
    return MetadataCatalog.get(names[0]).get("thing_classes")


def _load(cfg, key: str, datasets: Sequence[str], path: Optional[str] = None):
    """Text embeddings of ``path`` (default: ``MODEL.VILD.<key>``), or built (and cached) from
    CLIP for ``datasets[0]`` when that is empty."""
    path = cfg.MODEL.VILD.get(key) if path is None else path
    names = dataset_class_names(datasets)
    if not path:
        if names is None:
            raise ValueError(f"MODEL.VILD.{key} is empty and {list(datasets)} names no registered dataset "
                             "with class names: set the key to a text classifier (tools/build_text_classifier.py)")
        path = cached_text_classifier(cfg.MODEL.VILD.TEXT_CACHE_DIR, datasets[0], cfg.MODEL.VILD.CLIP_MODEL,
                                      cfg.MODEL.VILD.PROMPT_TEMPLATES or None, device=cfg.MODEL.DEVICE)
    return load_text_classifier(path, expected_names=names, expected_clip=clip_identity(cfg.MODEL.VILD.CLIP_MODEL),
                                config_key=f"MODEL.VILD.{key}",
                                allow_without_sidecar=cfg.MODEL.VILD.ALLOW_CLASSIFIER_WITHOUT_SIDECAR)


def resolve_vocabularies(cfg) -> Dict:
    if _placeholder_dim is not None:
        zeros = torch.zeros(cfg.MODEL.ROI_HEADS.NUM_CLASSES, _placeholder_dim)  # K x D
        return {"train_embeddings": zeros, "test_embeddings": zeros, "test_class_names": None, "novel_class_ids": []}
    train_emb, _ = _load(cfg, "TEXT_EMBEDDINGS", cfg.DATASETS.TRAIN)
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(train_emb):
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES} but the training vocabulary "
            f"({cfg.MODEL.VILD.TEXT_EMBEDDINGS or 'the classes of ' + str(cfg.DATASETS.TRAIN[0])}) has "
            f"{len(train_emb)} classes; set NUM_CLASSES to {len(train_emb)}")
    if cfg.DATASETS.TEST or cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS:
        test_emb, test_names = _load(cfg, "TEST_TEXT_EMBEDDINGS", cfg.DATASETS.TEST)
    else:  # no test set: infer with the training vocabulary
        test_emb, test_names = train_emb, dataset_class_names(cfg.DATASETS.TRAIN)
    if test_emb.shape[1] != train_emb.shape[1]:
        raise ValueError(
            f"MODEL.VILD.TEXT_EMBEDDINGS has D={train_emb.shape[1]} but MODEL.VILD.TEST_TEXT_EMBEDDINGS has "
            f"D={test_emb.shape[1]}; build both with the same CLIP model")
    novel = list(cfg.DATASETS.VILD.NOVEL_CLASS_IDS)
    if not novel and cfg.DATASETS.TEST and cfg.DATASETS.TEST[0] in MetadataCatalog.list():
        novel = list(MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("novel_class_ids", []))
    return {"train_embeddings": train_emb, "test_embeddings": test_emb,
            "test_class_names": test_names, "novel_class_ids": novel}


def set_dataset_vocabulary(model, cfg, dataset_name: str) -> None:
    """Point a ViLD model's inference vocabulary at ``dataset_name`` (no-op when it already is)."""
    model = getattr(model, "module", model)  # DDP
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    names = dataset_class_names([dataset_name])
    if not hasattr(predictor, "set_vocabulary") or names is None or predictor.test_class_names == list(names):
        return
    # The configured file serves DATASETS.TEST[0]; any other dataset builds or reuses its own.
    path = None if cfg.DATASETS.TEST and dataset_name == cfg.DATASETS.TEST[0] else ""
    emb, _ = _load(cfg, "TEST_TEXT_EMBEDDINGS", [dataset_name], path)
    novel = MetadataCatalog.get(dataset_name).get("novel_class_ids", [])
    predictor.set_vocabulary(emb, names, novel)
