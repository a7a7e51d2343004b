"""Run an exported ViLD model (TorchScript or ONNX Runtime on the CPU) on images with a vocabulary
file: :class:`ExportedModel` runs the graph, :class:`ExportedPredictor` is what ``demo.py`` does
around it (read, resize, Detectron2's postprocessing, the same JSON as ``demo.py``).

The CLIP text encoder is not part of the export: a vocabulary's embeddings come from
``tools/build_text_classifier.py`` (or :func:`vild_d2.text_classifier.cached_text_classifier`)
with the CLIP the manifest names, and a file built with another is refused.
"""
import logging
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

from ..artifacts import PathLike
from ..predictor import model_image, novel_class_ids, read_rgb
from ..visualize import detections_to_json
from .manifest import INPUT_NAMES, check_embeddings, load_vocabulary_file, model_file, read_manifest
from .tracing import rebuild_schema

logger = logging.getLogger(__name__)

__all__ = ["ExportedModel", "ExportedPredictor", "model_input"]


def model_input(rgb: np.ndarray, input_format: str, min_size: int, max_size: int) -> torch.Tensor:
    """An H x W x 3 RGB image as the graph takes it, and Detectron2's DefaultPredictor hands its
    model: resized as at test time (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), 3 x H x W
    float32 in ``input_format`` (``INPUT.FORMAT``)."""
    return model_image(rgb, T.ResizeShortestEdge([min_size] * 2, max_size), input_format)


class ExportedModel:
    """The graph of an exported model's folder: ``model(image, embeddings, novel_mask)`` ->
    Instances at the image's resolution, before postprocessing (masks M x M per box).

    ``fmt``: "torchscript" or "onnx" (None: TorchScript when exported); ``num_threads``: ONNX
    Runtime's intra-op threads (None: its default, one per core).
    """

    def __init__(self, folder: PathLike, fmt: Optional[str] = None, num_threads: Optional[int] = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.format, path = model_file(folder, self.manifest, fmt)
        self._schema = rebuild_schema(self.manifest["outputs"])
        if self.format == "torchscript":
            self._module = torch.jit.load(str(path), map_location="cpu").eval()
        else:
            try:
                import onnxruntime as ort
            except ImportError as e:
                raise ImportError("running an ONNX export needs onnxruntime: pip install -e .[export] (or the "
                                  "onnxruntime version requirements.txt pins)") from e
            options = ort.SessionOptions()
            if num_threads:
                options.intra_op_num_threads = num_threads
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            # the ONNX exporter drops inputs the graph does not read: the novel flags outside ensemble
            self._feeds = [n for n in INPUT_NAMES if n in {i.name for i in self._session.get_inputs()}]
        logger.info("loaded %s model %s (D=%d, CLIP %s)", self.format, path, self.dim, self.manifest["clip"])

    @property
    def dim(self) -> int:
        return self.manifest["embedding_dim"]

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, embeddings: torch.Tensor, novel_mask: torch.Tensor) -> Instances:
        """``image``: 3 x H x W float32 in the manifest's input format; ``embeddings``: K x D;
        ``novel_mask``: K bools."""
        check_embeddings(self.manifest, embeddings, novel_mask)
        inputs = (image.float(), embeddings.float(), novel_mask.bool())
        if self.format == "torchscript":
            outputs = self._module(*inputs)
        else:
            feed = {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs) if name in self._feeds}
            outputs = [torch.from_numpy(o) for o in self._session.run(None, feed)]
        inst = self._schema(tuple(outputs))
        # the traced image size is a tensor; Detectron2's postprocessing wants the ints
        return Instances(tuple(image.shape[-2:]), **inst.get_fields())


class ExportedPredictor:
    """An exported model detecting the classes of a vocabulary file (K x D ``.npy`` with its JSON
    sidecar), called on RGB images like :class:`vild_d2.predictor.VocabularyPredictor`.

    ``novel_names``: the classes ViLD-ensemble weights as novel (None: those the model did not
    train on, as ``demo.py`` decides).
    """

    def __init__(self, folder: PathLike, vocabulary: PathLike, fmt: Optional[str] = None,
                 novel_names: Optional[Sequence[str]] = None, num_threads: Optional[int] = None):
        self.model = ExportedModel(folder, fmt, num_threads)
        manifest = self.model.manifest
        self.embeddings, self.class_names = load_vocabulary_file(manifest, vocabulary)
        self.novel_ids = novel_class_ids(self.class_names, manifest["training_classes"], novel_names)
        self.novel_mask = torch.zeros(len(self.class_names), dtype=torch.bool)
        self.novel_mask[self.novel_ids] = True
        self.input = manifest["input"]
        logger.info("detecting %d classes (%d novel) with %s", len(self.class_names), len(self.novel_ids), folder)

    def __call__(self, image: np.ndarray) -> Instances:
        """Detections (boxes, scores, classes, masks in image pixels) of an H x W x 3 RGB image."""
        size = self.input
        tensor = model_input(image, size["format"], size["min_size_test"], size["max_size_test"])
        inst = self.model(tensor, self.embeddings, self.novel_mask)
        return detector_postprocess(inst, image.shape[0], image.shape[1])

    def run(self, paths: Sequence[str],
            threshold: float) -> Iterator[Tuple[str, Optional[np.ndarray], Optional[Instances]]]:
        """(path, image, detections above ``threshold``) per input; an unreadable image yields
        (path, None, None) and is reported, and the run goes on."""
        for path in paths:
            image, why = read_rgb(path)
            if image is None:
                logger.error("skipping %s: %s", path, why)
                yield path, None, None
                continue
            inst = self(image)
            yield path, image, inst[inst.scores >= threshold]

    def detections_json(self, paths: Sequence[str], threshold: float) -> List[Dict]:
        """``demo.py``'s JSON for each readable image: ``{"image": path, "detections": [...]}``."""
        return [{"image": path, "detections": detections_to_json(inst, self.class_names)}
                for path, image, inst in self.run(paths, threshold) if image is not None]
