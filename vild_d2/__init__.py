"""ViLD (open-vocabulary detection via vision and language knowledge distillation) for Detectron2.

``import vild_d2`` registers everything: config keys (``add_vild_config``), datasets and,
model components (``ViLDRCNN``, ``ViLDROIHeads``).
"""
from .compat import patch_lvis_numpy, silence_known_warnings
from .config import add_vild_config
from . import data, modeling, toy  # noqa: F401  (registers datasets and model components)

patch_lvis_numpy()
silence_known_warnings()

__all__ = ["add_vild_config"]
