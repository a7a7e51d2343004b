"""Export a ViLD model to TorchScript and ONNX through Detectron2's ``TracingAdapter``, as
Detectron2's ``tools/deploy/export_model.py`` does for its R-CNNs.

The graph takes (image: 3 x H x W float32 in ``INPUT.FORMAT``, already resized; text
embeddings: K x D; novel mask: K bools) and returns the detections of
``GeneralizedRCNN.inference(..., do_postprocess=False)``: boxes in the input's pixels, scores,
classes, and one M x M mask per box. H, W and K are free at run time; the vocabulary enters only
through :meth:`~vild_d2.modeling.ViLDOutputLayers.vocabulary_tensors`, so one exported file serves
every vocabulary of the model's CLIP. Rescaling to the original image and pasting the masks
(Detectron2's ``detector_postprocess``) run outside, in :mod:`vild_d2.export.runtime`.
"""
import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from unittest import mock

import torch
from detectron2.export import TracingAdapter
from detectron2.export.flatten import IdentitySchema, InstancesSchema, TensorWrapSchema
from detectron2.export.torchscript_patch import patch_builtin_len
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.structures import Instances
from detectron2.utils.file_io import PathManager
from torchvision.ops import boxes as box_ops

from ..artifacts import atomic_path, file_sha256
from ..engine.checkpoint import load_trained_weights, require_weights
from ..modeling import output_layers
from ..modeling.vocabulary import dataset_class_names, vocabulary_placeholders
from .manifest import INPUT_NAMES, write_manifest

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "FILE_NAMES", "ONNX_OPSET", "check_exportable", "build_inference_model", "detect",
           "tracing_adapter", "output_schema", "rebuild_schema", "export_model"]

FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
# RoiAlign with half-pixel coordinates (Detectron2's ROIAlignV2, aligned=True) needs opset 16 or later.
ONNX_OPSET = 17
WRAPPERS = {"detectron2.structures.Boxes", "detectron2.structures.boxes.Boxes"}


def check_exportable(cfg) -> None:
    """Refuse, before any work, a config whose model the exported graph cannot express."""
    if cfg.MODEL.VILD.TEST_SCORES != "model":
        raise ValueError(f"MODEL.VILD.TEST_SCORES={cfg.MODEL.VILD.TEST_SCORES!r} runs CLIP's image encoder on "
                         "every proposal's crop, which the exported graph does not hold: export with "
                         "MODEL.VILD.TEST_SCORES model")


def build_inference_model(cfg, dim: int, weights: bool = True) -> GeneralizedRCNN:
    """The model of ``cfg`` for inference on the CPU, without reading its vocabulary files (D =
    ``dim``): the vocabulary is a graph input. With ``weights``, ``MODEL.WEIGHTS`` is loaded and
    must fill every parameter; without, the weights stay random (for timing)."""
    if weights:
        require_weights(cfg.MODEL.WEIGHTS)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    with vocabulary_placeholders(dim):
        model = build_model(cfg).eval()
    if weights:
        load_trained_weights(model, cfg.MODEL.WEIGHTS)
    return model


def _box_predictor(model):
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    if not isinstance(model, GeneralizedRCNN) or not hasattr(predictor, "vocabulary_tensors"):
        raise TypeError(f"{type(model).__name__} is not a ViLD R-CNN (GeneralizedRCNN with ViLDROIHeads)")
    return predictor


def detect(model, image: torch.Tensor, embeddings: torch.Tensor, novel_mask: torch.Tensor) -> Instances:
    """What the exported graph computes, in eager mode: detections of ``image`` (3 x H x W) at its
    resolution against ``embeddings`` (K x D) with ``novel_mask`` (K bools)."""
    # Detectron2's len() patch keeps per-image proposal counts traced values, not constants of the
    # example image; ViLD's box predictor splits its scores by them too.
    with _box_predictor(model).vocabulary_tensors(embeddings, novel_mask), \
            patch_builtin_len([output_layers.__name__]):
        return model.inference([{"image": image}], do_postprocess=False)[0]


def tracing_adapter(model, image: torch.Tensor, embeddings: torch.Tensor, novel_mask: torch.Tensor) -> TracingAdapter:
    """Detectron2's TracingAdapter around :func:`detect`, in eval mode (torch.onnx.export puts a
    module back into the mode it found it in, and a new module is in training mode)."""
    _box_predictor(model)
    return TracingAdapter(model, (image, embeddings, novel_mask), detect).eval()


def output_schema(adapter: TracingAdapter) -> Dict:
    """The graph's outputs in order, as JSON: Instances fields (sorted, Detectron2's flattening),
    the class that wraps each (``Boxes``), then the image size. Known after one call."""
    schema = adapter.outputs_schema
    if schema is None:
        with torch.no_grad():
            adapter(*adapter.flattened_inputs)
        schema = adapter.outputs_schema
    if not isinstance(schema, InstancesSchema) or any(n != 1 for n in schema.sizes):
        raise TypeError(f"unexpected output schema {schema}: the exported graph must return one Instances")
    wrap = {k: s.class_name for k, s in zip(schema.keys, schema.schemas) if isinstance(s, TensorWrapSchema)}
    return {"fields": list(schema.keys), "wrap": wrap, "names": list(schema.keys) + ["image_size"]}


def rebuild_schema(outputs: Dict) -> InstancesSchema:
    """The Detectron2 schema that turns the graph's outputs back into Instances."""
    # Detectron2 imports a wrapper class by its name: a manifest may name only these
    unknown = set(outputs["wrap"].values()) - WRAPPERS
    if unknown:
        raise ValueError(f"the manifest's outputs name unknown classes {sorted(unknown)}; known: {sorted(WRAPPERS)}")
    schemas = [TensorWrapSchema(outputs["wrap"][k]) if k in outputs["wrap"] else IdentitySchema()
               for k in outputs["fields"]]
    return InstancesSchema(schemas, [1] * len(schemas), list(outputs["fields"]))


@contextlib.contextmanager
def _quiet_tracer():
    # The tracer warns at every Python branch on a tensor; in this model those are shape asserts,
    # the class-agnostic flags and finite-value checks, constant for every input. The ONNX exporter
    # warns that negative indices would be wrong; the graph's indices come from nonzero and topk.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
        yield


@torch.jit.script_if_tracing
def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's ``batched_nms`` with its eager-mode choice made at run time. Traced, torchvision
    always takes the coordinate trick: one NMS over all (box, class) candidates, quadratic in their
    number, which with LVIS's 1,203 classes at score threshold 1e-4 run to tens of thousands per image
    (benchmarks/bench_export.py). Scripted, this keeps eager's one NMS per class for large inputs."""
    if boxes.numel() > 4000:  # torchvision's CPU threshold
        return box_ops._batched_nms_vanilla(boxes, scores, idxs, iou_threshold)
    return box_ops._batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)


def _trace_torchscript(adapter: TracingAdapter, path: Path) -> None:
    # ONNX keeps the coordinate trick: ONNX Runtime's NonMaxSuppression runs it fast, and the
    # TorchScript-based ONNX exporter cannot type the values of a scripted loop over classes.
    with _quiet_tracer(), mock.patch.object(box_ops, "batched_nms", _batched_nms):
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))


def _export_onnx(adapter: TracingAdapter, path: Path, names: List[str], opset: int) -> None:
    per_class = {0: "num_classes"}
    dynamic = {"image": {1: "height", 2: "width"}, "text_embeddings": per_class, "novel_mask": per_class,
               **{n: {0: "num_detections"} for n in names[:-1]}}
    with _quiet_tracer(), atomic_path(path) as tmp:
        # dynamo=False: the TorchScript-based exporter traces the adapter as torch.jit.trace does,
        # with torchvision's RoiAlign / NonMaxSuppression symbolics
        torch.onnx.export(adapter, adapter.flattened_inputs, str(tmp), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=names, dynamic_axes=dynamic)


def export_model(cfg, model, output_dir, formats: Sequence[str], image: torch.Tensor, embeddings: torch.Tensor,
                 novel_mask: Optional[torch.Tensor] = None, weights: Optional[str] = None,
                 opset: int = ONNX_OPSET) -> Dict[str, float]:
    """Trace ``model`` (built from ``cfg`` by :func:`build_inference_model`) on the example
    ``image`` (3 x H x W, ``INPUT.FORMAT``) and ``embeddings`` (K x D) into ``output_dir``: one file
    per format plus the manifest. ``weights``: the checkpoint it holds (None: random weights).
    Returns the seconds each format took."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"export formats {list(formats)}: choose from {FORMATS}")
    check_exportable(cfg)
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401  (torch.onnx.export writes the file with it)
        except ImportError as e:
            raise ImportError("ONNX export needs the onnx package: pip install -e .[export] (or the onnx "
                              "version requirements.txt pins)") from e
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("export traces on the CPU: build the model with build_inference_model")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    novel_mask = torch.zeros(len(embeddings), dtype=torch.bool) if novel_mask is None else novel_mask
    adapter = tracing_adapter(model, image, embeddings.float(), novel_mask.bool())
    outputs = output_schema(adapter)
    seconds = {}
    for fmt in formats:
        start = time.perf_counter()
        path = out / FILE_NAMES[fmt]
        if fmt == "torchscript":
            _trace_torchscript(adapter, path)
        else:
            _export_onnx(adapter, path, outputs["names"], opset)
        seconds[fmt] = time.perf_counter() - start
        logger.info("exported %s in %.1f s: %s (%.1f MB)", fmt, seconds[fmt], path, path.stat().st_size / 2**20)
    training = dataset_class_names(cfg.DATASETS.TRAIN) or []
    checksum = (weights, file_sha256(PathManager.get_local_path(weights))) if weights else None
    write_manifest(out, cfg, {f: FILE_NAMES[f] for f in formats}, outputs, dim=embeddings.shape[1],
                   weights=checksum, training_classes=training,
                   extra={"onnx_opset": opset} if "onnx" in formats else None)
    return seconds
