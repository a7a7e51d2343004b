"""ResNet-FPN with basic blocks (R18 / R34) at any width, for models trained from scratch on CPUs.

Detectron2's ``build_resnet_fpn_backbone`` requires ``RES2_OUT_CHANNELS`` 64 for R18 and R34.
This builder reads the same keys (``MODEL.RESNETS.DEPTH``, ``NORM``, ``STEM_OUT_CHANNELS``,
``RES2_OUT_CHANNELS``, ``OUT_FEATURES``, ``MODEL.BACKBONE.FREEZE_AT``, ``MODEL.FPN.*``) and
allows any width: stage k has ``RES2_OUT_CHANNELS * 2**k`` channels. At width 64 it builds the
same network as Detectron2's builder. The toy world's demo uses width 32 (with FPN 64 channels),
so that it trains on as many images as the full-width table within its time budget on 2 CPU cores
(figures: benchmarks/README.md).
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

__all__ = ["build_basic_resnet_fpn_backbone"]

BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


def build_basic_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in BLOCKS_PER_STAGE:
        raise ValueError(f"build_basic_resnet_fpn_backbone builds MODEL.RESNETS.DEPTH 18 or 34 (basic blocks), "
                         f"not {r.DEPTH}: use build_resnet_fpn_backbone for deeper ResNets")
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages, in_channels = [], r.STEM_OUT_CHANNELS
    for k, num_blocks in enumerate(BLOCKS_PER_STAGE[r.DEPTH]):
        out_channels = r.RES2_OUT_CHANNELS * 2 ** k
        stages.append(ResNet.make_stage(block_class=BasicBlock, num_blocks=num_blocks,
                                        stride_per_block=[1 if k == 0 else 2] + [1] * (num_blocks - 1),
                                        in_channels=in_channels, out_channels=out_channels, norm=r.NORM))
        in_channels = out_channels
    return ResNet(stem, stages, out_features=r.OUT_FEATURES).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_basic_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    return FPN(bottom_up=build_basic_resnet(cfg, input_shape), in_features=cfg.MODEL.FPN.IN_FEATURES,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
