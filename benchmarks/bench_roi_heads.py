"""Training-step and inference time of each ViLD mode against StandardROIHeads (class-agnostic
box and mask, same config), whole models on synthetic batches with random cached regions, measured
side by side in one process on CPU.

    python -m benchmarks.bench_roi_heads [--config-file CFG] [--iters 5] [--rounds 3]

Variants are interleaved round by round; each figure is the median over rounds of the mean
time per iteration. Ratios are against the baseline of the same run.
"""
import argparse
import tempfile

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from benchmarks.harness import interleave
from vild_d2.clip_model import clip_identity
from vild_d2.engine import load_config
from vild_d2.modeling import MODES
from vild_d2.text_classifier import save_text_classifier


def make_batch(n, size, num_regions, dim, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        gt = Instances((size, size))
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        boxes = torch.cat([xy, xy + size * 0.1 + torch.rand(3, 2, generator=g) * size * 0.3], 1)
        gt.gt_boxes = Boxes(boxes)
        gt.gt_classes = torch.randint(0, num_classes, (3,), generator=g)
        masks = torch.zeros(3, size, size, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[i, y0:y1, x0:x1] = True
        gt.gt_masks = BitMasks(masks)
        regions = Instances((size, size))
        xy = torch.rand(num_regions, 2, generator=g) * size * 0.7
        far = xy + 8 + torch.rand(num_regions, 2, generator=g) * size * 0.3
        regions.proposal_boxes = Boxes(torch.cat([xy, far], 1))
        regions.clip_embeds = torch.randn(num_regions, dim, generator=g).half()
        image = torch.randint(0, 255, (3, size, size), generator=g, dtype=torch.uint8)
        out.append({"image": image, "instances": gt, "clip_regions": regions, "height": size, "width": size})
    return out


def build_cfg(base, variant, tmp):
    cfg = load_config(base)  # registers the config's datasets (DATASETS.VILD.REGISTER)
    cfg.MODEL.DEVICE = "cpu"
    # Every variant keeps exactly DETECTIONS_PER_IMAGE boxes, so inference does equal mask work.
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    if variant == "standard":
        cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
        cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        return cfg
    cfg.MODEL.VILD.MODE = variant
    ident = clip_identity(cfg.MODEL.VILD.CLIP_MODEL)
    for key, ds in (("TEXT_EMBEDDINGS", cfg.DATASETS.TRAIN[0]), ("TEST_TEXT_EMBEDDINGS", cfg.DATASETS.TEST[0])):
        names = MetadataCatalog.get(ds).thing_classes
        emb = np.random.default_rng(0).normal(size=(len(names), 512 if "lvis" in ds else 64)).astype(np.float32)
        cfg.MODEL.VILD[key] = str(save_text_classifier(f"{tmp}/{variant}_{key}.npy", emb, names, {"clip": ident}))
    return cfg


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="configs/toy/Base-ViLD-Toy-R18-FPN.yaml")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--image-size", type=int, default=144)
    args = p.parse_args()
    torch.manual_seed(0)
    variants = ["standard", *MODES]
    runners = {}
    with tempfile.TemporaryDirectory() as tmp, EventStorage():
        for v in variants:
            cfg = build_cfg(args.config_file, v, tmp)
            model = build_model(cfg)
            opt = build_optimizer(cfg, model)
            data = make_batch(cfg.SOLVER.IMS_PER_BATCH, args.image_size, cfg.MODEL.VILD.NUM_CACHED_PROPOSALS,
                              64 if v == "standard" else model.roi_heads.box_predictor.projection.out_features,
                              cfg.MODEL.ROI_HEADS.NUM_CLASSES)
            test_data = [{"image": d["image"], "height": d["height"], "width": d["width"]} for d in data]

            def train_step(model=model, opt=opt, data=data):
                model.train()
                loss = sum(model(data).values())
                opt.zero_grad()
                loss.backward()
                opt.step()

            def infer_step(model=model, data=test_data):
                model.eval()
                with torch.no_grad():
                    model(data)
            train_step(), infer_step()  # warm-up
            for phase, step in (("train", train_step), ("infer", infer_step)):
                runners[v, phase] = lambda step=step: [step() for _ in range(args.iters)]
        times = interleave(runners, args.rounds).stats(scale=1 / args.iters)  # seconds per iteration
    base_train, base_inf = (times["standard", phase]["median_s"] for phase in ("train", "infer"))
    print(f"config {args.config_file}, batch {cfg.SOLVER.IMS_PER_BATCH} x {args.image_size}px, "
          f"M={cfg.MODEL.VILD.NUM_CACHED_PROPOSALS} cached regions/image, torch threads {torch.get_num_threads()}")
    print(f"{'variant':10s} {'train s/it':>10s} {'ratio':>6s} {'infer s/it':>10s} {'ratio':>6s}")
    for v in variants:
        tr, inf = (times[v, phase]["median_s"] for phase in ("train", "infer"))
        print(f"{v:10s} {tr:10.3f} {tr / base_train:6.2f} {inf:10.3f} {inf / base_inf:6.2f}")


if __name__ == "__main__":
    main()
