"""The manifest written beside an exported model (``manifest.json``): what the graph expects and
what it was made from, so that a vocabulary built with another CLIP, an altered model file or an
input in the wrong channel order is refused instead of silently giving other detections.

Keys: ``files`` (format -> name, sha256, size), ``config`` (the full config, dumped beside as
``config.yaml``), ``weights`` and ``weights_sha256``, ``clip`` (:func:`vild_d2.clip_model.clip_identity`)
and ``clip_model``, ``embedding_dim`` (D), ``input`` (channel order, layout, resize), ``inputs`` /
``outputs`` (the graph's tensors in order), ``training_classes`` (classes not among them count as
novel by default), the baked-in test settings, and the versions that exported it.
"""
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..artifacts import PathLike, read_json, seal_problem, seal_record, write_json
from ..text_classifier import ClassifierMismatchError, load_text_classifier

logger = logging.getLogger(__name__)

__all__ = ["MANIFEST", "MANIFEST_VERSION", "INPUT_NAMES", "ExportMismatchError", "read_manifest", "write_manifest",
           "model_file", "load_vocabulary_file", "check_embeddings"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
INPUT_NAMES = ("image", "text_embeddings", "novel_mask")
REQUIRED_KEYS = ("version", "files", "clip", "embedding_dim", "input", "inputs", "outputs", "training_classes")


class ExportMismatchError(ClassifierMismatchError):
    """An exported model's folder, or what it is run with, does not match its manifest."""


def write_manifest(folder: PathLike, cfg, files: Dict[str, str], outputs: Dict, *, dim: int,
                   weights: Optional[Tuple[str, Optional[str]]], training_classes: Sequence[str],
                   extra: Optional[Dict] = None) -> Path:
    """Write ``config.yaml`` and ``manifest.json`` into ``folder``, where the model ``files``
    (format -> file name) already are. ``weights``: (path, sha256), or None for a model of random
    weights; ``outputs``: the graph's output schema (:func:`vild_d2.export.tracing.output_schema`)."""
    import detectron2

    from ..clip_model import clip_identity

    folder = Path(folder)
    (folder / "config.yaml").write_text(cfg.dump())
    manifest = {
        "version": MANIFEST_VERSION,
        "files": {fmt: {"name": name, **seal_record(folder / name)} for fmt, name in files.items()},
        "config": "config.yaml",
        "weights": weights[0] if weights else None,
        "weights_sha256": weights[1] if weights else None,
        "clip": clip_identity(cfg.MODEL.VILD.CLIP_MODEL),
        "clip_model": cfg.MODEL.VILD.CLIP_MODEL,
        "embedding_dim": int(dim),
        "mode": cfg.MODEL.VILD.MODE,
        "ensemble_weight": cfg.MODEL.VILD.ENSEMBLE_WEIGHT,
        "input": {"format": cfg.INPUT.FORMAT, "layout": "3 x H x W", "dtype": "float32", "range": [0, 255],
                  "min_size_test": cfg.INPUT.MIN_SIZE_TEST, "max_size_test": cfg.INPUT.MAX_SIZE_TEST},
        "inputs": list(INPUT_NAMES),
        "outputs": outputs,
        # baked into the graph as constants
        "test": {"score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                 "nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                 "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE},
        "training_classes": list(training_classes),
        "versions": {"torch": torch.__version__, "detectron2": detectron2.__version__},
        **(extra or {}),
    }
    return write_json(folder / MANIFEST, manifest)


def read_manifest(folder: PathLike) -> Dict:
    """The manifest of an exported model's folder, its keys and version checked."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not an exported model's folder "
                                "(tools/export_model.py writes one)")
    manifest = read_json(path, "export manifest")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing or manifest["version"] != MANIFEST_VERSION:
        raise ExportMismatchError(f"{path} is not a version-{MANIFEST_VERSION} export manifest (missing {missing}, "
                                  f"version {manifest.get('version')}): export the model again with "
                                  "tools/export_model.py")
    return manifest


def model_file(folder: PathLike, manifest: Dict, fmt: Optional[str] = None) -> Tuple[str, Path]:
    """(format, path) of the exported model file of ``fmt`` (None: TorchScript when exported, else
    ONNX), checked against the manifest's checksum."""
    files = manifest["files"]
    fmt = fmt or ("torchscript" if "torchscript" in files else next(iter(files), None))
    if fmt not in files:
        raise ExportMismatchError(f"{folder} holds no {fmt} model (exported: {sorted(files)}): export it with "
                                  f"tools/export_model.py --format {fmt}")
    record = files[fmt]
    path = Path(folder) / record["name"]
    problem = seal_problem(path, record)
    if problem:
        raise ExportMismatchError(f"exported model {path} {problem} against {MANIFEST}: export the model again")
    return fmt, path


def load_vocabulary_file(manifest: Dict, path: PathLike, allow_without_sidecar: bool = False) -> Tuple[
        torch.Tensor, List[str]]:
    """(K x D embeddings, class names) of a text-classifier file (tools/build_text_classifier.py),
    refused when it was built with another CLIP or D than the exported model's."""
    emb, names = load_text_classifier(path, expected_dim=manifest["embedding_dim"], expected_clip=manifest["clip"],
                                      config_key="the vocabulary file",
                                      allow_without_sidecar=allow_without_sidecar)
    if names is None:
        names = [str(i) for i in range(len(emb))]
    return emb, names


def check_embeddings(manifest: Dict, embeddings: torch.Tensor, novel_mask: torch.Tensor) -> None:
    """Refuse text embeddings and novel flags that do not fit the exported graph."""
    dim = manifest["embedding_dim"]
    if embeddings.dim() != 2 or embeddings.shape[1] != dim or len(embeddings) == 0:
        raise ExportMismatchError(f"text embeddings of shape {tuple(embeddings.shape)} do not fit the exported model "
                                  f"(K x {dim}, K >= 1): build them with its CLIP ({manifest['clip_model']})")
    if novel_mask.shape != (len(embeddings),):
        raise ExportMismatchError(f"novel mask of shape {tuple(novel_mask.shape)} for {len(embeddings)} classes: "
                                  "give one flag per class")
