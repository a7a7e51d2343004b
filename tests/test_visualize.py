"""Drawing detections: one label per object, pictures with novel objects first."""
import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from vild_d2.kit.pipeline import novel_first
from vild_d2.visualize import best_label_per_object, draw_detections


def _instances():
    inst = Instances((40, 60))
    # boxes 0 and 1 cover the same object (IoU 0.83), box 2 another one
    inst.pred_boxes = Boxes(torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 12.], [30., 5., 50., 25.]]))
    inst.scores = torch.tensor([0.2, 0.6, 0.1])
    inst.pred_classes = torch.tensor([3, 5, 1])
    return inst


def test_best_label_per_object_keeps_the_top_name_of_each_object():
    kept = best_label_per_object(_instances())
    assert kept.pred_classes.tolist() == [5, 1]
    assert kept.scores.tolist() == [0.6000000238418579, 0.10000000149011612]
    assert len(best_label_per_object(_instances(), iou_threshold=0.9)) == 3
    assert len(best_label_per_object(_instances()[[]])) == 0


def test_draw_detections_keeps_the_image_size():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    drawn = draw_detections(image, _instances(), [f"c{i}" for i in range(6)], novel_ids=[5], scale=2.0)
    assert drawn.shape == (80, 120, 3)
    assert not np.array_equal(drawn, np.zeros_like(drawn))


def test_pictures_show_images_with_novel_objects_first():
    records = [{"image_id": i, "annotations": [{"category_id": c} for c in cats]}
               for i, cats in enumerate([[0], [2, 7], [], [7], [1, 3]])]
    assert [r["image_id"] for r in novel_first(records, [7, 3])] == [1, 3, 4, 0, 2]


def test_default_scale_upscales_small_images_but_not_long_strips():
    names = [f"c{i}" for i in range(6)]
    assert draw_detections(np.zeros((40, 60, 3), np.uint8), _instances()[[]], names).shape == (480, 720, 3)
    # a 3 x 4000 strip: upscaling its short side to 480 px would draw a 640,000 px wide canvas
    assert draw_detections(np.zeros((3, 4000, 3), np.uint8), _instances()[[]], names).shape == (3, 4000, 3)
