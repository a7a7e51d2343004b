"""A whole ViLDRCNN built from a config: a training and an inference step in every mode; bad configs."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from vild_d2.kit.toy import TOY_PREFIX
from vild_d2.modeling import MODES

from .helpers import random_classifier


def batch(seed=0, num_regions=(5, 3)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for m in num_regions:
        h, w = 128, 144
        image = torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8)
        gt = Instances((h, w))
        gt.gt_boxes = Boxes(torch.tensor([[10.0, 12, 50, 60], [70, 20, 120, 90]]))
        gt.gt_classes = torch.tensor([3, 15])  # the last of the 16 toy base classes
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, 12:60, 10:50] = True
        masks[1, 20:90, 70:120] = True
        gt.gt_masks = BitMasks(masks)
        regions = Instances((h, w))
        xy = torch.rand(m, 2, generator=g) * 80
        regions.proposal_boxes = Boxes(torch.cat([xy, xy + 20 + torch.rand(m, 2, generator=g) * 40], 1))
        regions.clip_embeds = torch.randn(m, 64, generator=g).half()
        out.append({"image": image, "instances": gt, "clip_regions": regions, "height": h, "width": w})
    return out


@pytest.fixture(autouse=True)
def event_storage():
    with EventStorage() as storage:  # training steps log statistics to it
        yield storage


@pytest.mark.parametrize("mode", MODES)
def test_train_and_inference_step(toy_cfg, mode, event_storage):
    toy_cfg.MODEL.VILD.MODE = mode
    torch.manual_seed(0)
    model = build_model(toy_cfg)
    model.train()
    losses = model(batch())
    assert ("loss_cls" in losses) == (mode != "image")
    # Detectron2's classification statistics, read in TensorBoard, for every mode with a text loss
    logged = event_storage.histories()
    assert ("fast_rcnn/cls_accuracy" in logged and "fast_rcnn/fg_cls_accuracy" in logged) == (mode != "image")
    if mode != "image":
        assert 0.0 <= logged["fast_rcnn/cls_accuracy"].latest() <= 1.0
    assert ("loss_image" in losses) == (mode != "text")
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": b["image"], "height": 128, "width": 144} for b in batch()])
    inst = out[0]["instances"]
    assert inst.pred_classes.numel() == 0 or int(inst.pred_classes.max()) < 24
    assert inst.has("pred_masks") and len(inst) <= toy_cfg.TEST.DETECTIONS_PER_IMAGE


def test_image_loss_weight_and_empty_regions(toy_cfg):
    losses = {}
    for w in (0.5, 1.0):
        toy_cfg.MODEL.VILD.IMAGE_LOSS_WEIGHT = w
        torch.manual_seed(0)
        model = build_model(toy_cfg).train()
        torch.manual_seed(1)
        losses[w] = model(batch())["loss_image"].item()
    assert losses[1.0] == pytest.approx(2 * losses[0.5], rel=1e-5)
    torch.manual_seed(0)
    model = build_model(toy_cfg).train()
    out = model(batch(num_regions=(0, 0)))
    assert out["loss_image"].item() == 0.0
    sum(out.values()).backward()
    assert model.roi_heads.box_predictor.projection.weight.grad is not None


def test_image_modes_need_cached_regions(toy_cfg):
    model = build_model(toy_cfg).train()
    inputs = [{k: v for k, v in b.items() if k != "clip_regions"} for b in batch()]
    with pytest.raises(ValueError, match="REGION_CACHE_DIR"):
        model(inputs)


def test_class_count_mismatch_names_the_key(toy_cfg, tmp_path):
    toy_cfg.MODEL.ROI_HEADS.NUM_CLASSES = 17
    with pytest.raises(ValueError, match=r"NUM_CLASSES=17 but the training vocabulary \(.*train.npy\) has 16 "
                                         r"classes; set NUM_CLASSES to 16"):
        build_model(toy_cfg)


def test_classifier_for_other_vocabulary_is_rejected(toy_cfg, tmp_path):
    toy_cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS = random_classifier(tmp_path / "x.npy", [f"c{i}" for i in range(20)])
    with pytest.raises(ValueError, match="20 classes but the dataset has 24"):
        build_model(toy_cfg)


def test_dimension_mismatch(toy_cfg, tmp_path):
    from detectron2.data import MetadataCatalog

    names = MetadataCatalog.get(f"{TOY_PREFIX}_val").thing_classes
    from vild_d2.clip_model import clip_identity

    toy_cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS = random_classifier(
        tmp_path / "d.npy", names, dim=32, clip=clip_identity(toy_cfg.MODEL.VILD.CLIP_MODEL))
    with pytest.raises(ValueError, match="D=64.*D=32"):
        build_model(toy_cfg)


@pytest.mark.parametrize("key", ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK"])
def test_class_specific_branches_rejected(toy_cfg, key):
    toy_cfg.merge_from_list([key, False])
    with pytest.raises(ValueError, match=key.split(".")[-1]):
        build_model(toy_cfg)


@pytest.mark.parametrize("mode", ["vild", "ensemble"])
def test_merged_pooling_equals_separate_passes(toy_cfg, mode):
    """One pooler pass over proposals + cached regions gives the losses of two separate passes."""
    toy_cfg.MODEL.VILD.MODE = mode
    torch.manual_seed(0)
    model = build_model(toy_cfg).train()
    heads = model.roi_heads
    data = batch()
    images = model.preprocess_image(data)
    features = model.backbone(images.tensor)
    proposals = []
    for d in data:
        inst = Instances(d["instances"].image_size)
        inst.proposal_boxes = Boxes(d["instances"].gt_boxes.tensor + 2.0)
        inst.gt_boxes, inst.gt_classes = d["instances"].gt_boxes, d["instances"].gt_classes
        proposals.append(inst)
    regions = [d["clip_regions"] for d in data]
    merged = heads._forward_box_and_image(features, proposals, regions)
    separate = heads._forward_box(features, proposals)
    image_head = heads.image_box_head if mode == "ensemble" else heads.box_head
    pooled = image_head(heads.box_pooler([features[f] for f in heads.box_in_features],
                                         [r.proposal_boxes for r in regions]))
    clip_embeds = torch.cat([r.clip_embeds for r in regions])
    image = heads.image_loss_weight * heads.box_predictor.image_loss(pooled, clip_embeds)
    assert merged["loss_image"].item() == pytest.approx(image.item(), rel=1e-5)
    for k in separate:
        assert merged[k].item() == pytest.approx(separate[k].item(), rel=1e-5)


def test_object_embedding_accuracy_counts_exactly(toy_env, toy_cfg, monkeypatch):
    """Heads forced to answer 'class 0' and 'background': accuracy = share of class-0 objects."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from vild_d2.evaluation import object_embedding_accuracy

    toy_cfg.MODEL.VILD.MODE = "ensemble"
    model = build_model(toy_cfg).eval()
    predictor = model.roi_heads.box_predictor
    k = predictor.class_embeddings.shape[0]
    monkeypatch.setattr(predictor, "embed", lambda x, head="text": predictor.class_embeddings[:1].expand(len(x), -1))
    monkeypatch.setattr(predictor, "text_logits", lambda emb: torch.nn.functional.one_hot(
        torch.full((len(emb),), k), k + 1).float())
    records = DatasetCatalog.get("tiny_toy_val")
    novel = MetadataCatalog.get("tiny_toy_val").novel_class_ids
    out = object_embedding_accuracy(model, records, novel)
    objects = [a["category_id"] for r in records for a in r["annotations"]]
    base = [c for c in objects if c not in novel]
    assert set(out) == {"text", "image", "text_background"}
    assert out["text"]["base"] == out["image"]["base"] == pytest.approx(sum(c == 0 for c in base) / len(base))
    assert out["text_background"]["base"] == 1.0


def test_distillation_fit_groups_regions_exactly(toy_env, toy_cfg, monkeypatch):
    """Student forced to 'class 0'; CLIP targets the own class's text (objects) or class 0 (a 3 px
    background box); a third of each object's box (IoU 1/3) is neither object nor background."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    from vild_d2.evaluation import distillation_fit

    toy_cfg.MODEL.VILD.MODE = "image"
    model = build_model(toy_cfg).eval()
    predictor = model.roi_heads.box_predictor
    text = predictor.class_embeddings  # K x D
    monkeypatch.setattr(predictor, "embed", lambda x, head="text": text[:1].expand(len(x), -1))
    records = DatasetCatalog.get("tiny_toy_train_full")
    novel = MetadataCatalog.get("tiny_toy_train_full").novel_class_ids

    class Cache:  # the RegionCache interface the diagnostic uses
        def __contains__(self, image_id):
            return True

        def get(self, image_id):
            (r,) = [r for r in records if r["image_id"] == image_id]
            gt = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in r["annotations"]]
            thirds = [[x0, y0, x0 + (x1 - x0) / 3, y1] for x0, y0, x1, y1 in gt]
            boxes = np.array(gt + thirds + [[0, 0, 3, 3]], np.float32).reshape(-1, 4)
            targets = torch.cat([text[[a["category_id"] for a in r["annotations"]]].repeat(2, 1), text[:1]])
            return boxes, targets.numpy(), np.zeros(len(boxes), np.float32)

    out = distillation_fit(model, Cache(), records, novel)
    labels = [a["category_id"] for r in records for a in r["annotations"]]
    novel_labels, base_labels = [c for c in labels if c in novel], [c for c in labels if c not in novel]
    for group, classes in (("novel", novel_labels), ("base", base_labels)):
        assert out[group]["regions"] == len(classes)
        assert out[group]["clip_accuracy"] == 1.0
        assert out[group]["student_accuracy"] == pytest.approx(sum(c == 0 for c in classes) / len(classes))
        assert out[group]["cosine"] == pytest.approx(float((text[classes] @ text[0]).mean()), abs=1e-6)
    assert out["background"] == {"cosine": pytest.approx(1.0), "regions": len(records)}


def test_ensemble_with_one_box_head(toy_cfg):
    """MODEL.VILD.ENSEMBLE_IMAGE_BOX_HEAD False: one box head, separate text and image projections;
    the image projection alone takes ViLD-image's gradient in the predictor."""
    toy_cfg.MODEL.VILD.MODE = "ensemble"
    toy_cfg.MODEL.VILD.ENSEMBLE_IMAGE_BOX_HEAD = False
    torch.manual_seed(0)
    model = build_model(toy_cfg)
    assert model.roi_heads.image_box_head is None and model.roi_heads.box_predictor.image_projection is not None
    model.train()
    losses = model(batch())
    losses["loss_image"].backward()
    predictor = model.roi_heads.box_predictor
    assert predictor.image_projection.weight.grad.abs().sum() > 0 and predictor.projection.weight.grad is None
    assert model.roi_heads.box_head.fc1.weight.grad.abs().sum() > 0  # the shared box head learns from both
    model.eval()
    with torch.no_grad():
        inst = model([{"image": b["image"], "height": 128, "width": 144} for b in batch()])[0]["instances"]
    assert len(inst) > 0 and float(inst.scores.max()) <= 1.0
