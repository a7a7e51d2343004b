"""The parts of ``python -m benchmarks.bench_lvis_recipe``; each runs in its own process (``--part NAME``)
with ``$DETECTRON2_DATASETS`` set before this module is imported, and returns a JSON-able dict."""
import contextlib
import cProfile
import json
import pstats
import shutil
import statistics
from pathlib import Path

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import vild_d2.region_cache.builder as cache_builder
from benchmarks.harness import Stopwatch, Timers, interleave, stats, timed
from vild_d2.clip_model import clip_identity, load_clip
from vild_d2.data import ViLDDatasetMapper
from vild_d2.engine import ViLDTrainer, load_config
from vild_d2.kit.mini_lvis import MiniLVISSettings, build_mini_lvis
from vild_d2.kit.random_clip import save_random_clip
from vild_d2.region_cache.builder import RegionCacheSettings, build_region_cache
from vild_d2.region_cache.proposals import detector_proposal_source
from vild_d2.text_classifier import encode_classes, read_templates, save_text_classifier
from vild_d2.vocabularies import builtin_vocabulary

OVERLAY = "configs/overlays/CPU-rehearsal.yaml"
CONFIGS = {m: f"configs/LVIS-OV/vild_{m}_R50_FPN.yaml" for m in ("text", "image", "ensemble")}
CONFIGS["vild"] = "configs/LVIS-OV/vild_R50_FPN.yaml"
MODES = ("text", "image", "vild", "ensemble")
BASELINE = "mask_rcnn"


class Ctx:
    """Paths under ``--work`` and the device settings every part shares."""

    def __init__(self, args):
        self.args, self.device, self.work = args, args.device, Path(args.work).resolve()
        self.clip = str(self.work / "clip_vit_b32.pt")
        self.text = {k: str(self.work / f"text/random_{k}.npy") for k in ("base", "all")}
        self.rpn_weights = str(self.work / "rpn_random.pth")
        self.cache = self.work / "region_cache"
        self.cuda = self.device.startswith("cuda")

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self):
        if not self.args.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=torch.float16 if self.cuda else torch.bfloat16)

    def cfg(self, variant: str, num_classes: int = 866):
        """LVIS config of a ViLD mode, or the class-agnostic Mask R-CNN baseline (``BASELINE``)."""
        opts = ["MODEL.DEVICE", self.device, "MODEL.VILD.CLIP_MODEL", self.clip,
                "MODEL.VILD.TEXT_EMBEDDINGS", self.text["base"], "MODEL.VILD.TEST_TEXT_EMBEDDINGS", self.text["all"],
                "MODEL.VILD.REGION_CACHE_DIR", str(self.cache), "MODEL.VILD.NUM_CACHED_PROPOSALS", "300",
                "SOLVER.IMS_PER_BATCH", str(self.args.batch), "TEST.DETECTIONS_PER_IMAGE", "300",
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1e-4", "SOLVER.AMP.ENABLED", str(self.args.amp)]
        if variant == BASELINE:
            opts += ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
                     "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes)]
        return load_config(CONFIGS["text" if variant == BASELINE else variant], opts + list(self.args.opts),
                           [OVERLAY])

    def build(self, variant: str, num_classes: int = 866):
        torch.manual_seed(0)  # same backbone, RPN and box-head initialisation in every variant
        cfg = self.cfg(variant, num_classes)
        return cfg, ViLDTrainer.build_model(cfg)


def rounds(ctx: Ctx, runners, repeats: int):
    """One warm-up round, then every variant once per round, in order (device-synchronised)."""
    return interleave(runners, repeats, warmup=1, sync=ctx.sync, log="  round {round}{warm} {name}: {wall:.2f} s")


def part_prep(ctx: Ctx):
    """Mini-LVIS world, random ViT-B/32 CLIP, random text classifiers, random proposal network."""
    build_mini_lvis(ctx.work / "world", MiniLVISSettings())
    save_random_clip(ctx.clip, "ViT-B/32")
    ident = clip_identity(ctx.clip)
    rng = np.random.default_rng(0)
    for key, dataset in (("base", "lvis_v1_train_base"), ("all", "lvis_v1_val")):
        if not Path(ctx.text[key]).is_file():
            names = MetadataCatalog.get(dataset).thing_classes
            emb = rng.normal(size=(len(names), 512)).astype(np.float32)
            save_text_classifier(ctx.text[key], emb / np.linalg.norm(emb, axis=1, keepdims=True), names,
                                 {"clip": ident})
    if not Path(ctx.rpn_weights).is_file():
        torch.manual_seed(0)
        cfg = load_config("configs/LVIS-OV/rpn_R50_FPN.yaml", ["MODEL.DEVICE", "cpu", *ctx.args.opts], [OVERLAY])
        torch.save({"model": build_model(cfg).state_dict()}, ctx.rpn_weights)
    return {}


def _train_records(n):
    records = sorted(DatasetCatalog.get("lvis_v1_train_base"), key=lambda r: r["image_id"])
    if len(records) < n:
        raise ValueError(f"--images {n} but the mini-LVIS has {len(records)} training images")
    return records[:n]


def part_cache(ctx: Ctx):
    """Region cache, M = 300 x scales (1.0, 1.5), ViT-B/32, proposals of a random R50-FPN RPN at 1024."""
    records = _train_records(ctx.args.images)
    rpn_cfg = load_config("configs/LVIS-OV/rpn_R50_FPN.yaml", ["MODEL.DEVICE", ctx.device, *ctx.args.opts], [OVERLAY])
    source = detector_proposal_source(rpn_cfg, ctx.rpn_weights, 300, ctx.device)
    model = load_clip(ctx.clip, ctx.device)
    source(records[0], np.zeros((480, 640, 3), np.uint8))  # warm-up: first forwards allocate
    cache_builder.embed_regions(model.visual, torch.zeros(3, 480, 640), torch.tensor([[0.0, 0, 99, 99]] * 8),
                                (1.0, 1.5), "sum", 256)
    shutil.rmtree(ctx.cache, ignore_errors=True)
    timers = Timers(ctx.sync).wrap(cache_builder, "embed_regions", "crop+encode").hook(model.visual, "encoder")
    proposals = timers.timed(source, "proposal network")  # the builder's proposal source
    try:
        wall = timed(lambda: build_region_cache(
            ctx.cache, records, proposals, model, ctx.clip, RegionCacheSettings(num_proposals=300, scales=(1.0, 1.5)),
            "lvis_v1_train_base", num_workers=0), sync=ctx.sync)
    finally:
        timers.remove()
    n, spent = len(records), timers.spent
    proposal_s = spent.get("proposal network", 0.0)
    regions = int(sum(np.load(p)[:, 2].sum() for p in ctx.cache.glob("shard_*/index.npy")))
    files = [p for p in ctx.cache.rglob("*") if p.is_file()]
    return {"images": n, "regions_per_image": regions / n, "crops_per_image": 2 * regions / n,
            "s_per_image": wall / n, "proposal_net_s_per_image": proposal_s / n,
            "crop_encode_s_per_image": spent["crop+encode"] / n, "encoder_s_per_image": spent["encoder"] / n,
            "share_crop_encode_of_wall": spent["crop+encode"] / wall,
            "share_crop_encode_without_proposal_net": spent["crop+encode"] / (wall - proposal_s),
            "bytes_per_image": sum(p.stat().st_size for p in files) / n,
            "array_bytes_per_image": sum(p.stat().st_size for p in files if p.suffix == ".npy") / n,
            "threads": torch.get_num_threads()}


def part_text(ctx: Ctx):
    """Text classifiers with the default templates and every synonym: a sample timed, the rest counted."""
    model = load_clip(ctx.clip, ctx.device)
    templates = read_templates()
    _, synonyms = builtin_vocabulary("lvis")
    freq = [c["frequency"] for c in sorted(LVIS_CATEGORIES, key=lambda c: c["id"])]
    sample = synonyms[::len(synonyms) // ctx.args.text_classes][:ctx.args.text_classes]  # spread over the list
    n_sample = sum(len(s) for s in sample) * len(templates)
    encode_classes(model, sample[:2], templates)  # warm-up
    times = [timed(lambda: encode_classes(model, sample, templates), sync=ctx.sync)
             for _ in range(ctx.args.text_repeats)]
    ms = 1000 * statistics.median(times) / n_sample
    texts = {"base_866": sum(len(s) for s, f in zip(synonyms, freq) if f != "r") * len(templates),
             "all_1203": sum(len(s) for s in synonyms) * len(templates)}
    return {"templates": len(templates), "sample_classes": len(sample), "sample_texts": n_sample,
            "sample": stats(times), "ms_per_text_median": ms, "ms_per_text_min": 1000 * min(times) / n_sample,
            "texts": texts, "projected_s": {k: v * ms / 1000 for k, v in texts.items()}}


def _train_batch(ctx: Ctx):
    """``--batch`` mapped training images (LSJ 1024, seeded) with boxes and cached regions."""
    manifest = ctx.cache / "manifest.json"
    if not manifest.is_file() or json.loads(manifest.read_text())["num_images"] < ctx.args.images:
        print("  no region cache of --images images yet: building it (untimed here)", flush=True)
        part_cache(ctx)
    mapper = ViLDDatasetMapper(ctx.cfg("image"), is_train=True)
    records = [r for r in _train_records(ctx.args.images) if r["annotations"]]
    for seed in range(100):
        np.random.seed(seed)
        torch.manual_seed(seed)
        batch = [mapper(dict(r)) for r in records[:ctx.args.batch]]
        if all(len(d["instances"]) and len(d["clip_regions"]) for d in batch):
            return batch
    raise RuntimeError("no seed gave every image of the batch a box and a cached region")


def part_train(ctx: Ctx):
    data = _train_batch(ctx)
    variants, runners, roi_runners = (BASELINE, *MODES), {}, {}
    scaler = torch.amp.GradScaler(ctx.device.split(":")[0]) if ctx.args.amp and ctx.cuda else None
    with EventStorage():
        base = None
        for v in variants:
            cfg, model = ctx.build(v)
            model.train()
            opt = ViLDTrainer.build_optimizer(cfg, model)

            def step(model=model, opt=opt):
                torch.manual_seed(0)  # same proposal sampling in every variant
                with ctx.autocast():
                    loss = sum(model(data).values())
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                opt.zero_grad(set_to_none=True)
            runners[v] = step
            if base is None:  # fixed features and training proposals for the ROI-heads-alone timing
                with torch.no_grad(), ctx.autocast():
                    images = model.preprocess_image(data)
                    feats = model.backbone(images.tensor)
                    gt = [d["instances"].to(model.device) for d in data]
                    props, _ = model.proposal_generator(images, feats, gt)
                regions = [d["clip_regions"].to(model.device) for d in data]
                base = (images, {k: f.float() for k, f in feats.items()}, props, gt, regions)

            def roi(model=model, v=v, base=base):
                images, feats, props, gt, regions = base
                feats = {k: f.detach().requires_grad_() for k, f in feats.items()}  # backward into features too
                torch.manual_seed(0)
                kw = {} if v == BASELINE else {"clip_regions": regions}
                with ctx.autocast():
                    _, losses = model.roi_heads(images, feats, props, gt, **kw)
                sum(losses.values()).backward()
                model.zero_grad(set_to_none=True)
            roi_runners[v] = roi
        print("training steps:", flush=True)
        steps = rounds(ctx, runners, ctx.args.repeats).stats(BASELINE)
        print("ROI heads alone (forward + backward):", flush=True)
        rois = rounds(ctx, roi_runners, ctx.args.repeats).stats(BASELINE)
    return {"batch": ctx.args.batch, "input_size": list(data[0]["image"].shape[1:]), "step": steps, "roi_heads": rois,
            "gt_per_image": [len(d["instances"]) for d in data],
            "cached_regions_per_image": [len(d["clip_regions"]) for d in data], "threads": torch.get_num_threads()}


NMS = "score filter + per-class NMS"


def split_timers(ctx, model, candidates: list) -> Timers:
    """Timers on the stages of one Detectron2 inference (backbone, RPN, box head(s), NMS, mask head,
    paste); the candidates entering NMS of every call are counted into ``candidates``, outside the timer."""
    import detectron2.modeling.meta_arch.rcnn as rcnn
    h, timers = model.roi_heads, Timers(ctx.sync)

    def count(*args):
        probs = h.box_predictor.predict_probs(*args)
        candidates.append(int(sum((p[:, :-1] > h.box_predictor.test_score_thresh).sum() for p in probs)))
    for module, label in ((model.backbone, "backbone"), (model.proposal_generator, "RPN"),
                          (h.box_pooler, "box head(s)"), (h.box_head, "box head(s)"), (h.box_predictor, "box head(s)"),
                          (getattr(h, "image_box_head", None), "box head(s)")):
        if module is not None:
            timers.hook(module, label)
    for obj, attr, label in ((model, "preprocess_image", "preprocess"), (h.box_predictor, "inference", NMS),
                             (h, "_forward_mask", "mask head"),
                             (rcnn, "detector_postprocess", "paste masks (detector_postprocess)")):
        timers.wrap(obj, attr, label, before=count if label == NMS else None)
    return timers


def part_infer(ctx: Ctx):
    """Inference per image of every variant, stage timers on in every round (the untrained models' score
    distributions differ, so the per-class NMS differs too: totals are also given without it)."""
    records = sorted(DatasetCatalog.get("lvis_v1_val"), key=lambda r: r["image_id"])[:ctx.args.infer_images]
    n, models, runners, splits = len(records), {}, {}, {}
    for v in (BASELINE, *MODES):
        cfg, model = ctx.build(v, num_classes=1203)
        model.eval()
        inputs = [ViLDDatasetMapper(cfg, is_train=False)(dict(r)) for r in records]
        candidates = []
        models[v], splits[v] = (model, inputs, split_timers(ctx, model, candidates)), []

        def run(model=model, inputs=inputs, timers=models[v][2], candidates=candidates, v=v):
            timers.reset()
            candidates.clear()
            with torch.no_grad(), ctx.autocast():
                for x in inputs:
                    model([x])
            splits[v].append(dict(timers.spent, candidates=sum(candidates)))
        runners[v] = run
    print(f"inference ({n} images per round):", flush=True)
    timing = rounds(ctx, runners, ctx.args.repeats)
    out = {"images_per_round": n, "input_size": list(models[BASELINE][1][0]["image"].shape[1:]), "split": {},
           "profile": {}}
    totals = {v: [t / n for t in times] for v, times in timing.wall.items()}
    no_nms = {v: [t - sp[NMS] / n for t, sp in zip(totals[v], splits[v][1:])] for v in totals}  # [0]: warm-up
    out["per_image"] = {v: stats(t, totals[BASELINE]) for v, t in totals.items()}
    out["per_image_without_nms"] = {v: stats(t, no_nms[BASELINE]) for v, t in no_nms.items()}
    for v, sp in splits.items():
        names = [k for k in sp[-1] if k != "candidates"]
        other = [t - sum(r[k] for k in names) / n for t, r in zip(totals[v], sp[1:])]
        stages = dict({k: statistics.median(r[k] for r in sp[1:]) / n for k in names}, other=statistics.median(other))
        out["split"][v] = {"stages_s": stages, "candidates_into_nms_per_image": sp[-1]["candidates"] / n}
    nms = out["split"][BASELINE]
    out["nms_s_per_million_candidates"] = nms["stages_s"][NMS] / max(nms["candidates_into_nms_per_image"], 1) * 1e6
    for v in (BASELINE, "ensemble"):  # where the time goes, by function: one more image each
        model, inputs, timers = models[v]
        timers.remove()
        prof = cProfile.Profile()
        with torch.no_grad(), ctx.autocast():
            prof.runcall(model, [inputs[0]])
        rows = sorted(((tt, nc, f"{Path(f).name}:{ln}({fn})") for (f, ln, fn), (_, nc, tt, _, _)
                       in pstats.Stats(prof).stats.items()), reverse=True)[:10]
        out["profile"][v] = [{"function": name, "tottime_s": tt, "calls": nc} for tt, nc, name in rows]
    return out


def _synthetic_detections(record, rng, num=300):
    """``num`` detections: the ground-truth boxes (right class) plus random boxes, random classes and
    scores; masks are the boxes filled."""
    from detectron2.structures import Boxes, BoxMode, Instances
    h, w = record["height"], record["width"]
    gt = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]],
                  np.float32).reshape(-1, 4)[:num]
    xy = rng.uniform(0, [w - 8, h - 8], (num - len(gt), 2))
    rand = np.concatenate([xy, np.minimum(xy + rng.uniform(8, 300, xy.shape), [w, h])], 1)
    boxes = torch.from_numpy(np.concatenate([gt, rand]).astype(np.float32))
    classes = np.concatenate([[a["category_id"] for a in record["annotations"]][:num],
                              rng.integers(0, 1203, len(rand))])
    ys, xs = torch.arange(h)[None, :, None] + 0.5, torch.arange(w)[None, None, :] + 0.5
    b = boxes[:, :, None, None]
    masks = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
    return Instances((h, w), pred_boxes=Boxes(boxes), scores=torch.from_numpy(rng.uniform(0, 1, num)).float(),
                     pred_classes=torch.from_numpy(classes).long(), pred_masks=masks)


def part_eval(ctx: Ctx):
    """LVISEvaluator (bbox + segm) on a 100-image mini-LVIS val split, 300 synthetic detections per image."""
    from detectron2.evaluation import LVISEvaluator
    build_mini_lvis(ctx.work / "eval_world", MiniLVISSettings(num_train=1, num_val=ctx.args.eval_images))
    records = DatasetCatalog.get("lvis_v1_val")  # contiguous ids: LVIS v1 category id - 1
    inputs = [{"image_id": r["image_id"], "height": r["height"], "width": r["width"]} for r in records]
    proc, ev_times, result = [], [], None
    for _ in range(ctx.args.eval_repeats):
        rng, spent = np.random.default_rng(0), 0.0
        ev = LVISEvaluator("lvis_v1_val", tasks=("bbox", "segm"), output_dir=None, max_dets_per_image=300)
        ev.reset()
        for i, r in zip(inputs, records):
            out = [{"instances": _synthetic_detections(r, rng)}]  # made outside the timer, one image at a time
            with Stopwatch() as sw:
                ev.process([i], out)
            spent += sw.wall
        proc.append(spent)
        with Stopwatch() as sw:
            result = ev.evaluate()
        ev_times.append(sw.wall)
    total = [p + e for p, e in zip(proc, ev_times)]
    k = 100 / len(records)
    return {"images": len(records), "detections_per_image": 300, "process": stats(proc),
            "evaluate": stats(ev_times), "s_per_100_images": stats([t * k for t in total]),
            "AP": {t: r.get("AP") for t, r in (result or {}).items()}}


PARTS = {"prep": part_prep, "cache": part_cache, "text": part_text, "train": part_train, "infer": part_infer,
         "eval": part_eval}
