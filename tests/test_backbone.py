"""build_basic_resnet_fpn_backbone: Detectron2's R18-FPN at width 64, any other width, bad depths."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

from vild_d2.modeling import build_basic_resnet_fpn_backbone


def r18_cfg(width=64, fpn=128):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = width
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = width
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = fpn
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return cfg


def test_width_64_is_detectron2s_r18_fpn():
    cfg = r18_cfg()
    torch.manual_seed(0)
    theirs = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    torch.manual_seed(0)
    ours = build_basic_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    a, b = theirs.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same modules built in the same order from one seed


def test_half_width_shapes_and_strides():
    backbone = build_basic_resnet_fpn_backbone(r18_cfg(width=32, fpn=64), ShapeSpec(channels=3))
    out = backbone(torch.zeros(1, 3, 128, 160))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 64, 32, 40), "p3": (1, 64, 16, 20), "p4": (1, 64, 8, 10), "p5": (1, 64, 4, 5), "p6": (1, 64, 2, 3)}
    assert backbone.bottom_up.res5[0].conv1.out_channels == 256
    assert sum(p.numel() for p in backbone.parameters()) == 2_977_568  # width 64: 11,890,240


def test_deep_resnets_are_refused():
    cfg = r18_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    with pytest.raises(ValueError, match="DEPTH 18 or 34"):
        build_basic_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
