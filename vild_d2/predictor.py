"""Detect any vocabulary with a trained ViLD model: the library behind ``demo.py``.

The text classifier of the vocabulary is built with the configured CLIP (or reused from the
cache) and swapped into the model; no retraining.
"""
import glob
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Instances

from .engine.checkpoint import load_trained_weights, require_weights
from .modeling.vocabulary import dataset_class_names, vocabulary_placeholders
from .text_classifier import cached_text_classifier, load_text_classifier
from .vocabularies import builtin_vocabulary

logger = logging.getLogger(__name__)

__all__ = ["VocabularyPredictor", "expand_inputs", "vocabulary_source", "output_stems"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def vocabulary_source(vocabulary: str, custom: str = "") -> str:
    """What ``load_vocabulary`` should read: ``lvis``, ``coco``, a registered dataset's classes (one
    that the config registers, ``DATASETS.VILD.REGISTER``), or the custom list/file."""
    if vocabulary == "custom":
        if not custom:
            raise ValueError("--vocabulary custom needs --custom-vocabulary 'class a,class b' (or a file)")
        return custom
    if builtin_vocabulary(vocabulary) is None and vocabulary not in DatasetCatalog.list():
        raise ValueError(f"unknown vocabulary {vocabulary!r}: use lvis, coco, a dataset the config registers "
                         "(DATASETS.VILD.REGISTER) or custom")
    return vocabulary


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files, folders (their images) and globs, in order, without duplicates."""
    paths: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
        else:
            found = sorted(glob.glob(item)) or [item]  # a missing file is reported when read
        paths += [p for p in found if p not in paths]
    return paths


def output_stems(paths: Sequence[str]) -> Dict[str, str]:
    """A distinct output name per input: its file stem, with as many parent folders as it takes to
    tell inputs of the same stem apart (``a/x.png``, ``b/x.png`` -> ``a_x``, ``b_x``)."""
    parts = {p: Path(os.path.abspath(p)).with_suffix("").parts for p in paths}
    stems, todo, depth = {}, list(paths), 1
    while todo:  # one pass per folder level, over the inputs whose names still clash
        counts = Counter(parts[p][-depth:] for p in todo)
        for p in todo:
            if counts[parts[p][-depth:]] == 1 or depth >= len(parts[p]):
                stems[p] = "_".join(parts[p][-depth:]).lstrip("/_") or "image"
        todo, depth = [p for p in todo if p not in stems], depth + 1
    counts = Counter(stems.values())
    for p in paths:  # a.png and a.jpg in one folder: the extension tells them apart
        if counts[stems[p]] > 1:
            stems[p] += "_" + Path(p).suffix.lstrip(".")
    return stems


class VocabularyPredictor(DefaultPredictor):
    """A trained ViLD model (``cfg.MODEL.WEIGHTS``) detecting the classes of ``vocabulary``.

    Detectron2's DefaultPredictor (resize, ``INPUT.FORMAT``, checkpoint) with the vocabulary
    swapped in; called on RGB images.
    """

    def __init__(self, cfg, vocabulary: str, novel_names: Optional[Sequence[str]] = None):
        # DefaultPredictor's attributes, set here: the model is built for the vocabulary's
        # classifier alone, without reading (or building) those of the training and test datasets
        self.cfg = cfg.clone()
        require_weights(cfg.MODEL.WEIGHTS)  # before the classifier is built, which may take minutes
        path = cached_text_classifier(cfg.MODEL.VILD.TEXT_CACHE_DIR, vocabulary, cfg.MODEL.VILD.CLIP_MODEL,
                                      cfg.MODEL.VILD.PROMPT_TEMPLATES or None, device=cfg.MODEL.DEVICE)
        emb, names = load_text_classifier(path)
        with vocabulary_placeholders(emb.shape[1]):
            self.model = build_model(self.cfg).eval()
        load_trained_weights(self.model, cfg.MODEL.WEIGHTS)  # refuses weights that leave heads untrained
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.class_names = names
        base = set(dataset_class_names(cfg.DATASETS.TRAIN) or [])
        # Novel = not in the training vocabulary (ViLD-ensemble weights them differently).
        novel = novel_names if novel_names is not None else [n for n in names if n not in base]
        self.novel_ids = [i for i, n in enumerate(names) if n in set(novel)]
        self.model.roi_heads.box_predictor.set_vocabulary(emb, names, self.novel_ids)
        logger.info("detecting %d classes (%d novel) with %s", len(names), len(self.novel_ids), cfg.MODEL.WEIGHTS)

    def __call__(self, image: np.ndarray) -> Instances:
        """Detections (boxes, scores, classes, masks in image pixels) of an H x W x 3 RGB image."""
        return super().__call__(np.ascontiguousarray(image[:, :, ::-1]))["instances"].to("cpu")  # RGB -> BGR

    def run(self, paths: Sequence[str],
            threshold: float) -> Iterator[Tuple[str, Optional[np.ndarray], Optional[Instances]]]:
        """(path, image, detections above ``threshold``) per input; an unreadable image yields
        (path, None, None) and is reported, and the run goes on."""
        from detectron2.data.detection_utils import read_image

        for path in paths:
            try:
                image = read_image(path, format="RGB")
            except (OSError, ValueError, SyntaxError) as e:
                logger.error("skipping %s: cannot read it as an image (%s)", path, e)
                yield path, None, None
                continue
            inst = self(image)
            yield path, image, inst[inst.scores >= threshold]
