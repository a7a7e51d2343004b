"""Exported ViLD models: TorchScript and ONNX graphs that take an image and a vocabulary's text
embeddings (K free at run time, plus the novel flags of ViLD-ensemble's weighting), a manifest
beside them, and the loader that runs them on images with a vocabulary file.

* :mod:`.tracing`: :func:`export_model` (``tools/export_model.py``), through Detectron2's
  ``TracingAdapter``.
* :mod:`.manifest`: what the graph expects and was made from; mismatched vocabularies are refused.
* :mod:`.runtime`: :class:`ExportedModel` (the graph) and :class:`ExportedPredictor` (images in,
  ``demo.py``'s detections out).
* :mod:`.compare`: agreement with the eager model (``tools/export_model.py --verify-images``, the tests).
"""
from .compare import compare_detections, eager_predictor, summarize, verify_export
from .manifest import MANIFEST, ExportMismatchError, read_manifest
from .runtime import ExportedModel, ExportedPredictor, model_input
from .tracing import FORMATS, build_inference_model, detect, export_model

__all__ = ["FORMATS", "MANIFEST", "ExportMismatchError", "ExportedModel", "ExportedPredictor", "build_inference_model",
           "compare_detections", "detect", "eager_predictor", "export_model", "model_input", "read_manifest",
           "summarize", "verify_export"]
