"""Detect any vocabulary with a trained ViLD model: the library behind ``demo.py``.

The text classifier of the vocabulary is built with the configured CLIP (or reused from the
cache) and swapped into the model; no retraining.
"""
import glob
import logging
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Instances

from .engine.checkpoint import load_trained_weights, require_weights
from .modeling.vocabulary import dataset_class_names, vocabulary_placeholders
from .progress import progress
from .text_classifier import cached_text_classifier, load_text_classifier
from .vocabularies import builtin_vocabulary

logger = logging.getLogger(__name__)

__all__ = ["VocabularyPredictor", "expand_inputs", "vocabulary_source", "output_stems", "model_image", "read_rgb",
           "novel_class_ids"]

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


def model_image(image: np.ndarray, aug: T.Augmentation, input_format: str) -> torch.Tensor:
    """DefaultPredictor's preprocessing of an H x W x 3 RGB image: resized by ``aug``, 3 x H' x W'
    float32 in ``input_format`` (``INPUT.FORMAT``), as the model (or its export) takes it."""
    image = np.ascontiguousarray(image if input_format == "RGB" else image[:, :, ::-1])
    resized = aug.get_transform(image).apply_image(image)
    return torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))


def _model_input(image: np.ndarray, aug: T.Augmentation, input_format: str) -> Dict:
    """The model's input dict of an H x W x 3 RGB image."""
    return {"image": model_image(image, aug, input_format), "height": image.shape[0], "width": image.shape[1]}


def read_rgb(path: str) -> Tuple[Optional[np.ndarray], str]:
    """(H x W x 3 RGB image, "") of an image file; (None, why) for a file that is no image."""
    try:
        return read_image(path, format="RGB"), ""
    except (OSError, ValueError, SyntaxError) as e:
        return None, f"cannot read it as an image ({e})"


def novel_class_ids(names: Sequence[str], training_names: Sequence[str],
                    novel_names: Optional[Sequence[str]] = None) -> List[int]:
    """Ids of the novel classes of a vocabulary (ViLD-ensemble weights them differently):
    ``novel_names``, else the classes outside the training vocabulary."""
    base = set(training_names)
    novel = set(novel_names if novel_names is not None else [n for n in names if n not in base])
    return [i for i, n in enumerate(names) if n in novel]


class _ImageFiles(torch.utils.data.Dataset):
    """(path, RGB image, model input) per path, read in DataLoader workers; (path, None, why) for a
    file that is no image. The image travels as a tensor: through shared memory, not a pipe."""

    def __init__(self, paths: Sequence[str], aug: T.Augmentation, input_format: str):
        self.paths, self.aug, self.input_format = list(paths), aug, input_format

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image, why = read_rgb(self.paths[i])
        if image is None:
            return self.paths[i], None, why
        image = image if image.flags.writeable else image.copy()  # PIL's pixels are read-only; torch wants them not
        return self.paths[i], torch.from_numpy(image), _model_input(image, self.aug, self.input_format)


class VocabularyPredictor(DefaultPredictor):
    """A trained ViLD model (``cfg.MODEL.WEIGHTS``) detecting the classes of ``vocabulary``.

    Detectron2's DefaultPredictor (resize, ``INPUT.FORMAT``, checkpoint) with the vocabulary
    swapped in; called on RGB images, one (``predictor(image)``) or several per forward pass
    (``predict``, ``run``). ``set_vocabulary`` swaps the vocabulary of the loaded model; a lock
    keeps a swap from landing inside another thread's forward pass.
    """

    def __init__(self, cfg, vocabulary: str, novel_names: Optional[Sequence[str]] = None):
        # DefaultPredictor's attributes, set here: the model is built for the vocabulary's
        # classifier alone, without reading (or building) those of the training and test datasets
        self.cfg = cfg.clone()
        require_weights(cfg.MODEL.WEIGHTS)  # before the classifier is built, which may take minutes
        emb, names = self._text_classifier(vocabulary)
        with vocabulary_placeholders(emb.shape[1]):
            self.model = build_model(self.cfg).eval()
        load_trained_weights(self.model, cfg.MODEL.WEIGHTS)  # refuses weights that leave heads untrained
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT {self.input_format!r}: the predictor reads RGB or BGR models")
        self._lock = threading.Lock()
        self._swap(emb, names, novel_names)

    def _text_classifier(self, vocabulary: str):
        cfg = self.cfg
        path = cached_text_classifier(cfg.MODEL.VILD.TEXT_CACHE_DIR, vocabulary, cfg.MODEL.VILD.CLIP_MODEL,
                                      cfg.MODEL.VILD.PROMPT_TEMPLATES or None, device=cfg.MODEL.DEVICE)
        return load_text_classifier(path)

    def _swap(self, emb, names: List[str], novel_names: Optional[Sequence[str]]) -> None:
        novel_ids = novel_class_ids(names, dataset_class_names(self.cfg.DATASETS.TRAIN) or [], novel_names)
        with self._lock:
            self.model.roi_heads.box_predictor.set_vocabulary(emb, names, novel_ids)
            self.class_names, self.novel_ids = names, novel_ids
        logger.info("detecting %d classes (%d novel) with %s", len(names), len(novel_ids), self.cfg.MODEL.WEIGHTS)

    def set_vocabulary(self, vocabulary_source: str, novel_names: Optional[Sequence[str]] = None) -> None:
        """Detect the classes of ``vocabulary_source`` (what :func:`vocabulary_source` returns) from
        now on, without reloading the model; ``class_names`` and ``novel_ids`` follow. Novel classes:
        ``novel_names``, else those outside the training vocabulary."""
        emb, names = self._text_classifier(vocabulary_source)  # outside the lock: building one takes a while
        self._swap(emb, names, novel_names)

    def _padded_shape(self, image: torch.Tensor) -> Tuple[int, int]:
        """The shape ``ImageList.from_tensors`` pads ``image`` (C x H x W) to when it is alone."""
        backbone = self.model.backbone
        constraints = getattr(backbone, "padding_constraints", None) or {}
        h, w = image.shape[-2:]
        if constraints.get("square_size", 0) > 0:
            h = w = constraints["square_size"]
        d = constraints.get("size_divisibility", backbone.size_divisibility)
        return (-(-h // d) * d, -(-w // d) * d) if d > 1 else (h, w)

    def _forward(self, inputs: List[Dict]) -> List[Instances]:
        # One forward pass per padded shape: an image padded further than it is alone gets other
        # features near its borders, and other detections. Within a shape, batching changes only the
        # last bits of the floats (convolutions pick their kernels by batch size).
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(self._padded_shape(x["image"]), []).append(i)
        out: List[Optional[Instances]] = [None] * len(inputs)
        with self._lock, torch.no_grad():
            for idx in groups.values():
                for i, result in zip(idx, self.model([inputs[i] for i in idx])):
                    out[i] = result["instances"].to("cpu")
        return out

    def predict(self, images: Sequence[np.ndarray]) -> List[Instances]:
        """Detections of H x W x 3 RGB images, all in one forward pass where they pad to one shape:
        those of ``[predictor(image) for image in images]`` (up to float rounding), faster."""
        return self._forward([_model_input(image, self.aug, self.input_format) for image in images])

    def __call__(self, image: np.ndarray) -> Instances:
        """Detections (boxes, scores, classes, masks in image pixels) of an H x W x 3 RGB image."""
        return self.predict([image])[0]

    def run(self, paths: Sequence[str], threshold: float, batch_size: int = 8,
            workers: int = 2) -> Iterator[Tuple[str, Optional[np.ndarray], Optional[Instances]]]:
        """(path, image, detections above ``threshold``) per input, in order; an unreadable image
        yields (path, None, None) and is reported, and the run goes on. ``batch_size`` images per
        forward pass, read and decoded by ``workers`` background processes (0: in this one)."""
        if batch_size < 1 or workers < 0:
            raise ValueError(f"batch_size {batch_size} and workers {workers}: give batch_size >= 1 and workers >= 0")
        paths = list(paths)
        batches = -(-len(paths) // batch_size)
        loader = torch.utils.data.DataLoader(_ImageFiles(paths, self.aug, self.input_format), batch_size=batch_size,
                                             num_workers=min(workers, batches), collate_fn=list)
        yield from progress(self._detect(loader, threshold), desc="detecting", total=len(paths), unit="img")

    def _detect(self, loader, threshold: float):
        for batch in loader:
            outputs = iter(self._forward([x for _, image, x in batch if image is not None]))
            for path, image, x in batch:
                if image is None:
                    logger.error("skipping %s: %s", path, x)
                    yield path, None, None
                    continue
                inst = next(outputs)
                yield path, image.numpy(), inst[inst.scores >= threshold]
