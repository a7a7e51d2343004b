"""Evaluation and diagnostics: the open-vocabulary COCO evaluator, a fast LVIS evaluator, proposal recall,
where detections land, and how well region embeddings (the model's and the cached CLIP targets) name objects."""
from .coco_ov import OVCOCOEvaluator
from .detections import class_subset_ap, confident_detection_breakdown, novel_object_naming
from .embeddings import distillation_fit, object_embedding_accuracy
from .lvis_fast import LVISFastEvaluator, build_lvis_evaluator
from .recall import proposal_hits, recall_summary
from .region_cache import cached_embedding_accuracy

__all__ = ["OVCOCOEvaluator", "LVISFastEvaluator", "build_lvis_evaluator", "class_subset_ap",
           "confident_detection_breakdown", "novel_object_naming", "distillation_fit", "object_embedding_accuracy",
           "proposal_hits", "recall_summary", "cached_embedding_accuracy"]
