"""VocabularyPredictor: N images per forward pass, read in DataLoader workers, give the detections
of one image at a time; the vocabulary swaps without reloading the model."""
import logging

import numpy as np
import pytest
import torch
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from PIL import Image

from vild_d2.engine import load_config
from vild_d2.kit.toy import TOY_PREFIX
from vild_d2.predictor import VocabularyPredictor

from .helpers import INSTANT

NOVEL = "ruby,medic,daisy"  # rare toy classes, never labelled in training
BASE = "lemon,cherry"


@pytest.fixture(scope="module")
def predictor(toy_env, instant_run, tmp_path_factory):
    cfg = load_config(INSTANT, ["MODEL.WEIGHTS", str(instant_run[0] / "model_final.pth"),
                                "MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt"),
                                "MODEL.VILD.TEXT_CACHE_DIR", str(tmp_path_factory.mktemp("text")),
                                "MODEL.DEVICE", "cpu"], register=False)
    return VocabularyPredictor(cfg, NOVEL)


def toy_images(toy_env):
    """The 14 train and val images of the tiny world (128-160 pixels a side)."""
    return sorted((toy_env / TOY_PREFIX / "images").glob("*/*.png"))


def fields(inst):
    return {k: v.tensor if k == "pred_boxes" else v for k, v in inst.get_fields().items()}


def assert_equal(a, b):
    assert len(a) == len(b) and all(torch.equal(x, fields(b)[k]) for k, x in fields(a).items())


def assert_same_detections(a, b):
    """Same detections, classes and order; boxes and scores up to the rounding of float sums, which
    differ between a batch of one and of several (convolutions pick kernels by batch size)."""
    assert len(a) == len(b) and torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-2)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-4)
    assert (a.pred_masks != b.pred_masks).sum() <= 1e-3 * a.pred_masks.numel()


def test_one_image_is_detectron2s_default_predictor(predictor, toy_env):
    for path in toy_images(toy_env)[:3]:
        image = read_image(str(path), format="RGB")
        old = DefaultPredictor.__call__(predictor, np.ascontiguousarray(image[:, :, ::-1]))["instances"].to("cpu")
        assert_equal(predictor(image), old)


def test_batches_and_workers_give_the_detections_of_one_image_at_a_time(predictor, toy_env, tmp_path, caplog):
    broken, small = tmp_path / "broken.png", tmp_path / "small.png"
    broken.write_bytes(b"not an image")
    paths = [str(p) for p in toy_images(toy_env)]
    Image.open(paths[0]).crop((0, 0, 100, 120)).save(small)  # padded to 128 x 128, the others to 160 x 160
    paths[5:5] = [str(broken), str(small)]
    caplog.set_level(logging.ERROR, logger="vild_d2.predictor")
    alone = list(predictor.run(paths, 0.05, batch_size=1, workers=0))
    assert [r.getMessage().startswith(f"skipping {broken}: cannot read it") for r in caplog.records] == [True]
    caplog.clear()
    batched = list(predictor.run(paths, 0.05, batch_size=4, workers=2))
    assert [r.getMessage().startswith(f"skipping {broken}: cannot read it") for r in caplog.records] == [True]
    assert [p for p, _, _ in batched] == [p for p, _, _ in alone] == paths
    assert batched[5][1:] == (None, None) and predictor._padded_shape(torch.zeros(3, 120, 100)) == (128, 128)
    assert sum(len(inst) for _, _, inst in alone[:5] + alone[6:]) > 0
    for (_, image_a, a), (_, image_b, b) in zip(alone[:5] + alone[6:], batched[:5] + batched[6:]):
        assert np.array_equal(image_a, image_b) and image_b.flags.writeable
        assert_same_detections(a, b)
    images = [image for _, image, _ in alone if image is not None]
    for a, (_, _, b) in zip(predictor.predict(images), alone[:5] + alone[6:]):  # one call: two padded shapes
        assert_same_detections(a[a.scores >= 0.05], b)


def test_bad_batch_settings_are_refused(predictor):
    with pytest.raises(ValueError, match="batch_size >= 1 and workers >= 0"):
        next(predictor.run(["x.png"], 0.3, batch_size=0))


def test_set_vocabulary_swaps_the_classes_of_the_loaded_model(predictor, toy_env, instant_run):
    image, model = read_image(str(toy_images(toy_env)[0]), format="RGB"), predictor.model
    first = predictor(image)
    assert (predictor.class_names, predictor.novel_ids) == (NOVEL.split(","), [0, 1, 2])
    predictor.set_vocabulary(BASE)
    box_predictor = predictor.model.roi_heads.box_predictor
    assert predictor.model is model and predictor.class_names == box_predictor.test_class_names == BASE.split(",")
    assert predictor.novel_ids == [] and not box_predictor.novel_mask.any()  # both are training classes
    detections = predictor(image)
    assert len(detections) and int(detections.pred_classes.max()) < 2
    fresh = VocabularyPredictor(predictor.cfg, BASE)
    assert_equal(detections, fresh(image))
    predictor.set_vocabulary(BASE, novel_names=["cherry"])
    assert predictor.novel_ids == [1] and box_predictor.novel_mask.tolist() == [False, True]
    predictor.set_vocabulary(NOVEL)
    assert (predictor.class_names, predictor.novel_ids) == (NOVEL.split(","), [0, 1, 2])
    assert_equal(predictor(image), first)
