"""ViLD model components, registered in Detectron2's registries on import."""
from .meta_arch import ViLDRCNN
from .roi_heads import ViLDROIHeads
from .vild_predictor import MODES, ViLDOutputLayers

__all__ = ["MODES", "ViLDOutputLayers", "ViLDRCNN", "ViLDROIHeads"]
