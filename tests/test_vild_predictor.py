"""ViLDOutputLayers: losses, gradients, ensemble and vocabulary swap, with hand-computed values."""
import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from vild_d2.modeling import ViLDOutputLayers


@pytest.fixture(autouse=True)
def event_storage():
    with EventStorage():  # the losses log Detectron2's classification statistics to it
        yield

E2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # K=2 classes, D=2


def make(mode="vild", temperature=0.5, train=E2, test=E2, novel=(), **kw):
    torch.manual_seed(0)
    p = ViLDOutputLayers(ShapeSpec(channels=4), box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
                         train_embeddings=train, test_embeddings=test, novel_class_ids=novel, mode=mode,
                         temperature=temperature, **kw)
    with torch.no_grad():
        p.projection.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        p.projection.bias.zero_()
        if p.bg_embedding is not None:  # ViLD-image has none
            p.bg_embedding.copy_(torch.tensor([-1.0, 0.0]))
        if p.image_projection is not None:
            p.image_projection.weight.copy_(torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 1.0]]))
            p.image_projection.bias.zero_()
    return p


def proposals(gt_classes):
    inst = Instances((32, 32))
    n = len(gt_classes)
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]] * n))
    inst.gt_boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]] * n))
    inst.gt_classes = torch.tensor(gt_classes, dtype=torch.long)
    return [inst]


def test_text_loss_by_hand():
    p = make(temperature=0.5)
    x = torch.tensor([[1.0, 0, 0, 0], [0, 3.0, 0, 0]])  # embeddings (1,0) and (0,1)
    logits, deltas = p(x)
    # logits of region 0 = [1, 0, -1] / 0.5 = [2, 0, -2]; gt 0 -> log(1 + e^-2 + e^-4)
    assert logits[0].tolist() == pytest.approx([2.0, 0.0, -2.0])
    losses = p.losses((logits, deltas), proposals([0, 2]))  # region 1: background (index K=2)
    region1 = math.log(2 + math.exp(2.0))  # logits [0, 2, 0], gt background -> log(1 + e^2 + 1)
    assert losses["loss_cls"].item() == pytest.approx((0.142931 + region1) / 2, abs=1e-5)
    assert set(losses) == {"loss_cls", "loss_box_reg"}


def test_temperature_and_text_weight_are_honoured():
    x = torch.tensor([[1.0, 0, 0, 0]])
    logits, deltas = make(temperature=0.25, text_loss_weight=3.0)(x)
    assert logits[0].tolist() == pytest.approx([4.0, 0.0, -4.0])
    loss = make(temperature=0.25, text_loss_weight=3.0).losses((logits, deltas), proposals([0]))["loss_cls"]
    assert loss.item() == pytest.approx(3 * math.log(1 + math.exp(-4) + math.exp(-8)), abs=1e-5)


def test_image_loss_by_hand():
    p = make()
    x = torch.tensor([[1.0, 0, 0, 0], [2.0, 0, 0, 0]])
    clip = torch.tensor([[0.0, 2.0], [3.0, 0.0]])  # normalised: (0,1) and (1,0)
    # |(1,0)-(0,1)|_1 = 2 and 0 -> mean 1
    assert p.image_loss(x, clip).item() == pytest.approx(1.0)


def test_image_mode_has_no_text_loss_and_ensemble_trains_its_own_head():
    x = torch.tensor([[1.0, 0, 0, 0]])
    p = make(mode="image")
    assert set(p.losses(p(x), proposals([0]))) == {"loss_box_reg"}
    assert p.bg_embedding is None and p(x)[0] is None  # no background score, no text logits
    e = make(mode="ensemble")
    e.image_loss(torch.tensor([[0.0, 0, 1.0, 1.0]]), torch.tensor([[1.0, 0.0]])).backward()
    assert e.image_projection.weight.grad is not None and e.projection.weight.grad is None


def test_gradients_reach_background_and_projection_not_text_embeddings():
    p = make()
    x = torch.randn(5, 4)
    sum(p.losses(p(x), proposals([0, 1, 2, 0, 2])).values()).backward()
    assert p.bg_embedding.grad is not None and p.bg_embedding.grad.abs().sum() > 0
    assert p.projection.weight.grad.abs().sum() > 0
    assert not p.train_embeddings.requires_grad and p.train_embeddings.grad is None
    assert all(param is not p.train_embeddings for param in p.parameters())
    assert "train_embeddings" not in p.state_dict() and "test_embeddings" not in p.state_dict()


def test_empty_proposals_give_finite_losses():
    p = make()
    empty = Instances((32, 32), proposal_boxes=Boxes(torch.zeros(0, 4)), gt_boxes=Boxes(torch.zeros(0, 4)),
                      gt_classes=torch.zeros(0, dtype=torch.long))
    losses = p.losses(p(torch.zeros(0, 4)), [empty])
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() == 0.0


def test_ensemble_formula_number_by_number():
    lam = 2.0 / 3.0
    p = make(mode="ensemble", temperature=1.0, novel=(1,)).eval()
    x = torch.tensor([[0.6, 0.8, 1.0, 0.0]])  # text emb (0.6, 0.8); image emb (1, 0)
    probs, _ = p(x, image_x=x)  # the same features stand in for the image box head's
    with pytest.raises(ValueError, match="image_x"):
        p(x)
    t = [0.6, 0.8, -0.6]  # cosine with class 0, class 1, background (-1, 0)
    z = sum(math.exp(v) for v in t)
    p_text = [math.exp(v) / z for v in t]
    zi = math.exp(1.0) + math.exp(0.0)
    p_img = [math.exp(1.0) / zi, math.exp(0.0) / zi]
    base = p_text[0] ** lam * p_img[0] ** (1 - lam)  # class 0: base
    novel = p_text[1] ** (1 - lam) * p_img[1] ** lam  # class 1: novel
    assert probs[0, :2].tolist() == pytest.approx([base, novel], rel=1e-5)


def test_vocabulary_swap_changes_k_and_indexes_new_classes():
    p = make().eval()
    new = torch.nn.functional.normalize(torch.tensor([[1.0, 1], [1, -1], [-1, 1], [0, 1], [1, 0]]), dim=1)
    p.set_vocabulary(new, [f"c{i}" for i in range(5)], novel_class_ids=[3, 4])
    probs, _ = p(torch.tensor([[0.0, 1.0, 0, 0]]))
    assert probs.shape == (1, 6) and p.num_classes == 5
    assert probs[0, :5].argmax().item() == 3  # (0, 1) is closest to new class 3
    p.train()
    assert p.num_classes == 2  # training keeps the base vocabulary
    with pytest.raises(ValueError, match="D=2"):
        p.set_vocabulary(torch.randn(4, 3))


def test_class_specific_regression_rejected():
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        make(cls_agnostic_bbox_reg=False)
