"""One GPU check of the LVIS recipe, sized for a short GPU loan (under 8 minutes on one H100). Steps
(benchmarks/gpu_check_steps.py, built on benchmarks/lvis_recipe_parts.py):

  prep      mini-LVIS (the 1,203 LVIS v1 categories), random ViT-B/32 CLIP, random classifiers and RPN
  cache     region cache, M = 300 x 2 scales, CLIP by load_clip(path, device) (fp16 on CUDA): crops/s
            (device-synchronised), embeddings finite and unit-norm, the same crops by a float32 CLIP
  cache_fp32_fallback   only when cache failed: the same with a float32 CLIP, so the next steps can run
  train     ViLDTrainer steps (SOLVER.AMP.ENABLED: AMPTrainer + GradScaler on CUDA, bf16 autocast on CPU)
            of text, image, vild, ensemble, one-box-head ensemble and class-agnostic Mask R-CNN,
            interleaved on one fixed batch: images/s, losses finite, every trainable parameter has a
            gradient, peak device memory per variant
  infer     inference images/s with the 1,203-class vocabulary (float32, as evaluation runs), same baseline
  eval_model, eval_text+clip   train_net.py --eval-only of one trained checkpoint, TEST_SCORES model / text+clip

Configs: configs/LVIS-OV/*.yaml + configs/overlays/CPU-rehearsal.yaml (WEIGHTS "", GN norms, its low
learning rate), then MODEL.DEVICE, LSJ 1024, --batch images per step. Every step is recorded (figures or
traceback) and the next one runs; each has a time guard (a share of --budget-s); exit code 1 when any
failed. Results: OUT/gpu_check.json (rewritten after every step) and a markdown table on stdout. The
big files (world, CLIP, cache, checkpoints) go to --work (default OUT/work): on the device machine give
a --work outside $OUT.

    python -m benchmarks.gpu_check --device cuda --out $OUT --work /tmp/gpu_check
    OMP_NUM_THREADS=1 python -m benchmarks.gpu_check --device cpu --smoke --out /tmp/gpu_smoke  # tiny sizes, ~1 min
"""
import argparse
import datetime
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks.harness import table, write_results

PRESETS = {"gpu": dict(batch=4, images=24, infer_images=4, warmup=3, iters=5, budget_s=450),
           "smoke": dict(batch=2, images=3, infer_images=1, warmup=1, iters=1, budget_s=600)}
# --smoke: 128 px (a 256 px R50-FPN step took 10-25 s on 2 shared cores) and few proposals; training
# reads M = 8 of the cache's 300 regions per image
SMOKE_OPTS = ["DATASETS.VILD.LSJ_IMAGE_SIZE", "128", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
              "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
              "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.VILD.NUM_CACHED_PROPOSALS", "8",
              "TEST.DETECTIONS_PER_IMAGE", "50"]
SHARE = {"prep": 0.15, "cache": 0.12, "cache_fp32_fallback": 0.1, "train": 0.3, "infer": 0.12,
         "eval_model": 0.15, "eval_text+clip": 0.2}  # each step's time guard, as a share of --budget-s


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True, help="gpu_check.json and the eval logs")
    p.add_argument("--work", default="", help="mini-LVIS, CLIP, cache, checkpoints (default OUT/work; reused)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a tiny random CLIP: a CPU check of this script")
    for k, v in PRESETS["gpu"].items():
        p.add_argument("--" + k.replace("_", "-"), type=int, help=f"default {v} (--smoke {PRESETS['smoke'][k]})")
    p.add_argument("--eval-mode", default="text", choices=("text", "vild", "ensemble", "ensemble_one_box_head"),
                   help="the trained checkpoint that train_net.py --eval-only scores (default %(default)s)")
    p.add_argument("--opts", nargs="*", default=[], help="overrides of every config: KEY VALUE ...")
    return p


def summary(name, res):
    """One line of figures of a finished step."""
    if name.startswith("cache"):
        s = res["sanity"]
        return (f"{res['crops_per_s']:,.0f} crops/s crop+encode ({res['encoder_crops_per_s']:,.0f} encoder alone), "
                f"{res['s_per_image']:.2f} s/image, {res['crops_per_image']:.0f} crops/image; embeddings finite "
                f"{s['all_finite']}, max abs(norm - 1) {s['max_abs_norm_minus_1']:.1e}, min cos to fp32 CLIP "
                f"{s['min_cos_vs_fp32_clip']:.4f}, mean cos to their mean {s['mean_cos_to_mean_embedding']:.3f}")
    if name.startswith("eval"):
        aps = "; ".join(f"{task} AP {r['AP']}, APr {r['APr']}" for t in res["results"].values()
                        for task, r in t.items())
        return f"{res['mode']} checkpoint: {res['wall_s']:.0f} s wall ({aps})"
    if name in ("train", "infer"):
        return f"{len(res['variants'])} variants timed, failed: {sorted(res['variant_errors']) or 'none'}"
    return ", ".join(f"{k} {v}" for k, v in res.items())


def variant_rows(name, res):
    """Rows of the train / infer table: one per timed variant."""
    rows = []
    for v, r in res["variants"].items():
        row = [v, f"{r['images_per_s']:.2f}", f"{r['median_s']:.3f}",
               f"{r['paired_ratio_median']:.3f}" if "paired_ratio_median" in r else "-",
               f"{r['peak_mb']:,.0f} ({r['resident_before_mb']:,.0f})" if "peak_mb" in r else "-"]
        if name == "train":
            row += [f"{len(r['missing_grads'])} / {r['trainable_params']}", r["nonfinite_grads"],
                    r["grad_scale"] or "-", ", ".join(f"{k} {x:.3g}" for k, x in (r["losses"] or {}).items())]
        else:
            row.append(f"{r['detections_per_image']:.0f}")
        rows.append(row)
    return rows


def report(out):
    steps = out["steps"]
    text = [f"### GPU check: {out['device_name']}, torch {out['torch']}, batch {out['settings']['batch']}"
            f"{' (SMOKE sizes)' if out['settings']['smoke'] else ''}; total {out['total_wall_s']:.0f} s",
            table(["step", "status", "wall s", "figures"],
                  [[k, "ok" if s["ok"] else "FAILED", f"{s['wall_s']:.1f}",
                    summary(k, s["result"]) if s.get("result") else s["error"].strip().splitlines()[-1][:200]]
                   for k, s in steps.items()])]
    header = ["variant", "images/s", "median s", "time ratio to mask_rcnn (paired median)", "peak MB (resident before)"]
    for name, title, extra in (("train", "Training step (AMP)", ["missing grads / trainable", "non-finite grads",
                                                                "grad scale", "last losses"]),
                               ("infer", "Inference, 1,203 classes", ["detections / image"])):
        res = (steps.get(name) or {}).get("result")
        if res:
            text += [f"### {title}; input {res['input_size']}", table(header + extra, variant_rows(name, res))]
    return "\n\n".join(text)


def failures(out) -> str:
    """The traceback (its end) of every failed step and variant, and the parameters without a gradient."""
    lines = []
    for k, s in out["steps"].items():
        res = s.get("result") or {}
        if not s["ok"]:
            lines.append(f"--- {k} FAILED ---\n{s['error'][-2500:]}")
        for v, err in res.get("variant_errors", {}).items():
            lines.append(f"--- {k} / {v} FAILED ---\n{err[-2500:]}")
        for v, r in res.get("variants", {}).items():
            if r.get("missing_grads"):
                lines.append(f"--- {k} / {v}: no gradient for {r['missing_grads'][:20]}")
    return "\n".join(lines)


def main():
    args = make_parser().parse_args()
    for k, v in PRESETS["smoke" if args.smoke else "gpu"].items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    args.out, args.opts = str(Path(args.out).resolve()), (SMOKE_OPTS if args.smoke else []) + args.opts
    args.work = str(Path(args.work or Path(args.out) / "work").resolve())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    os.environ["DETECTRON2_DATASETS"] = str(Path(args.work) / "world")  # before detectron2 registers LVIS
    t0 = time.time()
    import torch

    from benchmarks import gpu_check_steps as steps  # imports detectron2: after the environment is set

    out = {"device": args.device, "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda")
           else "CPU", "torch": torch.__version__, "settings": vars(args), "started": datetime.datetime.now()
           .isoformat(timespec="seconds"), "steps": {}}
    run, path = steps.Run(args), Path(args.out) / "gpu_check.json"
    for name, fn in steps.STEPS.items():
        if name == "cache_fp32_fallback" and out["steps"]["cache"].get("ok", False):
            continue
        start = time.time()
        rec = {"ok": False, "result": None, "error": None}
        if start - t0 >= args.budget_s:
            rec["error"] = f"skipped: --budget-s {args.budget_s} s already spent"
        else:
            try:
                rec["result"] = fn(run, min(t0 + args.budget_s, start + SHARE[name] * args.budget_s))
                rec["ok"] = rec["result"].pop("ok", True)
                rec["error"] = None if rec["ok"] else "a check failed: see the figures"
            except Exception:  # noqa: BLE001  (each step's failure is recorded; the next step runs)
                rec["error"] = traceback.format_exc()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        rec["wall_s"] = time.time() - start
        out["steps"][name], out["total_wall_s"] = rec, time.time() - t0
        print(f"[gpu_check] step {name}: {'ok' if rec['ok'] else 'FAILED'} in {rec['wall_s']:.1f} s "
              f"(elapsed {out['total_wall_s']:.1f} s)", flush=True)
        write_results(path, out)
    out["markdown"] = report(out)
    write_results(path, out)
    failed = sorted(k for k, s in out["steps"].items() if not s["ok"])
    print(f"\n{failures(out)}\n\n{out['markdown']}\n\nwrote {path}; failed steps: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
