"""LVIS box / mask AP with faster-coco-eval's C++ core, numbers equal to the ``lvis`` API's.

Detectron2's :class:`LVISEvaluator` scores the gathered predictions with the pure-Python ``lvis``
API on rank 0 while the other ranks wait at an NCCL barrier (30-minute timeout): its ``evaluate``
took 16.5 s per 100 mini-LVIS images for box + mask AP at 300 detections over 1,203 classes
(benchmarks/results/lvis_recipe_cpu.json; its 33 s per 100 images also count ``process``, which
every rank runs during inference). :class:`LVISFastEvaluator` keeps everything else of Detectron2's
evaluator (``process``, gathering, the saved files) and replaces only that scoring by
``faster_coco_eval.COCOeval_faster(..., lvis_style=True)``, set up the way Detectron2 sets up
``lvis.LVISEval`` (benchmarks/bench_lvis_eval.py times both):

- at most ``max_dets_per_image`` detections per image, the highest scored over all classes
  (``lvis.LVISResults``), then no per-class cut;
- a detection of a class neither annotated in its image nor in the image's ``neg_category_ids`` is
  dropped; an unmatched one of a class in ``not_exhaustive_category_ids`` is ignored;
- detections and annotations of area 0 are skipped (``lvis.LVIS.get_ann_ids``): Detectron2's
  empty masks are neither hits nor false positives;
- no crowd regions (LVIS has none); area ranges all / small / medium / large at 32² and 96²;
  detection areas are box areas for "bbox" and mask areas for "segm" (Detectron2 drops the boxes
  before mask AP);
- AP, AP50, AP75, APs, APm, APl, APr, APc, APf in percent; NaN for each when there are no
  predictions; -100 where a group has no ground truth (the ``lvis`` API's -1).

faster-coco-eval computes mask IoUs on up to 8 threads (at most the CPUs this process may use).
The ``lvis`` API stays the metric of record: ``build_lvis_evaluator(..., backend="lvis")`` returns
Detectron2's evaluator, and tests/test_lvis_fast_eval.py checks that both agree.
"""
import itertools
import json
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.evaluation import LVISEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

__all__ = ["LVISFastEvaluator", "build_lvis_evaluator", "evaluate_predictions_on_lvis_fast",
           "lvis_gt_for_faster_coco_eval", "LVIS_EVALUATOR_BACKENDS", "LVIS_AREA_RANGES", "LVIS_METRICS"]

logger = logging.getLogger(__name__)

LVIS_EVALUATOR_BACKENDS = ("faster-coco-eval", "lvis")
LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
# lvis.eval.Params.area_rng (besides "all"): the bounds are inclusive on both sides in both APIs
LVIS_AREA_RANGES = {"small": [0 ** 2, 32 ** 2], "medium": [32 ** 2, 96 ** 2], "large": [96 ** 2, 1e5 ** 2]}
# categories per faster-coco-eval run: a run takes ~1.2 kB per image and category (~28 GB
# for all of LVIS v1 val at once, more than the lvis API's ~17 GB); a category's AP needs only its own
# detections, and the summary means over categories come from the joined precision arrays
CATEGORY_CHUNK = 100
_INSTALL_HINT = ("install it with `pip install faster-coco-eval==1.8.0` (pinned in requirements.txt), "
                 "or evaluate with the lvis API (backend 'lvis', MODEL.VILD.LVIS_EVALUATOR 'lvis')")


def _require_faster_coco_eval():
    try:
        import faster_coco_eval
    except ImportError as e:
        raise ImportError(f"LVISFastEvaluator needs faster-coco-eval: {_INSTALL_HINT}") from e
    return faster_coco_eval


def limit_dets_per_image(results: List[dict], max_dets: int) -> List[dict]:
    """The ``max_dets`` highest scored results of each image, as ``lvis.LVISResults`` keeps them
    (same order, same tie-breaking: it decides which of equal scores survive and which ranks first)."""
    by_image = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    for image_id, anns in by_image.items():
        if len(anns) > max_dets:
            by_image[image_id] = sorted(anns, key=lambda r: r["score"], reverse=True)[:max_dets]
    return [r for anns in by_image.values() for r in anns]


def lvis_areas(results: List[dict], iou_type: str) -> np.ndarray:
    """Areas as ``lvis.LVISResults`` sets them: box areas for "bbox", mask areas for "segm"."""
    if iou_type == "segm":
        return _require_faster_coco_eval().mask.area([r["segmentation"] for r in results]).astype(np.float64)
    return np.array([r["bbox"][2] * r["bbox"][3] for r in results], dtype=np.float64).reshape(-1)


def nonempty(areas: np.ndarray) -> np.ndarray:
    """Which results have a positive area: the ``lvis`` API skips the others (``LVIS.get_ann_ids``
    wants ``area > 0``), faster-coco-eval would count them as false positives. Detectron2 outputs
    empty masks (thresholded away) on small boxes."""
    return areas > 0


def judged(coco_gt, results: List[dict]) -> np.ndarray:
    """Which results LVIS judges: those of a category annotated in their image or listed in its
    ``neg_category_ids`` (``lvis.LVISEval`` skips the others). Dropping them before faster-coco-eval
    also spares its version 1.8.0 an ``IndexError: unordered_map::at`` on mask AP when all
    detections on an image without annotations are of such categories."""
    known = {image_id: set(image.get("neg_category_ids", [])) for image_id, image in coco_gt.imgs.items()}
    for ann in coco_gt.dataset["annotations"]:
        known[ann["image_id"]].add(ann["category_id"])
    unknown = {r["image_id"] for r in results} - known.keys()
    if unknown:
        raise ValueError(f"predictions for image ids {sorted(unknown)[:5]} (of {len(unknown)}) that the LVIS ground "
                         "truth does not hold: evaluate on the dataset the predictions were made for")
    return np.array([r["category_id"] in known[r["image_id"]] for r in results], dtype=bool).reshape(-1)


def detections_for_faster_coco_eval(coco_gt, results: List[dict], areas: np.ndarray, iou_type: str):
    """A ``faster_coco_eval.COCO`` of ``results`` (copies) as ``lvis.LVISResults`` makes them: ids
    1, 2, ... and ``areas``; for "segm" without the predicted box (Detectron2 drops it; mask AP does
    not read boxes). Areas come in bulk: ``COCO.loadRes`` computes each mask area in its own call."""
    drop = "bbox" if iou_type == "segm" else None
    anns = [{k: v for k, v in r.items() if k != drop} for r in results]
    for i, ann in enumerate(anns):
        ann.update(id=i + 1, area=float(areas[i]), iscrowd=0)
    dts = _require_faster_coco_eval().COCO(print_function=logger.debug)
    dts.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                   "annotations": anns}
    dts.createIndex()
    return dts


def lvis_gt_for_faster_coco_eval(lvis_dataset: dict):
    """A ``faster_coco_eval.COCO`` over an LVIS ground truth dict. The annotations are shallow
    copies (the evaluation adds keys to them) with ``iscrowd`` 0: the ``lvis`` API knows no crowds,
    and faster-coco-eval would take ``iscrowd`` as a crowd region and an ignore flag."""
    faster_coco_eval = _require_faster_coco_eval()
    anns = lvis_dataset["annotations"]
    if any(a.get("ignore") for a in anns):
        logger.warning("the LVIS ground truth flags annotations 'ignore', which faster-coco-eval does not read "
                       "(the lvis API does): evaluate with backend 'lvis' for exact numbers")
    dataset = {k: v for k, v in lvis_dataset.items() if k != "annotations"}
    # lvis.LVIS.get_ann_ids, which LVISEval loads with, skips annotations of area 0
    dataset["annotations"] = [{**a, "iscrowd": 0} for a in anns if a["area"] > 0]
    return faster_coco_eval.COCO(dataset, print_function=logger.debug)


def evaluate_predictions_on_lvis_fast(coco_gt, lvis_results: List[dict], iou_type: str,
                                      max_dets_per_image: Optional[int] = None) -> Dict[str, float]:
    """Detectron2's ``_evaluate_predictions_on_lvis`` with faster-coco-eval in LVIS mode.

    Args:
        coco_gt: ground truth, from :func:`lvis_gt_for_faster_coco_eval`.
        lvis_results: detections in LVIS json format (1-based dataset category ids); not modified.
        iou_type: "bbox" or "segm".
        max_dets_per_image: detections kept per image (None: LVIS's 300; negative: all).
    Returns:
        {metric: value in percent} for :data:`LVIS_METRICS`.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type {iou_type!r}: LVIS evaluation supports 'bbox' and 'segm'")
    if len(lvis_results) == 0:
        logger.warning("No predictions from the model!")
        return {metric: float("nan") for metric in LVIS_METRICS}
    faster_coco_eval = _require_faster_coco_eval()
    max_dets = 300 if max_dets_per_image is None else max_dets_per_image
    logger.info(f"Evaluating with max detections per image = {max_dets}")
    if max_dets >= 0:
        lvis_results = limit_dets_per_image(lvis_results, max_dets)
    lvis_results = [r for r, j in zip(lvis_results, judged(coco_gt, lvis_results)) if j]
    areas = lvis_areas(lvis_results, iou_type)
    kept = np.flatnonzero(nonempty(areas))
    # every kept detection counts (lvis.LVISEval cuts nothing per class); 0 or negative: keep all
    max_dets = max_dets if max_dets > 0 else max(1, len(kept))
    by_category = defaultdict(list)
    for i in kept:
        by_category[lvis_results[i]["category_id"]].append(i)
    cat_ids = sorted(coco_gt.getCatIds())
    precision, iou_thrs = [], None
    for start in range(0, len(cat_ids), CATEGORY_CHUNK):  # precision [T, R, K, A]: K in cat_ids order
        chunk = cat_ids[start:start + CATEGORY_CHUNK]
        index = [i for c in chunk for i in by_category.get(c, [])]
        dts = detections_for_faster_coco_eval(coco_gt, [lvis_results[i] for i in index], areas[index], iou_type)
        coco_eval = faster_coco_eval.COCOeval_faster(coco_gt, dts, iou_type, ranges=LVIS_AREA_RANGES,
                                                     lvis_style=True, print_function=logger.debug)
        coco_eval.params.catIds, coco_eval.params.maxDets = chunk, [max_dets]
        coco_eval.evaluate()
        coco_eval.accumulate()
        precision.append(coco_eval.eval["precision"][..., -1])
        iou_thrs = coco_eval.params.iouThrs
    frequencies = [coco_gt.cats[c]["frequency"] for c in cat_ids]
    results = lvis_summary(np.concatenate(precision, axis=2), frequencies, iou_thrs)
    logger.info(f"Evaluation results for {iou_type}: \n" + create_small_table(results))
    return results


def lvis_summary(precision: np.ndarray, frequencies: Sequence[str], iou_thrs: np.ndarray) -> Dict[str, float]:
    """``lvis.LVISEval.summarize``'s AP fields, in percent, from precision [T, R, K, A] (T IoU
    thresholds ``iou_thrs``, R recall thresholds, K categories of ``frequencies`` "r" / "c" / "f",
    A area ranges all / small / medium / large; -1 where a category has no ground truth): means
    over all valid entries, -100 where there is none."""
    def mean(s):
        valid = s[s > -1]
        return float(np.mean(valid)) * 100 if valid.size else -100.0

    group = {g: [k for k, f in enumerate(frequencies) if f == g] for g in "rcf"}
    at = {thr: np.where(iou_thrs == thr)[0] for thr in (0.5, 0.75)}  # as LVISEval finds them
    p = precision
    return {"AP": mean(p[..., 0]), "AP50": mean(p[at[0.5]][..., 0]), "AP75": mean(p[at[0.75]][..., 0]),
            "APs": mean(p[..., 1]), "APm": mean(p[..., 2]), "APl": mean(p[..., 3]),
            "APr": mean(p[:, :, group["r"], 0]), "APc": mean(p[:, :, group["c"], 0]),
            "APf": mean(p[:, :, group["f"], 0])}


class LVISFastEvaluator(LVISEvaluator):
    """Detectron2's :class:`LVISEvaluator` whose box / mask AP comes from faster-coco-eval
    (:func:`evaluate_predictions_on_lvis_fast`) instead of the ``lvis`` API; same arguments,
    same results dict, same files written."""

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *,
                 max_dets_per_image=None):
        _require_faster_coco_eval()  # fail at construction, not after inference
        super().__init__(dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir,
                         max_dets_per_image=max_dets_per_image)
        self._coco_gt = None  # built from self._lvis_api on first evaluation

    def _eval_predictions(self, predictions):
        """Fill ``self._results`` with the metrics of each task (as Detectron2's evaluator does,
        including the saved ``lvis_instances_results.json``)."""
        self._logger.info("Preparing results in the LVIS format ...")
        lvis_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(lvis_results)
        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            to_dataset_id = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
            for result in lvis_results:
                result["category_id"] = to_dataset_id[result["category_id"]]
        else:  # contiguous ids are LVIS ids - 1
            for result in lvis_results:
                result["category_id"] += 1

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "lvis_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(lvis_results))
                f.flush()
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info("Evaluating predictions with faster-coco-eval (LVIS mode) ...")
        if self._coco_gt is None and lvis_results:
            self._coco_gt = lvis_gt_for_faster_coco_eval(self._lvis_api.dataset)
        for task in sorted(tasks):
            self._results[task] = evaluate_predictions_on_lvis_fast(
                self._coco_gt, lvis_results, task, max_dets_per_image=self._max_dets_per_image)


def build_lvis_evaluator(dataset_name: str, *, tasks: Optional[Sequence[str]], output_dir: Optional[str],
                         max_dets_per_image: int, backend: str = "faster-coco-eval") -> LVISEvaluator:
    """The LVIS evaluator of ``backend``: "faster-coco-eval" (:class:`LVISFastEvaluator`) or "lvis"
    (Detectron2's :class:`LVISEvaluator`, the pure-Python ``lvis`` API: the metric of record)."""
    if backend not in LVIS_EVALUATOR_BACKENDS:
        raise ValueError(f"LVIS evaluator backend {backend!r} is unknown; use one of "
                         f"{', '.join(repr(b) for b in LVIS_EVALUATOR_BACKENDS)} (MODEL.VILD.LVIS_EVALUATOR)")
    cls = LVISFastEvaluator if backend == "faster-coco-eval" else LVISEvaluator
    return cls(dataset_name, tasks=tasks, output_dir=output_dir, max_dets_per_image=max_dets_per_image)
