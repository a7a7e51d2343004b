"""ViLD model components, registered in Detectron2's registries on import."""
from .backbone import build_basic_resnet_fpn_backbone
from .meta_arch import ViLDRCNN
from .roi_heads import ViLDROIHeads
from .output_layers import MODES, ViLDOutputLayers

__all__ = ["MODES", "build_basic_resnet_fpn_backbone", "ViLDOutputLayers", "ViLDRCNN", "ViLDROIHeads"]
