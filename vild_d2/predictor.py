"""Detect any vocabulary with a trained ViLD model: the library behind ``demo.py``.

The text classifier of the vocabulary is built with the configured CLIP (or reused from the
cache) and swapped into the model; no retraining.
"""
import glob
import logging
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

from .modeling.vocabulary import dataset_class_names
from .text_classifier import builtin_vocabulary, cached_text_classifier, load_text_classifier

logger = logging.getLogger(__name__)

__all__ = ["VocabularyPredictor", "expand_inputs", "vocabulary_source"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def vocabulary_source(vocabulary: str, custom: str = "") -> str:
    """What ``load_vocabulary`` should read: ``lvis``/``coco``/``toy``, or the custom list/file."""
    if vocabulary == "custom":
        if not custom:
            raise ValueError("--vocabulary custom needs --custom-vocabulary 'class a,class b' (or a file)")
        return custom
    if builtin_vocabulary(vocabulary) is None:
        raise ValueError(f"unknown vocabulary {vocabulary!r}: use lvis, coco, toy or custom")
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


class VocabularyPredictor(DefaultPredictor):
    """A trained ViLD model (``cfg.MODEL.WEIGHTS``) detecting the classes of ``vocabulary``.

    Detectron2's DefaultPredictor (resize, ``INPUT.FORMAT``, checkpoint) with the vocabulary
    swapped in; called on RGB images.
    """

    def __init__(self, cfg, vocabulary: str, novel_names: Optional[Sequence[str]] = None):
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("no weights given: pass --opts MODEL.WEIGHTS path/to/model_final.pth")
        if not os.path.isfile(cfg.MODEL.WEIGHTS) and "://" not in cfg.MODEL.WEIGHTS:
            raise FileNotFoundError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} not found")
        super().__init__(cfg)
        path = cached_text_classifier(cfg.MODEL.VILD.TEXT_CACHE_DIR, vocabulary, cfg.MODEL.VILD.CLIP_MODEL,
                                      cfg.MODEL.VILD.PROMPT_TEMPLATES or None, device=cfg.MODEL.DEVICE)
        emb, names = load_text_classifier(path)
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

    def run(self, paths: Sequence[str], threshold: float) -> Iterator[Tuple[str, Optional[np.ndarray], Optional[Instances]]]:
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
