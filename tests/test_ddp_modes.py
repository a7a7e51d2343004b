"""Every ViLD mode under DDP: 3 iterations in 2 processes (gloo), as ``train_net.py --num-gpus 2``
runs them, so a parameter without gradient in some step (DDP stops at the next iteration) or a
rank-dependent branch fails here; and every parameter gets a gradient in one process."""
import json
import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from vild_d2.artifacts import write_json
from vild_d2.clip_model import clip_identity, load_clip
from vild_d2.engine import ViLDTrainer, launch, load_config
from vild_d2.engine.checkpoint import RandomStates
from vild_d2.region_cache.builder import RegionCacheSettings, build_region_cache

from .helpers import INSTANT, random_classifier
from .test_amp import batch

TRAIN = "tiny_toy_train_base"
# name: config overrides; the one-box-head ensemble is the paper's ensemble with one box head
VARIANTS = {
    "text": ["MODEL.VILD.MODE", "text"],
    "image": ["MODEL.VILD.MODE", "image"],
    "vild": ["MODEL.VILD.MODE", "vild"],
    "ensemble": ["MODEL.VILD.MODE", "ensemble"],
    "ensemble, one box head": ["MODEL.VILD.MODE", "ensemble", "MODEL.VILD.ENSEMBLE_IMAGE_BOX_HEAD", False],
}
SMALL = ["MODEL.BACKBONE.NAME", "build_basic_resnet_fpn_backbone", "MODEL.RESNETS.STEM_OUT_CHANNELS", 32,
         "MODEL.RESNETS.RES2_OUT_CHANNELS", 32, "MODEL.FPN.OUT_CHANNELS", 64,
         "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 16, "INPUT.MIN_SIZE_TRAIN", (96,), "INPUT.MAX_SIZE_TRAIN", 128]


@pytest.fixture(scope="module")
def setting(toy_env, tmp_path_factory):
    """Config overrides naming a random classifier and a region cache of the tiny toy world."""
    base = tmp_path_factory.mktemp("ddp")
    clip = str(toy_env / "clip.pt")
    model = load_clip(clip)
    records = DatasetCatalog.get(TRAIN)

    def proposals(record, image):  # the ground-truth boxes and the whole image
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in record["annotations"])]
        boxes.append([0, 0, image.shape[1], image.shape[0]])
        return np.array(boxes, np.float32), np.linspace(1, 0, len(boxes)).astype(np.float32)

    build_region_cache(base / "cache", records, proposals, model, clip, RegionCacheSettings(num_proposals=4),
                       dataset_name=TRAIN, num_workers=0)
    classifier = random_classifier(base / "train.npy", MetadataCatalog.get(TRAIN).thing_classes,
                                   dim=int(model.text_projection.shape[1]), clip=clip_identity(clip))
    return ["MODEL.VILD.CLIP_MODEL", clip, "MODEL.VILD.TEXT_EMBEDDINGS", classifier, "MODEL.VILD.REGION_CACHE_DIR",
            str(base / "cache"), "MODEL.VILD.NUM_CACHED_PROPOSALS", 4, "DATASETS.TRAIN", (TRAIN,), "DATASETS.TEST", (),
            "SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 2, "SEED", 0, *SMALL], base


def _cfg(opts, variant, out):
    return load_config(INSTANT, [*opts, *VARIANTS[variant], "OUTPUT_DIR", str(out / variant.replace(" ", "_"))],
                       register=False)


def _train_every_mode(world_root, opts, out):
    """In each process: train every variant for 3 iterations; rank 0 writes what each rank saw."""
    from vild_d2.kit.toy import register_toy_world

    if TRAIN not in DatasetCatalog.list():  # a spawned process imports the package anew
        register_toy_world(world_root, prefix="tiny_toy")
    report = {}
    for variant in VARIANTS:
        t0 = time.perf_counter()
        cfg = _cfg(opts, variant, out)
        seed_all_rng(cfg.SEED + comm.get_rank())
        trainer = ViLDTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        model = trainer.model.module
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        digest = float(sum(p.detach().double().sum() for p in model.parameters()))
        report[variant] = {"iterations": trainer.iter, "seconds": time.perf_counter() - t0,
                           "wrapped": type(trainer.model).__name__, "no_grad": comm.all_gather(no_grad),
                           "digests": comm.all_gather(digest)}
    # each rank's random states survive a checkpoint: saved by all, restored by each to its own
    saved = torch.load(out / "text/model_final.pth", weights_only=True)["rng"]
    torch.manual_seed(100)
    RandomStates().load_state_dict(saved)
    restored = torch.equal(torch.get_rng_state(), saved["ranks"][comm.get_rank()]["torch"])
    report["random states"] = {"ranks saved": len(saved["ranks"]), "restored": comm.all_gather(restored),
                               "differ": not torch.equal(saved["ranks"][0]["torch"], saved["ranks"][1]["torch"])}
    if comm.is_main_process():
        write_json(out / "report.json", dict(report, backend=dist.get_backend(),
                                             visible_gpus=os.environ.get("CUDA_VISIBLE_DEVICES")))


def test_every_mode_trains_in_two_gloo_processes(toy_env, setting):
    from vild_d2.kit.toy import TOY_PREFIX

    opts, out = setting
    launch(_train_every_mode, 2, device="cpu", args=(str(toy_env / TOY_PREFIX), opts, out))
    report = json.loads((out / "report.json").read_text())
    assert report.pop("backend") == "gloo" and report.pop("visible_gpus") == ""  # a CPU job sees no GPU
    assert report.pop("random states") == {"ranks saved": 2, "restored": [True, True], "differ": True}
    for variant, r in report.items():
        assert r["iterations"] == 3 and r["wrapped"] == "DistributedDataParallel", variant
        assert r["no_grad"] == [[], []], variant
        assert r["digests"][0] == r["digests"][1], variant  # the ranks hold the same weights


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(setting, variant, tmp_path):
    opts, _ = setting
    cfg = _cfg(opts, variant, tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with EventStorage():
        sum(model(batch()).values()).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
