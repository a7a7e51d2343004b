"""LVISFastEvaluator (faster-coco-eval, LVIS mode) against Detectron2's LVISEvaluator (the lvis API)
on a synthetic LVIS ground truth with noisy detections: equal within 0.1 AP on every field."""
import copy
import json
import logging
import math

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import Boxes, Instances
from pycocotools import mask as mask_utils

from vild_d2.artifacts import write_json
from vild_d2.evaluation import LVISFastEvaluator, build_lvis_evaluator, lvis_fast
from vild_d2.kit.lvis_synthetic import SyntheticLVISSettings, synthetic_detections, synthetic_lvis_gt, toy_categories

NAME = "test_lvis_fast_synthetic"
SETTINGS = SyntheticLVISSettings(num_images=60, seed=11)
NUM_CATEGORIES = 36
TOL = 0.1  # AP points
TASKS = ("bbox", "segm")


def _register(name, gt, folder):
    MetadataCatalog.get(name).set(json_file=str(write_json(folder / f"{name}.json", gt, indent=None)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    gt = synthetic_lvis_gt(toy_categories(NUM_CATEGORIES), SETTINGS)
    predictions = synthetic_detections(gt, max_per_image=300, seed=12)
    _register(NAME, gt, tmp_path_factory.mktemp("lvis_fast"))
    yield gt, predictions
    MetadataCatalog.remove(NAME)


def _evaluate(evaluator, predictions):
    """What ``evaluate`` returns after ``process`` gathered ``predictions`` (each result dict copied:
    the evaluators write category ids, ids and areas into them)."""
    evaluator.reset()
    evaluator._predictions = [{**p, "instances": [dict(r) for r in p["instances"]]} for p in predictions]
    return evaluator.evaluate()


def _lvis_format(predictions):
    """Gathered predictions as LVIS json results (1-based category ids)."""
    return [{**r, "category_id": r["category_id"] + 1} for p in predictions for r in p["instances"]]


@pytest.fixture(scope="module")
def reference(world):
    """The lvis API's numbers at 300 and 100 detections per image."""
    return {m: _evaluate(LVISEvaluator(NAME, tasks=TASKS, max_dets_per_image=m), world[1]) for m in (300, 100)}


def _max_diff(a, b):
    """Largest difference over the tasks of ``a``."""
    return max(abs(a[task][k] - b[task][k]) for task in a for k in a[task])


def test_the_synthetic_world_exercises_lvis_evaluation(world):
    gt, predictions = world
    anns, images = gt["annotations"], gt["images"]
    assert {c["frequency"] for c in gt["categories"]} == {"r", "c", "f"}
    per_image = np.bincount([a["image_id"] for a in anns])
    assert per_image.max() >= 40 and len(images) == 60
    areas = np.array([a["area"] for a in anns])
    assert np.histogram(areas, [0, 32 ** 2, 96 ** 2, np.inf])[0].min() >= 30  # small, medium, large
    assert all(len(im["neg_category_ids"]) == 10 for im in images)
    assert sum(bool(im["not_exhaustive_category_ids"]) for im in images) >= 10
    counts = [len(p["instances"]) for p in predictions]
    assert max(counts) == 300 and min(counts) < 300
    predicted = {r["category_id"] + 1 for p in predictions for r in p["instances"]}
    assert {c["id"] for c in gt["categories"]} - predicted == {7, 14, 21, 28, 35}  # never predicted
    negatives = {(im["id"], c) for im in images for c in im["neg_category_ids"]}
    results = _lvis_format(predictions)
    assert sum((r["image_id"], r["category_id"]) in negatives for r in results) > 1000  # false positives that count
    assert sum(mask_utils.area(r["segmentation"]) == 0 for r in results) >= 30  # lvis skips these
    assert sum(r["bbox"][2] * r["bbox"][3] == 0 for r in results) >= 5


@pytest.mark.parametrize("max_dets,chunk", [(300, lvis_fast.CATEGORY_CHUNK), (100, 7)])
def test_fast_evaluator_agrees_with_the_lvis_api(world, reference, max_dets, chunk, caplog, monkeypatch):
    monkeypatch.setattr(lvis_fast, "CATEGORY_CHUNK", chunk)  # 7: six runs joined (frequency groups across)
    with caplog.at_level(logging.INFO, logger="vild_d2.evaluation.lvis_fast"):
        fast = _evaluate(LVISFastEvaluator(NAME, tasks=TASKS, max_dets_per_image=max_dets), world[1])
    assert "Evaluation results for segm" in caplog.text and "APr" in caplog.text  # Detectron2's table
    ref = reference[max_dets]
    assert list(fast) == list(ref) == list(TASKS)
    for task in TASKS:
        assert list(fast[task]) == list(ref[task]) == list(lvis_fast.LVIS_METRICS)
        assert all(5 < v < 60 for v in ref[task].values()), ref[task]  # every field means something
    assert _max_diff(fast, ref) <= TOL, (fast, ref)  # measured: 4e-15
    assert abs(ref["bbox"]["AP"] - ref["segm"]["AP"]) > 1  # the two tasks do differ


def test_the_same_files_are_written(world, tmp_path):
    name = "lvis_instances_results.json"
    for cls in (LVISFastEvaluator, LVISEvaluator):
        evaluator = cls(NAME, tasks=TASKS, output_dir=str(tmp_path / cls.__name__), max_dets_per_image=300)
        evaluator._do_evaluation = False  # as for a test set: the files are written before evaluation
        assert _evaluate(evaluator, world[1][:8]) == {}
    written = [json.loads((tmp_path / cls / name).read_text()) for cls in ("LVISFastEvaluator", "LVISEvaluator")]
    assert written[0] == written[1] and len(written[0]) > 1000
    assert {p.name for p in (tmp_path / "LVISFastEvaluator").iterdir()} == {name, "instances_predictions.pth"}


def test_a_mismatch_would_be_caught(world, reference, monkeypatch):
    """A wrong detection limit, a per-class instead of a per-image limit, wrong area ranges, empty
    masks counted, or ignoring the neg / not-exhaustive lists each move some field by more than the
    tolerance."""
    gt, predictions = world
    results = _lvis_format(predictions)
    before = copy.deepcopy(results)

    def fast(gt_dict=gt, max_dets=300, task="bbox"):  # box AP suffices but for empty masks
        coco_gt = lvis_fast.lvis_gt_for_faster_coco_eval(gt_dict)
        return {task: lvis_fast.evaluate_predictions_on_lvis_fast(coco_gt, results, task, max_dets)}

    ref = reference[300]
    assert _max_diff(fast(max_dets=100), ref) > 3 * TOL  # measured 0.79
    assert results == before  # the caller's results are not modified
    for key, measured in (("neg_category_ids", 6.8), ("not_exhaustive_category_ids", 0.65)):
        emptied = {**gt, "images": [{**im, key: []} for im in gt["images"]]}
        assert _max_diff(fast(emptied), ref) > 3 * TOL, (key, measured)
    with monkeypatch.context() as m:  # only faster-coco-eval's per-class cut at maxDets
        m.setattr(lvis_fast, "limit_dets_per_image", lambda results, max_dets: results)
        assert _max_diff(fast(max_dets=100), reference[100]) > 3 * TOL  # measured 0.79
        m.setattr(lvis_fast, "nonempty", lambda areas: np.ones(len(areas), dtype=bool))
        assert _max_diff(fast(task="segm"), ref) > 3 * TOL  # measured 0.61
    monkeypatch.setattr(lvis_fast, "LVIS_AREA_RANGES", {"small": [0, 24 ** 2], "medium": [24 ** 2, 128 ** 2],
                                                        "large": [128 ** 2, 1e10]})
    shifted = fast()
    assert max(abs(shifted["bbox"][k] - ref["bbox"][k]) for k in ("APs", "APm", "APl")) > 3 * TOL  # 16


def test_images_without_annotations_and_groups_without_categories(world, tmp_path):
    """Detections only of unjudged categories on an image without annotations: the lvis API skips
    them (faster-coco-eval 1.8.0 alone raises IndexError on mask AP). No rare category: APr is -100
    (the lvis API's -1) in both."""
    gt, predictions = world
    extra = {**gt["images"][0], "id": 1000, "neg_category_ids": [1], "not_exhaustive_category_ids": []}
    small = {**gt, "images": gt["images"][:10] + [extra],
             "annotations": [a for a in gt["annotations"] if a["image_id"] <= 10],
             "categories": [{**c, "frequency": "c" if c["frequency"] == "r" else c["frequency"]}
                            for c in gt["categories"]]}
    unjudged = [{**r, "image_id": 1000, "category_id": 4} for r in predictions[0]["instances"][:20]]
    small_predictions = predictions[:10] + [{"image_id": 1000, "instances": unjudged}]
    _register("test_lvis_fast_small", small, tmp_path)
    try:
        got = [_evaluate(cls("test_lvis_fast_small", tasks=TASKS, max_dets_per_image=300), small_predictions)
               for cls in (LVISFastEvaluator, LVISEvaluator)]
    finally:
        MetadataCatalog.remove("test_lvis_fast_small")
    assert _max_diff(*got) <= TOL
    assert got[0]["segm"]["APr"] == got[1]["segm"]["APr"] == -100


def _empty_outputs(gt):
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        instances = Instances((h, w), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                              pred_classes=torch.zeros(0, dtype=torch.long),
                              pred_masks=torch.zeros(0, h, w, dtype=torch.bool))
        yield [{"image_id": im["id"], "height": h, "width": w}], [{"instances": instances}]


def test_empty_predictions_are_reported_as_detectron2_does(world):
    gt = world[0]
    got = []
    for cls in (LVISFastEvaluator, LVISEvaluator):
        evaluator = cls(NAME, tasks=TASKS, max_dets_per_image=300)
        evaluator.reset()
        for inputs, outputs in _empty_outputs(gt):
            evaluator.process(inputs, outputs)
        got.append(evaluator.evaluate())
        evaluator.reset()
        assert evaluator.evaluate() == {}  # nothing processed at all
    fast, plain = got
    assert list(fast) == list(plain) == list(TASKS)
    for task in TASKS:
        assert list(fast[task]) == list(plain[task]) == list(lvis_fast.LVIS_METRICS)
        assert all(math.isnan(v) for v in [*fast[task].values(), *plain[task].values()])


def test_backends(world):
    kwargs = dict(tasks=TASKS, output_dir=None, max_dets_per_image=300)
    assert type(build_lvis_evaluator(NAME, **kwargs)) is LVISFastEvaluator
    assert type(build_lvis_evaluator(NAME, backend="faster-coco-eval", **kwargs)) is LVISFastEvaluator
    assert type(build_lvis_evaluator(NAME, backend="lvis", **kwargs)) is LVISEvaluator
    with pytest.raises(ValueError, match="'faster-coco-eval', 'lvis'"):
        build_lvis_evaluator(NAME, backend="pycocotools", **kwargs)
