"""Detection breakdown: confident detections counted by where they land, exact counts."""
import pytest

from vild_d2.evaluation import confident_detection_breakdown


def test_confident_detection_breakdown_counts_each_case():
    gt = {"annotations": [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10]},
    ]}
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},    # base, right
        {"image_id": 1, "category_id": 2, "bbox": [1, 1, 10, 10], "score": 0.8},    # novel on object 1
        {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 9], "score": 0.7},   # novel, right
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "score": 0.6},  # novel, background
        {"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.5},    # IoU 0.22: background
        {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "score": 0.2},  # below the score
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.4},      # image without objects
    ]
    counts = confident_detection_breakdown(results, gt, novel_category_ids=[2], min_score=0.3)
    assert counts == {"novel": {"right": 1, "other_object": 1, "background": 1},
                      "base": {"right": 1, "other_object": 0, "background": 2}}
    assert confident_detection_breakdown(results, gt, [2], min_score=0.1)["base"]["other_object"] == 1


def test_novel_object_naming_takes_the_top_detection_on_each_novel_object():
    from vild_d2.evaluation import novel_object_naming

    gt = {"annotations": [
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]},    # top detection names it 1
        {"image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10]},  # named right
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10]},  # only an IoU 0.22 detection
        {"image_id": 1, "category_id": 1, "bbox": [70, 70, 10, 10]},  # base: not counted
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10]},    # image without detections
    ]}
    results = [
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.5},
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10], "score": 0.7},
        {"image_id": 1, "category_id": 2, "bbox": [54, 54, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [70, 70, 10, 10], "score": 0.9},
    ]
    naming = novel_object_naming(results, gt, novel_category_ids=[2, 3])
    assert naming == {"objects": 4, "found": 2, "named_right": 1, "wrong_names": {1: 1}}
    assert novel_object_naming(results, gt, [2, 3], iou=0.2)["found"] == 3


def test_class_subset_ap_averages_only_the_chosen_classes(tmp_path):
    import json

    from vild_d2.evaluation import class_subset_ap

    gt = {"images": [{"id": 1, "width": 20, "height": 20, "neg_category_ids": [], "not_exhaustive_category_ids": []}],
          "categories": [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "r"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100},
                          {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 10, 10, 10], "area": 100}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
               {"image_id": 1, "category_id": 2, "bbox": [10, 10, 10, 6.3], "score": 0.8}]  # IoU 0.63
    assert class_subset_ap(results, str(path), [1]) == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0})
    # matched at IoU 0.5, 0.55 and 0.6 of the ten thresholds
    assert class_subset_ap(results, str(path), [2]) == pytest.approx({"AP": 30.0, "AP50": 100.0, "AP75": 0.0})
    assert class_subset_ap(results, str(path), [1, 2]) == pytest.approx({"AP": 65.0, "AP50": 100.0, "AP75": 50.0})
    assert class_subset_ap(results[:1], str(path), [2]) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    assert "area" not in results[0]  # the caller's dicts are left as they were
