"""The steps of ``python -m benchmarks.gpu_check``, built on :mod:`benchmarks.lvis_recipe_parts` (imported
after ``$DETECTRON2_DATASETS`` is set). Each step takes the shared :class:`Run` and a wall-clock deadline
(``time.time()``) and returns a JSON-able dict; ``"ok": False`` in it marks a failed check.
Shapes: N images, M cached regions per image, D the CLIP embedding dimension."""
import argparse
import contextlib
import itertools
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.events import EventStorage

from benchmarks import lvis_recipe_parts as parts
from benchmarks.harness import REPO_ROOT, Stopwatch, interleave
from vild_d2.artifacts import read_json, write_text
from vild_d2.clip_model import load_clip
from vild_d2.crops import embed_regions
from vild_d2.data import ViLDDatasetMapper
from vild_d2.engine import ViLDTrainer
from vild_d2.kit.random_clip import CLIP_ARCHS, save_random_clip
from vild_d2.region_cache import RegionCache
from vild_d2.region_cache.builder import RegionCacheSettings

ONE_BOX = "ensemble_one_box_head"
VARIANTS = (parts.BASELINE, *parts.MODES, ONE_BOX)
# --smoke: a tiny CLIP (embedding dim 512, as the benchmark's random classifiers) under its own name
SMOKE_CLIP = "smoke-ViT-32px"
CLIP_ARCHS.setdefault(SMOKE_CLIP, dict(embed_dim=512, image_resolution=32, vision_layers=1, vision_width=64,
                                       vision_patch_size=16, context_length=77, vocab_size=49408,
                                       transformer_width=64, transformer_heads=1, transformer_layers=1))


class Run:
    """State shared by the steps: the recipe benchmark's Ctx, the trained variants, the checkpoint."""

    def __init__(self, args):
        self.args, self.trainers, self.checkpoint = args, {}, None
        self.ctx = parts.Ctx(argparse.Namespace(device=args.device, work=args.work, amp=True, batch=args.batch,
                                                images=args.images, opts=args.opts))
        if args.smoke:
            self.ctx.clip = str(self.ctx.work / "clip_smoke.pt")

    def cfg(self, v: str):
        """The LVIS config of variant ``v`` (a ViLD mode, ``ONE_BOX`` or the Mask R-CNN baseline)."""
        cfg = self.ctx.cfg("ensemble" if v == ONE_BOX else v)
        cfg.merge_from_list(["MODEL.VILD.ENSEMBLE_IMAGE_BOX_HEAD", v != ONE_BOX, "DATALOADER.NUM_WORKERS", 0,
                             "OUTPUT_DIR", str(self.ctx.work / "train" / v)])
        return cfg


def step_prep(run, deadline):
    """The benchmark's prep; with --smoke its one difference: the tiny CLIP instead of ViT-B/32."""
    arch = SMOKE_CLIP if run.args.smoke else "ViT-B/32"
    with mock.patch.object(parts, "save_random_clip", lambda path, _arch: save_random_clip(path, arch)):
        parts.part_prep(run.ctx)
    return {"clip": run.ctx.clip, "clip_arch": arch}


def _fp32_clip(spec, device):
    return load_clip(spec, "cpu").to(device)  # clip.load on CPU gives float32; moved afterwards


def embedding_sanity(run):
    """Every cached embedding finite and unit-norm; the first image's regions re-embedded by a float32 CLIP."""
    cache, records = RegionCache(run.ctx.cache), parts._train_records(run.args.images)
    emb = np.concatenate([cache.get(r["image_id"])[1] for r in records]).astype(np.float32)  # (N M) x D
    norm = np.linalg.norm(emb, axis=1)
    boxes, cached, _ = cache.get(records[0]["image_id"])
    image = torch.from_numpy(np.ascontiguousarray(read_image(records[0]["file_name"], format="RGB").transpose(2, 0, 1)))
    s = RegionCacheSettings()
    ref = embed_regions(_fp32_clip(run.ctx.clip, run.args.device).visual, image, torch.from_numpy(boxes[:64].copy()),
                        s.scales, s.combine, s.batch_size).cpu().numpy()  # 64 x D
    mean = emb.mean(0) / np.linalg.norm(emb.mean(0))
    return {"embeddings": len(emb), "all_finite": bool(np.isfinite(emb).all()),
            "max_abs_norm_minus_1": float(np.abs(norm - 1).max()),
            "min_cos_vs_fp32_clip": float((ref * cached[:64].astype(np.float32)).sum(1).min()),
            "mean_cos_to_mean_embedding": float((emb @ mean).mean())}


def step_cache(run, deadline, fp32=False):
    """The benchmark's region-cache part (CLIP by load_clip(path, device); ``fp32``: a float32 CLIP)."""
    with mock.patch.object(parts, "load_clip", _fp32_clip) if fp32 else contextlib.nullcontext():
        res = parts.part_cache(run.ctx)
    crops = res["crops_per_image"] * res["images"]
    san = embedding_sanity(run)
    res.update(crops_per_s=crops / (res["crop_encode_s_per_image"] * res["images"]), clip_fp32=fp32, sanity=san,
               encoder_crops_per_s=crops / (res["encoder_s_per_image"] * res["images"]))
    res["ok"] = san["all_finite"] and san["max_abs_norm_minus_1"] < 1e-2 and san["min_cos_vs_fp32_clip"] > 0.99
    return res


def rounds(run, runners, warmup, iters, deadline):
    """``warmup`` untimed then up to ``iters`` timed rounds over the runners in turn (device-synchronised);
    a runner that raises is dropped (its traceback kept); no timed round after the first starts when the
    last round's time would end past ``deadline``. Returns variant -> stats, and variant -> traceback."""
    res = interleave(runners, iters, warmup=warmup, sync=run.ctx.sync, deadline=deadline, keep_going=True,
                     log="  round {round}{warm} {name}: {wall:.3f} s")
    return res.stats(parts.BASELINE), res.errors


def measured(run, fn, peaks, v):
    """``fn`` recording the largest peak device memory of its calls in ``peaks[v]`` (MB; CUDA only)."""
    def call():
        if not run.ctx.cuda:
            return fn()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
        if peak > peaks.get(v, {}).get("peak_mb", 0):
            peaks[v] = {"peak_mb": peak, "resident_before_mb": before / 2 ** 20}
    return call


def step_train(run, deadline):
    """Training steps through ViLDTrainer's own optimizer and (AMP) trainer, on one pre-mapped batch."""
    if not (run.ctx.cache / "manifest.json").is_file():
        raise RuntimeError(f"no region cache in {run.ctx.cache}: the cache steps failed (see their errors)")
    batch = parts._train_batch(run.ctx)

    class FixedBatchTrainer(ViLDTrainer):
        @classmethod
        def build_train_loader(cls, cfg):
            return itertools.repeat(batch)  # steps time the model, not the data loader

    runners, peaks, losses, errors = {}, {}, {}, {}
    for v in VARIANTS:
        try:
            torch.manual_seed(0)  # the same initialisation of the shared parts in every variant
            run.trainers[v] = t = FixedBatchTrainer(run.cfg(v))
        except Exception:  # noqa: BLE001
            errors[v] = traceback.format_exc()
            continue
        t.iter = 0

        def one_step(t=t, v=v):
            with EventStorage(t.iter) as storage:
                t.run_step()  # raises FloatingPointError on a non-finite loss
            losses[v] = {k: val for k, (val, _) in storage.latest().items() if "loss" in k}
            t.iter += 1
        runners[v] = measured(run, one_step, peaks, v)
    times, round_errors = rounds(run, runners, run.args.warmup, run.args.iters, deadline)
    errors.update(round_errors)
    out = {"batch": run.args.batch, "input_size": list(batch[0]["image"].shape[1:]), "variant_errors": errors,
           "variants": {}}
    for v, s in times.items():
        model, scaler = run.trainers[v].model, getattr(run.trainers[v]._trainer, "grad_scaler", None)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = [p.grad for _, p in params if p.grad is not None]
        out["variants"][v] = dict(s, images_per_s=run.args.batch / s["median_s"], losses=losses.get(v),
                                  trainable_params=len(params), missing_grads=[n for n, p in params if p.grad is None],
                                  nonfinite_grads=sum(not bool(torch.isfinite(g).all()) for g in grads),
                                  grad_scale=scaler.get_scale() if scaler is not None else None, **peaks.get(v, {}))
    t = run.trainers.get(run.args.eval_mode)
    if t is not None and run.args.eval_mode in times:
        t.checkpointer.save("model_final")
        write_text(Path(t.cfg.OUTPUT_DIR) / "config.yaml", t.cfg.dump())
        run.checkpoint = Path(t.cfg.OUTPUT_DIR)
    out["ok"] = not errors and all(not r["missing_grads"] for r in out["variants"].values())
    return out


def step_infer(run, deadline):
    """Inference (float32, no autocast, as evaluation runs) with the 1,203 LVIS classes: the trained ViLD
    models (their test vocabulary) against Mask R-CNN with a 1,203-way linear classifier."""
    records = sorted(DatasetCatalog.get("lvis_v1_val"), key=lambda r: r["image_id"])[:run.args.infer_images]
    cfg, models, runners, peaks, dets, errors = run.cfg(parts.BASELINE), {}, {}, {}, {}, {}
    cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", 1203])
    inputs = [ViLDDatasetMapper(cfg, is_train=False)(dict(r)) for r in records]
    for v in VARIANTS:  # a ViLD variant that did not train is built afresh
        torch.manual_seed(0)
        try:
            if v != parts.BASELINE and v in run.trainers:
                models[v] = run.trainers[v].model.eval()
            else:
                models[v] = ViLDTrainer.build_model(cfg if v == parts.BASELINE else run.cfg(v)).eval()
        except Exception:  # noqa: BLE001
            errors[v] = traceback.format_exc()

    def infer(model, v):
        with torch.no_grad():
            dets[v] = sum(len(model([x])[0]["instances"]) for x in inputs) / len(inputs)
    for v, m in models.items():
        runners[v] = measured(run, lambda m=m, v=v: infer(m, v), peaks, v)
    times, round_errors = rounds(run, runners, 1, run.args.iters, deadline)
    errors.update(round_errors)
    return {"images_per_round": len(inputs), "input_size": list(inputs[0]["image"].shape[1:]), "ok": not errors,
            "variant_errors": errors, "variants": {v: dict(s, images_per_s=len(inputs) / s["median_s"],
                                                           detections_per_image=dets[v], **peaks.get(v, {}))
                                                   for v, s in times.items()}}


def step_eval(run, deadline, scores):
    """``train_net.py --eval-only`` (a subprocess) on the --eval-mode checkpoint with TEST_SCORES ``scores``."""
    if run.checkpoint is None:
        raise RuntimeError(f"no trained {run.args.eval_mode} checkpoint: the train step failed (see its error)")
    name = "eval_" + scores.replace("+", "_")
    cmd = [sys.executable, "train_net.py", "--eval-only", "--config-file", str(run.checkpoint / "config.yaml"),
           "MODEL.WEIGHTS", str(run.checkpoint / "model_final.pth"), "OUTPUT_DIR", str(run.ctx.work / name),
           "MODEL.VILD.TEST_SCORES", scores]
    log = Path(run.args.out) / f"{name}.log"
    with open(log, "w") as f, Stopwatch() as sw:
        rc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT,
                            timeout=max(deadline - time.time(), 30)).returncode
    wall = sw.wall
    if rc:
        raise RuntimeError(f"{shlex.join(cmd)} exited {rc} after {wall:.0f} s; end of {log}:\n"
                           + log.read_text()[-3000:])
    results = read_json(run.ctx.work / name / "eval_results.json", "evaluation results")
    return {"wall_s": wall, "command": shlex.join(cmd), "mode": run.args.eval_mode, "log": str(log),
            "results": {d: {task: {k: r.get(k) for k in ("AP", "APr", "APc", "APf")} for task, r in tasks.items()}
                        for d, tasks in results.items()}}


STEPS = {"prep": step_prep, "cache": step_cache, "cache_fp32_fallback": lambda run, d: step_cache(run, d, fp32=True),
         "train": step_train, "infer": step_infer, "eval_model": lambda run, d: step_eval(run, d, "model"),
         "eval_text+clip": lambda run, d: step_eval(run, d, "text+clip")}
