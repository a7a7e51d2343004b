"""The ViLD trainer: Detectron2's ``DefaultTrainer`` with the ViLD data mapper, open-vocabulary
evaluators, a per-dataset inference vocabulary and a one-table summary (AP, APr, APc, APf)."""
import contextlib
import logging
import os
from collections import OrderedDict

import detectron2.engine.defaults as d2_defaults
import torch
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from tabulate import tabulate

from ..artifacts import write_json
from ..data import ViLDDatasetMapper
from ..evaluation.coco_ov import OVCOCOEvaluator
from ..evaluation.lvis_fast import build_lvis_evaluator
from ..locking import exclusive
from ..modeling.pretrained import check_backbone_init
from ..modeling.vocabulary import set_dataset_vocabulary
from .amp import amp_trainer_for
from .checkpoint import GatherRandomStates, RandomStates, VerifiedCheckpointer
from .samplers import build_training_sampler

logger = logging.getLogger(__name__)

__all__ = ["ViLDTrainer", "summary_table", "check_norms_fit_device"]


@contextlib.contextmanager
def _cpu_ddp():
    """DefaultTrainer passes ``device_ids=[local_rank]`` to DDP, which DDP rejects for CPU models
    (multi-process gloo runs); for those, wrap with ``device_ids=None`` instead."""
    original = d2_defaults.create_ddp_model

    def create(model, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class ViLDTrainer(DefaultTrainer):
    def __init__(self, cfg):
        with _cpu_ddp(), amp_trainer_for(cfg.MODEL.DEVICE):
            super().__init__(cfg)

    def build_hooks(self):
        # DefaultTrainer made a DetectionCheckpointer just before; its hooks are to save through ours
        old, states = self.checkpointer, RandomStates()
        self.checkpointer = VerifiedCheckpointer(old.model, old.save_dir, rng=states, **old.checkpointables)
        # first: every rank's random states are gathered before the main process's checkpointer saves
        return [GatherRandomStates(states, self.cfg.SOLVER.CHECKPOINT_PERIOD)] + super().build_hooks()

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume)
        sampler = getattr(self.data_loader, "vild_sampler", None)
        if sampler is not None:  # continue the data stream where the checkpoint left it
            sampler.skip = self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        # Start the data loader now, outside the random stream: creating its iterator draws a seed,
        # which a run resumed after its checkpoint would otherwise draw from the restored state.
        with torch.random.fork_rng(devices=[]):
            self._trainer._data_loader_iter  # noqa: B018  (SimpleTrainer creates the iterator on first access)

    def train(self):
        # one training per OUTPUT_DIR: a second job would overwrite its checkpoints
        with exclusive(self.cfg.OUTPUT_DIR, "training") if comm.is_main_process() else contextlib.nullcontext():
            return super().train()

    @classmethod
    def build_optimizer(cls, cfg, model):
        if cfg.MODEL.VILD.OPTIMIZER == "SGD":
            return super().build_optimizer(cfg, model)
        if cfg.MODEL.VILD.OPTIMIZER != "AdamW":
            raise ValueError(f"MODEL.VILD.OPTIMIZER must be 'SGD' or 'AdamW', got {cfg.MODEL.VILD.OPTIMIZER!r}")
        params = get_default_optimizer_params(model, base_lr=cfg.SOLVER.BASE_LR,
                                              weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
                                              bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
                                              weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
        # fused: one kernel for all tensors instead of a Python loop over them (CPU and CUDA)
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR,
                                                                  weight_decay=cfg.SOLVER.WEIGHT_DECAY, fused=True))

    @classmethod
    def build_model(cls, cfg):
        check_norms_fit_device(cfg)  # training and --eval-only both build the model here
        check_backbone_init(cfg)  # ImageNet weights loaded into a backbone of their own convention
        return super().build_model(cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = ViLDDatasetMapper(cfg, is_train=True)
        records = training_records(cfg, mapper)
        sampler = build_training_sampler(cfg, records)  # DATALOADER.SAMPLER_TRAIN, able to resume mid-stream
        loader = build_detection_train_loader(cfg, mapper=mapper, dataset=records, sampler=sampler)
        loader.vild_sampler = sampler  # resume_or_load sets where the stream starts
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=ViLDDatasetMapper(cfg, is_train=False))

    @staticmethod
    def inference_folder(cfg, dataset_name: str) -> str:
        """Where the evaluation of ``dataset_name`` writes its predictions and results."""
        return os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or cls.inference_folder(cfg, dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        # tasks from the config, not guessed from the predictions: a model that detects nothing
        # still reports (NaN) mask rows instead of silently dropping them
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        if evaluator_type == "lvis":  # MODEL.VILD.LVIS_EVALUATOR: faster-coco-eval's LVIS mode, or the lvis API
            return build_lvis_evaluator(dataset_name, tasks=tasks, output_dir=output_folder,
                                        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                                        backend=cfg.MODEL.VILD.LVIS_EVALUATOR)
        if evaluator_type == "coco_ov":
            return OVCOCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder)
        if evaluator_type == "coco":
            return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder)
        raise ValueError(f"dataset {dataset_name} has evaluator_type {evaluator_type!r}; "
                         "vild_d2 evaluates 'lvis', 'coco_ov' and 'coco' datasets")

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = OrderedDict()
        for idx, name in enumerate(cfg.DATASETS.TEST):
            set_dataset_vocabulary(model, cfg, name)
            one = cfg.clone()
            one.defrost()
            one.DATASETS.TEST = (name,)
            # one dataset: DefaultTrainer.test returns its results unwrapped
            results[name] = super().test(one, model, [evaluators[idx]] if evaluators else None)
        if comm.is_main_process() and results:
            logger.info("ViLD evaluation summary:\n%s", summary_table(results))
            write_json(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), results)
        return results


def _has_box(record: dict) -> bool:
    return any(not a.get("iscrowd", 0) for a in record["annotations"])


def training_records(cfg, mapper: ViLDDatasetMapper):
    """The training images. ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` drops images without a usable
    (non-crowd) box, except, with ``DATASETS.VILD.KEEP_IMAGES_WITH_REGIONS``, those with cached CLIP
    regions: an image whose objects are all novel (their labels removed in the base split) still
    teaches ViLD-image through the cache."""
    if cfg.MODEL.LOAD_PROPOSALS or cfg.MODEL.KEYPOINT_ON:
        raise ValueError("ViLD trains from RPN proposals without keypoints: set MODEL.LOAD_PROPOSALS and "
                         "MODEL.KEYPOINT_ON to False")
    records = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    if mapper.region_cache_dir:  # a cache of other data, settings or CLIP is refused before training starts
        mapper.check_cache_covers([r["image_id"] for r in records])
    if not cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        return records
    cached = mapper.cache if mapper.region_cache_dir and cfg.DATASETS.VILD.KEEP_IMAGES_WITH_REGIONS else ()
    kept = [r for r in records if _has_box(r) or r["image_id"] in cached]
    logger.info("training images: %d of %d kept, %d of them without a usable box but with cached CLIP regions",
                len(kept), len(records), sum(not _has_box(r) for r in kept))
    if not kept:
        raise ValueError(f"no image of {list(cfg.DATASETS.TRAIN)} has a usable box or cached regions: check the "
                         "dataset's annotations, or set DATALOADER.FILTER_EMPTY_ANNOTATIONS False")
    return kept


def summary_table(results) -> str:
    """One table: a row per (dataset, task) with AP, APr, APc, APf (LVIS) or AP50 novel/base/all."""
    rows = []
    for dataset, tasks in results.items():
        for task in ("segm", "bbox"):
            r = tasks.get(task)
            if r is None:
                continue
            keys = ("AP", "APr", "APc", "APf") if "APr" in r else ("AP", "AP50_novel", "AP50_base", "AP50_all")
            rows.append([dataset, task, *[f"{r.get(k, float('nan')):.1f}" for k in keys]])
    lvis = any("APr" in t.get("bbox", {}) for t in results.values())
    header = ["dataset", "task", "AP", "APr", "APc", "APf"] if lvis else \
        ["dataset", "task", "AP", "AP50 novel", "AP50 base", "AP50 all"]
    return tabulate(rows, headers=header, tablefmt="pipe")


def check_norms_fit_device(cfg) -> None:
    """SyncBN synchronises through CUDA: several CPU processes (gloo) cannot run it."""
    keys = {"MODEL.RESNETS.NORM": cfg.MODEL.RESNETS.NORM, "MODEL.FPN.NORM": cfg.MODEL.FPN.NORM,
            "MODEL.ROI_BOX_HEAD.NORM": cfg.MODEL.ROI_BOX_HEAD.NORM,
            "MODEL.ROI_MASK_HEAD.NORM": cfg.MODEL.ROI_MASK_HEAD.NORM}
    sync = [k for k, v in keys.items() if v in ("SyncBN", "nnSyncBN", "naiveSyncBN")]
    if sync and comm.get_world_size() > 1 and not cfg.MODEL.DEVICE.startswith("cuda"):
        raise ValueError(f"{', '.join(sync)} = SyncBN needs GPUs, but this job runs {comm.get_world_size()} processes "
                         f"on {cfg.MODEL.DEVICE}: set them to GN (e.g. --overlay configs/overlays/CPU-rehearsal.yaml) "
                         "or run one process")
