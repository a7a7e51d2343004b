"""The pinned stack imports together and LVIS evaluation works on NumPy 2."""
import importlib
import json

import numpy as np
import pytest


@pytest.mark.parametrize("name", ["vild_d2", "detectron2", "clip", "lvis", "fvcore", "omegaconf", "torch", "cv2"])
def test_import(name):
    importlib.import_module(name)


def test_repo_tools_not_shadowed():
    """detectron2's wheel ships a top-level `tools` package; bootstrap removes it."""
    assert importlib.util.find_spec("tools") is None or "site-packages" not in str(
        importlib.util.find_spec("tools").origin or ""
    )


def _tiny_lvis():
    square = [[10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]]
    tri = [[50.0, 50.0, 90.0, 50.0, 70.0, 85.0]]
    images = [
        {"id": 1, "height": 100, "width": 100, "neg_category_ids": [2], "not_exhaustive_category_ids": []},
        {"id": 2, "height": 100, "width": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []},
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square, "bbox": [10, 10, 30, 30], "area": 900},
        {"id": 2, "image_id": 2, "category_id": 1, "segmentation": tri, "bbox": [50, 50, 40, 35], "area": 700},
        {"id": 3, "image_id": 2, "category_id": 2, "segmentation": square, "bbox": [10, 10, 30, 30], "area": 900},
    ]
    cats = [
        {"id": 1, "name": "a", "frequency": "f", "synonyms": ["a"], "image_count": 2, "instance_count": 2},
        {"id": 2, "name": "b", "frequency": "r", "synonyms": ["b"], "image_count": 1, "instance_count": 1},
    ]
    return {"images": images, "annotations": anns, "categories": cats}


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_lvis_eval_perfect_predictions(iou_type, tmp_path):
    from lvis import LVIS, LVISEval, LVISResults

    import vild_d2  # noqa: F401  (applies the np.float fix)

    path = tmp_path / "tiny_lvis.json"
    path.write_text(json.dumps(_tiny_lvis()))
    gt = LVIS(str(path))
    dets = [dict(a, score=1.0) for a in gt.dataset["annotations"]]
    for d in dets:
        d.pop("id")
    ev = LVISEval(gt, LVISResults(gt, dets), iou_type)
    ev.run()
    assert ev.results["AP"] == pytest.approx(1.0)
    assert ev.results["APf"] == pytest.approx(1.0) and ev.results["APr"] == pytest.approx(1.0)


def test_numpy_itself_not_patched():
    assert not hasattr(np, "float")
