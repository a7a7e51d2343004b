"""The ViLD trainer: Detectron2's ``DefaultTrainer`` with open-vocabulary evaluators."""
import os

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import COCOEvaluator, LVISEvaluator

from ..config import add_vild_config

__all__ = ["ViLDTrainer", "setup_cfg"]


class ViLDTrainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        if evaluator_type == "lvis":
            return LVISEvaluator(dataset_name, output_dir=output_folder,
                                 max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
        if evaluator_type == "coco":
            return COCOEvaluator(dataset_name, output_dir=output_folder)
        raise ValueError(f"dataset {dataset_name} has evaluator_type {evaluator_type!r}; "
                         "vild_d2 evaluates 'lvis' and 'coco' datasets")


def setup_cfg(args):
    """Config from ``--config-file`` and ``opts`` with the ViLD keys; Detectron2's default setup."""
    cfg = get_cfg()
    add_vild_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
