"""Datasets (registered on import) and data loading for ViLD."""
from . import builtin  # noqa: F401  (registers the LVIS and COCO open-vocabulary datasets)
from .lvis_ov import load_ov_lvis_json, ov_lvis_metadata, register_from_config, register_ov_lvis_instances
from .mapper import ViLDDatasetMapper

__all__ = ["ViLDDatasetMapper", "load_ov_lvis_json", "ov_lvis_metadata", "register_ov_lvis_instances",
           "register_from_config"]
