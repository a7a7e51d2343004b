"""CLIP on cropped regions at inference (MODEL.VILD.TEST_SCORES): the scores number by number,
the crops the detector's images give, and whole models on a random tiny CLIP."""
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, ImageList

from vild_d2.clip_model import clip_identity, load_clip
from vild_d2.crops import embed_regions
from vild_d2.kit.toy import TOY_PREFIX
from vild_d2.modeling import CropEmbedder, ViLDOutputLayers

from .helpers import random_classifier
from .test_vild_model import batch


def layers(test_scores: str) -> ViLDOutputLayers:
    """K = 3 classes in D = 2 (class 2 novel), identity projection, temperature 0.5."""
    out = ViLDOutputLayers(ShapeSpec(channels=2), box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
                           train_embeddings=torch.eye(2), test_embeddings=torch.tensor([[1.0, 0], [0, 1], [-1, 0]]),
                           novel_class_ids=[2], temperature=0.5, test_scores=test_scores)
    with torch.no_grad():
        out.projection.weight.copy_(torch.eye(2))
        out.projection.bias.zero_()
        out.bg_embedding.copy_(torch.tensor([0.0, -1.0]))
    return out.eval()


# CLIP crop embedding (0.6, 0.8): cosines (0.6, 0.8, -0.6) / 0.5 -> softmax
P_CLIP = [0.3872152894124034, 0.5776573320497358, 0.035127378537860764]
# region embedding (1, 0): logits (2, 0, -2, background 0) -> softmax
P_TEXT = [0.775803492574376, 0.10499358540350652, 0.01420933661861104, 0.10499358540350652]


@pytest.mark.parametrize("test_scores, expected", [
    # sqrt(p_clip * sigmoid(0)); CLIP has no background
    ("clip", [0.4400086870803822, 0.5374278240144139, 0.13252806973969847, 0.0]),
    # base: p_text^(2/3) p_clip^(1/3); novel (class 2): p_text^(1/3) p_clip^(2/3); background: p_text's
    ("text+clip", [0.6153921981867609, 0.18535256814977918, 0.025978960012423297, 0.10499358540350652]),
])
def test_scores_number_by_number(test_scores, expected):
    scores, deltas = layers(test_scores)(torch.tensor([[1.0, 0.0]]), crops=(torch.tensor([[0.6, 0.8]]), torch.zeros(1)))
    assert scores.shape == (1, 4) and deltas.shape == (1, 4)
    torch.testing.assert_close(scores[0], torch.tensor(expected), rtol=1e-6, atol=1e-7)
    ref = [P_CLIP[k] ** (1 / 3) * P_TEXT[k] ** (2 / 3) for k in (0, 1)] + [P_CLIP[2] ** (2 / 3) * P_TEXT[2] ** (1 / 3)]
    assert test_scores == "clip" or torch.allclose(scores[0, :3], torch.tensor(ref), rtol=1e-6)


def test_crop_modes_need_crops_and_a_text_head():
    with pytest.raises(ValueError, match="needs CLIP crop embeddings"):
        layers("clip")(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="TEST_SCORES must be one of"):
        layers("crops")
    with pytest.raises(ValueError, match="needs a text head"):
        ViLDOutputLayers(ShapeSpec(channels=2), box2box_transform=Box2BoxTransform((1.0,) * 4),
                         train_embeddings=torch.eye(2), test_embeddings=torch.eye(2), mode="image",
                         test_scores="text+clip")


@pytest.fixture(scope="module")
def visual(toy_env):
    return load_clip(str(toy_env / "clip.pt")).visual


@pytest.mark.parametrize("fmt", ["RGB", "BGR"])
def test_crops_come_from_the_image_the_detector_sees(visual, fmt):
    torch.manual_seed(0)
    rgb = torch.randint(0, 256, (3, 40, 50)).float()
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 70.0]
    seen = rgb.flip(0) if fmt == "BGR" else rgb
    normalised = (seen - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    images = ImageList.from_tensors([normalised, torch.zeros(3, 64, 64)], size_divisibility=32)  # padded
    embedder = CropEmbedder(visual=visual, pixel_mean=mean, pixel_std=std, input_format=fmt, scales=(1.0, 1.5))
    boxes = Boxes(torch.tensor([[2.0, 3, 30, 35], [10, 0, 50, 40]]))
    emb = embedder(images, [boxes, Boxes(torch.zeros(0, 4))])
    assert [tuple(e.shape) for e in emb] == [(2, visual.output_dim), (0, visual.output_dim)]
    torch.testing.assert_close(emb[0], embed_regions(visual, rgb, boxes.tensor, (1.0, 1.5), "sum", 256),
                               rtol=1e-4, atol=1e-5)
    assert "_visual" not in dict(embedder.named_modules()) and not embedder.state_dict()


@pytest.mark.parametrize("test_scores", ["clip", "text+clip"])
def test_whole_model_scores_with_clip_on_crops(toy_env, toy_cfg, tmp_path, test_scores):
    toy_cfg.MODEL.VILD.CLIP_MODEL = str(toy_env / "clip.pt")
    ident = clip_identity(toy_cfg.MODEL.VILD.CLIP_MODEL)
    for key, split, seed in (("TEXT_EMBEDDINGS", "train_base", 0), ("TEST_TEXT_EMBEDDINGS", "val", 1)):
        names = MetadataCatalog.get(f"{TOY_PREFIX}_{split}").thing_classes
        setattr(toy_cfg.MODEL.VILD, key, random_classifier(tmp_path / f"{split}.npy", names, seed=seed, clip=ident))
    toy_cfg.MODEL.VILD.MODE = "text"
    torch.manual_seed(0)
    text_model = build_model(toy_cfg).eval()
    toy_cfg.MODEL.VILD.TEST_SCORES = test_scores
    model = build_model(toy_cfg).eval()
    assert model.state_dict().keys() == text_model.state_dict().keys()  # a ViLD-text checkpoint fits as it is
    model.load_state_dict(text_model.state_dict())
    inputs = [{"image": b["image"], "height": 128, "width": 144} for b in batch()]
    with torch.no_grad():
        out = model(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # inference under AMP: the CUDA fp16 path's code
            mixed = model(inputs)
    for o in out + mixed:
        inst = o["instances"]
        assert len(inst) > 0 and inst.has("pred_masks") and inst.scores.dtype == torch.float32
        assert float(inst.scores.min()) >= 0.0 and float(inst.scores.max()) <= 1.0
        assert int(inst.pred_classes.max()) < 24
