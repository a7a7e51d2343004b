"""How far an exported model's detections are from the eager model's, image by image and in total:
the check ``tools/export_model.py --verify-images`` and the tests run."""
import logging
from typing import Callable, Dict, Iterable, List, Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

from ..artifacts import PathLike
from .manifest import load_vocabulary_file, read_manifest
from .runtime import ExportedPredictor

logger = logging.getLogger(__name__)

__all__ = ["compare_detections", "summarize", "eager_predictor", "verify_export"]


def _match(a: Instances, b: Instances) -> List[int]:
    """For each detection of ``a`` in order, the detection of ``b`` of the same class with the
    nearest box (largest coordinate difference), each used once; -1 where none is left. Scores
    that tie to float precision may come out of NMS in either order."""
    if len(a) == 0 or len(b) == 0:
        return [-1] * len(a)
    dist = torch.cdist(a.pred_boxes.tensor.double(), b.pred_boxes.tensor.double(), p=float("inf"))
    dist[a.pred_classes[:, None] != b.pred_classes[None, :]] = float("inf")
    taken, out = set(), []
    for row in dist.tolist():
        free = [(d, j) for j, d in enumerate(row) if j not in taken and d != float("inf")]
        out.append(min(free)[1] if free else -1)
        taken.add(out[-1])
    return out


def _mask_iou(m1: torch.Tensor, m2: torch.Tensor) -> float:
    union = (m1 | m2).sum().item()
    return 1.0 if union == 0 else (m1 & m2).sum().item() / union


def compare_detections(reference: Instances, other: Instances) -> Dict:
    """Agreement of two detection sets of one image: ``count_ref`` / ``count_other``,
    ``classes_equal`` (same count, and every detection has a partner of its class), ``same_order``
    (partners at the same rank), ``max_box_diff`` (pixels), ``max_score_diff``, and over the matched
    pairs ``min_mask_iou`` and ``max_mask_pixels_differ`` of pasted (boolean) masks, or
    ``max_mask_diff`` of the M x M mask probabilities before postprocessing (1 and 0 when there are
    none). A small mask has a low IoU for one flipped pixel: the pixel count tells them apart."""
    match = _match(reference, other)
    pairs = [(i, j) for i, j in enumerate(match) if j >= 0]
    out = {"count_ref": len(reference), "count_other": len(other),
           "classes_equal": len(reference) == len(other) and len(pairs) == len(reference),
           "same_order": all(i == j for i, j in pairs), "max_box_diff": 0.0, "max_score_diff": 0.0,
           "min_mask_iou": 1.0, "max_mask_pixels_differ": 0, "max_mask_diff": 0.0}
    if pairs:
        ia, ib = (torch.tensor(x) for x in zip(*pairs))
        out["max_box_diff"] = (reference.pred_boxes.tensor[ia] - other.pred_boxes.tensor[ib]).abs().max().item()
        out["max_score_diff"] = (reference.scores[ia] - other.scores[ib]).abs().max().item()
        if reference.has("pred_masks") and reference.pred_masks.dtype == torch.bool:
            out["min_mask_iou"] = min(_mask_iou(reference.pred_masks[i], other.pred_masks[j]) for i, j in pairs)
            differ = reference.pred_masks[ia] ^ other.pred_masks[ib]  # P x H x W
            out["max_mask_pixels_differ"] = int(differ.flatten(1).sum(1).max())
        elif reference.has("pred_masks"):
            out["max_mask_diff"] = (reference.pred_masks[ia] - other.pred_masks[ib]).abs().max().item()
    return out


def summarize(results: Iterable[Dict]) -> Dict:
    """One figure set over images: totals, all-equal flags, worst differences."""
    results = list(results)
    return {"images": len(results), "detections": sum(r["count_ref"] for r in results),
            "classes_equal": all(r["classes_equal"] for r in results),
            "same_order": all(r["same_order"] for r in results),
            "max_box_diff": max((r["max_box_diff"] for r in results), default=0.0),
            "max_score_diff": max((r["max_score_diff"] for r in results), default=0.0),
            "max_mask_diff": max((r["max_mask_diff"] for r in results), default=0.0),
            "min_mask_iou": min((r["min_mask_iou"] for r in results), default=1.0),
            "max_mask_pixels_differ": max((r["max_mask_pixels_differ"] for r in results), default=0)}


def eager_predictor(cfg, model, embeddings: torch.Tensor, class_names: Sequence[str],
                    novel_ids: Sequence[int]) -> Callable[[np.ndarray], Instances]:
    """The reference: Detectron2's DefaultPredictor around the eager ``model`` (weights loaded),
    with the vocabulary set by ``set_vocabulary``; called on RGB images."""
    model.roi_heads.box_predictor.set_vocabulary(embeddings, class_names, novel_ids)
    predictor = DefaultPredictor.__new__(DefaultPredictor)  # its __call__, without building a model again
    predictor.cfg, predictor.model, predictor.input_format = cfg, model, cfg.INPUT.FORMAT
    predictor.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    return lambda rgb: predictor(np.ascontiguousarray(rgb[:, :, ::-1]))["instances"]  # takes BGR


def verify_export(cfg, model, folder: PathLike, images: Sequence[np.ndarray],
                  vocabularies: Sequence[PathLike]) -> Dict[str, Dict[str, Dict]]:
    """{vocabulary file: {format: :func:`summarize`}}: every exported format of ``folder`` against
    the eager ``model`` on RGB ``images``, for each vocabulary file, through the same exported files."""
    manifest = read_manifest(folder)
    out = {}
    for vocabulary in vocabularies:
        runners = {fmt: ExportedPredictor(folder, vocabulary, fmt) for fmt in manifest["files"]}
        first = next(iter(runners.values()))
        emb, names = load_vocabulary_file(manifest, vocabulary)
        reference = eager_predictor(cfg, model, emb, names, first.novel_ids)
        refs = [reference(im) for im in images]
        out[str(vocabulary)] = {
            fmt: summarize(compare_detections(r, run(im)) for r, im in zip(refs, images))
            for fmt, run in runners.items()}
    return out
