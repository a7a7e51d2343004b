"""ViLD model components, registered in Detectron2's registries on import."""
from .backbone import build_basic_resnet_fpn_backbone
from .crop_scoring import TEST_SCORES, CropEmbedder
from .meta_arch import ViLDRCNN
from .output_layers import MODES, ViLDOutputLayers
from .roi_heads import ViLDROIHeads

__all__ = ["MODES", "TEST_SCORES", "CropEmbedder", "build_basic_resnet_fpn_backbone", "ViLDOutputLayers", "ViLDRCNN",
           "ViLDROIHeads"]
