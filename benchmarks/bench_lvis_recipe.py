"""Costs of the ViLD recipe on LVIS v1 at real model sizes (R50-FPN at 1024 px, ViT-B/32 CLIP, M = 300,
300 detections over 1203 classes), measured on the stand-in mini-LVIS with random weights, as unit
costs and ratios, and projected to full LVIS v1. Each part runs in its own process (peak RSS each):

  prep   mini-LVIS, random ViT-B/32 CLIP, random text classifiers, random R50-FPN proposal network
  cache  region cache: s/image, proposal network vs crop + CLIP encoder, bytes/image
  text   text classifiers (default templates, all synonyms): ms/text, exact text counts, projection
  train  training step (fwd + bwd + SGD) of each ViLD mode vs class-agnostic Mask R-CNN; ROI heads alone
  infer  inference/image, 1203 classes, vs Mask R-CNN with a 1203-way linear classifier; stage split
  eval   LVISEvaluator (bbox + segm), 300 synthetic detections/image, s per 100 images

    python -m benchmarks.bench_lvis_recipe [--parts cache train ...] [--repeats 3] [--images 4]
    python -m benchmarks.bench_lvis_recipe --device cuda --amp      # the same on a GPU (fp16 autocast)
    python -m benchmarks.bench_lvis_recipe --device cuda --amp --opts MODEL.RESNETS.NORM SyncBN MODEL.FPN.NORM SyncBN

On a shared CPU run it alone: another busy process on the 2 cores doubled every time here (training step
26 s idle, 60 s beside a test run). Untrained scores decide the per-class NMS (Mask R-CNN's uniform softmax
lets all 1203 classes of ~1000 boxes past 1e-4; ViLD's cosine / 0.01 far fewer), so inference is also
reported without that stage.

Variants are interleaved (A B C D E, A B C D E, ...) after one warm-up round, on the same data; the
tables give min and median and the ratios to the baseline (of medians, of mins, median of per-round).
Results: benchmarks/results/lvis_recipe_<device>.json (parts not rerun are kept from the last run).
"""
import argparse
import datetime
import json
import os
import resource
import shlex
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import REPO_ROOT, RESULTS_DIR, Stopwatch, table, write_results

PARTS = ("prep", "cache", "text", "train", "infer", "eval")
LVIS_TRAIN, LVIS_VAL = 100_170, 19_809
SCHEDULES = {"paper: 180k it. x 16 img": 180_000 * 16, "1x: 90k it. x 16 img": 90_000 * 16}


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="output/bench_lvis", help="mini-LVIS, random CLIP, cache (reused)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="prep always runs first")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="autocast: fp16 on CUDA, bf16 on CPU")
    p.add_argument("--images", type=int, default=2, help="training images of the region cache (~200 s each on "
                   "2 busy cores: 600 ViT-B/32 crops per image)")
    p.add_argument("--batch", type=int, default=1, help="images per training step")
    p.add_argument("--infer-images", type=int, default=1, help="validation images per inference round")
    p.add_argument("--text-classes", type=int, default=20, help="classes of the timed text-classifier sample")
    p.add_argument("--text-repeats", type=int, default=2)
    p.add_argument("--eval-images", type=int, default=100)
    p.add_argument("--eval-repeats", type=int, default=2)
    p.add_argument("--out", default="", help="JSON (default benchmarks/results/lvis_recipe_<device>.json)")
    p.add_argument("--opts", nargs="*", default=[], help="overrides of every model config: KEY VALUE ...")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # child process
    return p


def part_file(args, part) -> Path:
    return Path(args.work) / "parts" / f"{part}_{args.device.replace(':', '')}.json"


def child(args):
    """Run one part here (``$DETECTRON2_DATASETS`` already set by the parent) and write its JSON."""
    import torch

    from benchmarks import lvis_recipe_parts as parts  # imports detectron2 and vild_d2: after the environment

    result = parts.PARTS[args.part](parts.Ctx(args))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device.startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    write_results(part_file(args, args.part), result)


def run_part(args, part):
    work = Path(args.work).resolve()
    env = dict(os.environ, DETECTRON2_DATASETS=str(work / ("eval_world" if part == "eval" else "world")))
    cmd = [sys.executable, "-m", __spec__.name, *sys.argv[1:], "--work", str(work), "--part", part]
    print(f"\n=== part {part} ===", flush=True)
    with Stopwatch() as sw:
        subprocess.run(cmd, env=env, cwd=REPO_ROOT, check=True)
    result = json.loads(part_file(args, part).read_text())
    result.update(wall_s=sw.wall, children_maxrss_mb=resource.getrusage(
        resource.RUSAGE_CHILDREN).ru_maxrss / 1024, command=shlex.join(["python", "-m", __spec__.name, *sys.argv[1:]]),
        finished=datetime.datetime.now().isoformat(timespec="seconds"))
    return result


def hours(s):
    return f"{s / 3600:,.0f} h" if s >= 36_000 else f"{s / 3600:,.1f} h"


def report(res, device):
    """Markdown tables of every part present in ``res``."""
    out, tag = [], f"{device.upper()}-only" if device == "cpu" else device
    if "cache" in res:
        c = res["cache"]
        out.append(f"### Region cache (M = 300 x 2 scales, ViT-B/32, random R50-FPN RPN at 1024; {c['images']} "
                   f"images, {c['threads']} threads; {tag})\n\n" + table(["figure", "value", "goal"], [
                       ["regions / crops per image", f"{c['regions_per_image']:.0f} / {c['crops_per_image']:.0f}", ""],
                       ["wall s / image", f"{c['s_per_image']:.2f}", ""],
                       ["proposal network s / image", f"{c['proposal_net_s_per_image']:.2f}", ""],
                       ["crop + encode s / image (encoder alone)",
                        f"{c['crop_encode_s_per_image']:.2f} ({c['encoder_s_per_image']:.2f})", ""],
                       ["crop + encode share of wall", f"{100 * c['share_crop_encode_of_wall']:.1f} %", ">= 85 %"],
                       ["crop + encode share, proposal network excluded",
                        f"{100 * c['share_crop_encode_without_proposal_net']:.1f} %", ""],
                       ["KB / image on disk (arrays only)",
                        f"{c['bytes_per_image'] / 1000:.1f} ({c['array_bytes_per_image'] / 1000:.1f})", "<= 320 KB"]]))
    for part, key, title in (("train", "step", "Training step (forward + backward + SGD step)"),
                             ("train", "roi_heads", "ROI heads alone (forward + backward, fixed features/proposals)"),
                             ("infer", "per_image", "Inference per image (1203 classes, 300 detections, thresh 1e-4)"),
                             ("infer", "per_image_without_nms", "Inference per image without score filter + NMS")):
        if part in res and key in res[part]:
            r, goal = res[part][key], {"step": 1.15, "per_image": 1.10, "per_image_without_nms": 1.10}.get(key)
            sub = (f"batch {res[part]['batch']} x LSJ, input {res[part].get('input_size')}" if part == "train" else
                   f"input {res[part].get('input_size')}, {res[part]['images_per_round']} image(s) per round")
            out.append(f"### {title}; {sub}; {tag}\n\n" + table(
                ["variant", "min s", "median s", "ratio of medians", "ratio of mins", "median per-round ratio"] +
                (["goal"] if goal else []),
                [[v, f"{s['min_s']:.2f}", f"{s['median_s']:.2f}", f"{s['ratio_median']:.3f}", f"{s['ratio_min']:.3f}",
                  f"{s['paired_ratio_median']:.3f}"] + ([f"<= {goal}" if v != "mask_rcnn" else ""] if goal else [])
                 for v, s in r.items()]))
    if "infer" in res:
        sp = res["infer"]["split"]
        stages = list(dict.fromkeys(k for v in sp.values() for k in v["stages_s"]))
        out.append(f"### Inference time split per image, median over rounds ({tag})\n\n" + table(
            ["stage", *[f"{v} s" for v in sp]], [[k, *[f"{v['stages_s'].get(k, 0):.2f}" for v in sp.values()]]
                                                 for k in stages] +
            [["candidates into NMS", *[f"{v['candidates_into_nms_per_image']:,.0f}" for v in sp.values()]]]) +
            f"\n\nscore filter + per-class NMS: {res['infer']['nms_s_per_million_candidates']:.1f} s per million "
            "candidates (mask_rcnn)")
        for v, rows in res["infer"]["profile"].items():
            out.append(f"cProfile, {v}, top self time: " + "; ".join(
                f"{r['function']} {r['tottime_s']:.2f} s" for r in rows[:6]))
    if "text" in res:
        t = res["text"]
        out.append(f"### Text classifiers ({t['templates']} default templates, all synonyms; {tag})\n\n" + table(
            ["vocabulary", "texts (exact)", "ms / text (sample median)", "PROJECTED s"],
            [[k, f"{n:,}", f"{t['ms_per_text_median']:.2f}", f"{t['projected_s'][k]:.0f}"]
             for k, n in t["texts"].items()]) + f"\n\nsample: {t['sample_classes']} classes, {t['sample_texts']} "
            f"texts, {t['sample']['min_s']:.1f} / {t['sample']['median_s']:.1f} s (min / median)")
    if "eval" in res:
        e = res["eval"]
        out.append(f"### LVIS evaluation ({e['images']} images x 300 detections, bbox + segm; {tag})\n\n" + table(
            ["figure", "min s", "median s"], [[k, f"{e[k]['min_s']:.1f}", f"{e[k]['median_s']:.1f}"]
                                              for k in ("process", "evaluate", "s_per_100_images")]))
    out.append("### Wall time and peak RSS per part (each its own process)\n\n" + table(
        ["part", "wall s", "peak RSS MB", "finished"],
        [[p, f"{r['wall_s']:.0f}", f"{r['peak_rss_mb']:,.0f}", r.get("finished", "")] for p, r in res.items()]))
    out.append(projection(res, tag))
    return "\n\n".join(out)


def projection(res, tag):
    rows = []
    if "cache" in res:
        c = res["cache"]
        rows += [["region cache build", f"{c['s_per_image']:.2f} s/img x {LVIS_TRAIN:,}",
                  hours(c["s_per_image"] * LVIS_TRAIN), "yes (proposal net + encoder)"],
                 ["region cache disk", f"{c['bytes_per_image'] / 1000:.0f} KB x {LVIS_TRAIN:,}",
                  f"{c['bytes_per_image'] * LVIS_TRAIN / 1e9:.1f} GB", "no (size)"]]
    if "train" in res:
        t = res["train"]
        for v in ("mask_rcnn", "ensemble"):
            per_img = t["step"][v]["median_s"] / t["batch"]
            rows += [[f"training, {v}, {k}", f"{per_img:.1f} s/img x {n:,}", hours(per_img * n), "yes"]
                     for k, n in SCHEDULES.items()]
    if "infer" in res:
        for v in ("mask_rcnn", "ensemble"):
            s = res["infer"]["per_image"][v]["median_s"]
            rows.append([f"inference, {v}", f"{s:.1f} s/img x {LVIS_VAL:,}", hours(s * LVIS_VAL), "yes"])
    if "eval" in res:
        s = res["eval"]["s_per_100_images"]["median_s"]
        rows.append(["LVIS evaluation (bbox + segm)", f"{s:.0f} s/100 img x {LVIS_VAL / 100:.0f}",
                     hours(s * LVIS_VAL / 100), "no (CPU-bound in any case)"])
    if "text" in res:
        rows += [[f"text classifier {k} (PROJECTED)", f"{n:,} texts", f"{res['text']['projected_s'][k]:.0f} s", "yes"]
                 for k, n in res["text"]["texts"].items()]
    return (f"### Projection to full LVIS v1 ({LVIS_TRAIN:,} train / {LVIS_VAL:,} val images); every figure "
            f"{tag}, single process on this machine\n\n" + table(["stage", "unit cost x count", "total",
                                                                  "must be measured on a GPU"], rows))


def main():
    args = make_parser().parse_args()
    if args.part:
        return child(args)
    out = Path(args.out or RESULTS_DIR / f"lvis_recipe_{args.device.replace(':', '')}.json")
    previous = json.loads(out.read_text()).get("parts", {}) if out.is_file() else {}
    res = {p: r for p, r in previous.items() if p not in args.parts and p != "prep"}
    with Stopwatch() as total:
        for part in ["prep", *[p for p in PARTS if p in args.parts and p != "prep"]]:
            res[part] = run_part(args, part)
    res = {p: res[p] for p in PARTS if p in res}
    text = report(res, args.device)
    print(f"\n{text}\n\ntotal wall {total.wall:.0f} s")
    write_results(out, {"device": args.device, "amp": args.amp, "parts": res, "markdown": text})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
