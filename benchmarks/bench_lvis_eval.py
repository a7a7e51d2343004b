"""Speed of LVIS evaluation: Detectron2's LVISEvaluator (the pure-Python lvis API) against
vild_d2's LVISFastEvaluator (faster-coco-eval, LVIS mode), box and mask AP.

    python -m benchmarks.bench_lvis_eval [--images 200] [--repeats 5] [--no-memory]

A synthetic LVIS v1 val stand-in (vild_d2.kit.lvis_synthetic): the 1,203 LVIS v1 categories
with their real frequencies, 640x480 images with LVIS-like object counts (12.35 per image on LVIS
v1 val: 244,707 / 19,809; a sixth of the images crowded with 40), neg / not-exhaustive lists, and
300 noisy detections per image with RLE masks. Each timing is ``evaluator.evaluate()`` on the
gathered predictions, one task per run (one process, no output folder): what rank 0 does after the
gather, including faster-coco-eval's conversion of the ground truth; ``process`` (mask encoding,
run by every rank during inference) is not timed. Runs are interleaved (every other repeat in
reverse order); reported per backend and task: min and median seconds (wall and process CPU), scaled per
1,000 images, and the projection for the 19,809 LVIS v1 val images. Unless --no-memory, each
backend and task also runs once more in a fresh process on --memory-images images, which reports
by how much ``evaluate()`` raised its peak memory (scaled linearly to LVIS v1 val in the table).
The AP of both backends must agree within 0.1. Writes benchmarks/results/lvis_eval_speed.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from detectron2.data import MetadataCatalog

from benchmarks.harness import REPO_ROOT, RESULTS_DIR, Stopwatch, interleave, stats, write_results
from vild_d2.artifacts import write_json
from vild_d2.evaluation import build_lvis_evaluator
from vild_d2.kit.lvis_synthetic import (
    SyntheticLVISSettings,
    lvis_v1_categories,
    synthetic_detections,
    synthetic_lvis_gt,
)

LVIS_V1_VAL_IMAGES = 19809
DATASET = "bench_lvis_eval_synthetic"
BACKENDS = ("lvis", "faster-coco-eval")
TASKS = ("bbox", "segm")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200, help="synthetic val images (lvis: ~20-40 ms each per task)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per backend and task")
    p.add_argument("--detections", type=int, default=300, help="detections per image (TEST.DETECTIONS_PER_IMAGE)")
    p.add_argument("--negatives", type=int, default=10, help="neg_category_ids per image")
    p.add_argument("--related-share", type=float, default=0.5,
                   help="share of the filling detections of a category the image is labelled with")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--memory-images", type=int, default=1000, help="synthetic val images of the peak-memory runs")
    p.add_argument("--memory-run", nargs=2, metavar=("BACKEND", "TASK"), help=argparse.SUPPRESS)  # child mode
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "lvis_eval_speed.json")
    return p


def synthetic_world(args, folder: Path):
    """The settings, ground truth and gathered predictions; the ground truth is registered as DATASET."""
    settings = SyntheticLVISSettings(num_images=args.images, width=640, height=480, mean_objects=7.0,
                                     crowded_every=6, crowded_objects=40, num_negatives=args.negatives, seed=0)
    gt = synthetic_lvis_gt(lvis_v1_categories(), settings)
    predictions = synthetic_detections(gt, max_per_image=args.detections, full_share=1.0,
                                       related_share=args.related_share, seed=1)
    MetadataCatalog.get(DATASET).set(json_file=str(write_json(folder / "lvis_synthetic_val.json", gt, indent=None)))
    return settings, gt, predictions


def gathered(backend: str, task: str, predictions: list):
    """An evaluator of ``backend`` holding ``predictions`` as ``process`` gathers them (each result
    copied: the evaluators write into them)."""
    evaluator = build_lvis_evaluator(DATASET, tasks=(task,), output_dir=None, max_dets_per_image=300,
                                     backend=backend)
    evaluator.reset()
    evaluator._predictions = [{**p, "instances": [dict(r) for r in p["instances"]]} for p in predictions]
    return evaluator


def evaluate_timed(backend: str, task: str, predictions: list, numbers: dict) -> Stopwatch:
    """The stopwatch of one ``evaluate()`` (the evaluator's set-up not timed); its results go to ``numbers``."""
    evaluator = gathered(backend, task, predictions)
    with Stopwatch() as sw:
        numbers[backend, task] = evaluator.evaluate()[task]
    return sw


def peak_memory_increase(args, backend: str, task: str) -> float:
    """MB by which one ``evaluate()`` raises the peak RSS of a fresh process (--memory-images images)."""
    cmd = [sys.executable, "-m", __spec__.name, "--memory-run", backend, task, "--images", str(args.memory_images),
           "--detections", str(args.detections), "--negatives", str(args.negatives),
           "--related-share", str(args.related_share)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_increase_mb"]


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}: run with --no-memory on this system")


def judged_share(gt: dict, predictions: list) -> float:
    """Share of the detections of a category annotated in their image or in its neg_category_ids
    (the ones LVIS evaluation looks at)."""
    known = {im["id"]: set(im["neg_category_ids"]) for im in gt["images"]}
    for a in gt["annotations"]:
        known[a["image_id"]].add(a["category_id"])
    flags = [r["category_id"] + 1 in known[p["image_id"]] for p in predictions for r in p["instances"]]
    return sum(flags) / max(1, len(flags))


def summarize(seconds: list, images: int) -> dict:
    s = stats(seconds)
    per_1000 = {k: s[f"{k}_s"] * 1000 / images for k in ("min", "median")}
    return {"seconds": seconds, "min_s": s["min_s"], "median_s": s["median_s"],
            "per_1000_images_min_s": per_1000["min"], "per_1000_images_median_s": per_1000["median"],
            "lvis_v1_val_projection_min_h": per_1000["min"] * LVIS_V1_VAL_IMAGES / 1000 / 3600,
            "lvis_v1_val_projection_median_h": per_1000["median"] * LVIS_V1_VAL_IMAGES / 1000 / 3600}


def report_lines(report: dict) -> list:
    lines = [f"wall seconds ({report['images']} images; CPU seconds in the json)",
             f"{'backend/task':24s} {'min':>7s} {'median':>7s} {'per 1,000 images (min / median)':>32s} "
             f"{'19,809 LVIS v1 val images':>26s} {'peak +MB (x 19,809 / ' + str(report['memory_images']) + ')':>26s}"]
    for key, kinds in report["timings"].items():
        w, mem = kinds["wall"], report["peak_memory_increase_mb"].get(key)
        memory = f"{mem:6.0f} ({mem * LVIS_V1_VAL_IMAGES / report['memory_images']:7.0f})" if mem is not None else ""
        lines.append(f"{key:24s} {w['min_s']:7.2f} {w['median_s']:7.2f} {w['per_1000_images_min_s']:15.1f} / "
                     f"{w['per_1000_images_median_s']:6.1f} s {w['lvis_v1_val_projection_median_h'] * 60:17.1f} min "
                     f"{memory:>26s}")
    for t in TASKS:
        lines.append(f"{t}: faster-coco-eval {report['speedup_median']['wall'][t]:.1f}x faster (median wall), "
                     f"{report['speedup_median']['cpu'][t]:.1f}x (median CPU); max |AP difference| "
                     f"{report['max_abs_difference_AP_points'][t]:.2g} points")
    return lines


def main(argv=None):
    args = make_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        with Stopwatch() as making:
            settings, gt, predictions = synthetic_world(args, Path(tmp))
        if args.memory_run:
            evaluator = gathered(*args.memory_run, predictions)
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
            before = status_mb("VmRSS")
            evaluator.evaluate()
            print(json.dumps({"peak_increase_mb": status_mb("VmHWM") - before}))
            return
        judged = judged_share(gt, predictions)
        print(f"synthetic world: {len(gt['images'])} images, {len(gt['annotations'])} objects, "
              f"{sum(len(p['instances']) for p in predictions)} detections, {100 * judged:.0f} % of them of a "
              f"category the image is labelled with ({making.wall:.1f} s)")
        load_at_start = os.getloadavg()
        numbers = {}
        runners = {(b, t): lambda b=b, t=t: evaluate_timed(b, t, predictions, numbers) for b in BACKENDS for t in TASKS}
        rounds = interleave(runners, args.repeats, order="alternate",
                            log="repeat {round}: {name[0]:16s} {name[1]}: {wall:7.2f} s wall, {cpu:7.2f} s CPU")
        timings = {key: {"wall": rounds.wall[key], "cpu": rounds.cpu[key]} for key in runners}
    memory = {} if args.no_memory else {f"{b}/{t}": peak_memory_increase(args, b, t) for b in BACKENDS for t in TASKS}
    agreement = {t: max(abs(numbers["lvis", t][k] - numbers["faster-coco-eval", t][k]) for k in numbers["lvis", t])
                 for t in TASKS}
    summaries = {f"{b}/{t}": {kind: summarize(v, args.images) for kind, v in timings[b, t].items()} for b, t in timings}
    report = {
        "timed": "evaluator.evaluate() on the gathered predictions, one task per run; process() (mask RLE "
                 "encoding, done by every rank during inference) is not included",
        "images": args.images, "detections_per_image": args.detections, "repeats": args.repeats,
        "categories": len(gt["categories"]), "objects": len(gt["annotations"]), "judged_detection_share": judged,
        "image_size": [settings.width, settings.height],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "synthetic": {k: getattr(settings, k) for k in ("mean_objects", "crowded_every", "crowded_objects",
                                                         "num_negatives", "not_exhaustive_share", "seed")},
        "machine": {"cpus": len(os.sched_getaffinity(0)), "load_average_at_start": load_at_start,
                    "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
                    "faster_coco_eval": version("faster-coco-eval"), "lvis": version("lvis")},
        "max_abs_difference_AP_points": agreement, "ap": {f"{b}/{t}": numbers[b, t] for b, t in numbers},
        "timings": summaries,
        "speedup_median": {kind: {t: summaries[f"lvis/{t}"][kind]["median_s"]
                                  / summaries[f"faster-coco-eval/{t}"][kind]["median_s"] for t in TASKS}
                           for kind in ("wall", "cpu")},
        "peak_memory_increase_mb": memory, "memory_images": args.memory_images,
    }
    report["summary"] = report_lines(report)
    write_results(args.output, report)
    print("\n" + "\n".join(report["summary"]) + f"\nwrote {args.output}")
    if max(agreement.values()) > 0.1:
        raise SystemExit(f"the backends disagree by more than 0.1 AP: {agreement}")


if __name__ == "__main__":
    main()
