"""Throughput of ``VocabularyPredictor.run`` with N images per forward pass and images decoded in
DataLoader workers, against one image at a time (the loop ``demo.py`` ran before: read an image,
detect, next), on a folder of toy images with the trained ``make demo`` model.

    python -m benchmarks.bench_batched_inference [--images 200] [--rounds 5] [--variants 1:0 1:2 8:0 8:2 16:2]

A variant ``B:W`` is ``run(paths, threshold, batch_size=B, workers=W)``, consumed without writing
files. Variants are interleaved in one process (every variant once per round, order rotated);
reported: images/s from the min and the median round time, and the ratio of the medians to one
at a time. Then each variant runs once more in a fresh process, for its memory: the peak RSS of
the process (model loaded), by how much the run raised it, the largest worker's peak RSS (most
of it pages shared with the main process), and the peak of main + workers' PSS (shared pages
split between them), sampled every 20 ms. Writes benchmarks/results/batched_inference.json.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from benchmarks.harness import REPO_ROOT, RESULTS_DIR, interleave, table, write_results

LOOP = "one at a time"


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="configs/toy/ViLD-Toy-ensemble.yaml")
    p.add_argument("--weights", default="output/demo/latest/model_final.pth")
    p.add_argument("--text-cache", default="output/demo/text_classifiers", help="MODEL.VILD.TEXT_CACHE_DIR")
    p.add_argument("--vocabulary", default="toy_v4_val")
    p.add_argument("--folder", default="datasets/toy_v4/images/val")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--variants", nargs="+", default=["1:0", "1:2", "8:0", "8:2", "16:2"],
                   help="BATCH_SIZE:WORKERS of run(), beside one image at a time")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the main process (0: torch's default); "
                   "one is steadier on a loaded host, where a descheduled thread stalls every parallel op")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh process per variant")
    p.add_argument("--memory-run", default=None, help=argparse.SUPPRESS)  # one variant, in the fresh process
    p.add_argument("--output", default=str(RESULTS_DIR / "batched_inference.json"))
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, e.g. MODEL.DEVICE cuda")
    return p


def build(args):
    import torch

    from vild_d2.engine import load_config
    from vild_d2.predictor import VocabularyPredictor, expand_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config_file, ["MODEL.WEIGHTS", args.weights, "MODEL.VILD.TEXT_CACHE_DIR", args.text_cache,
                                         *args.opts])
    paths = expand_inputs([args.folder])[: args.images]
    if len(paths) < args.images:
        raise SystemExit(f"{args.folder} holds {len(paths)} images, fewer than --images {args.images}")
    return VocabularyPredictor(cfg, args.vocabulary), paths


def runner(predictor, paths, variant: str, threshold: float):
    """A function that detects on every path as ``variant`` does; returns the detection count."""
    from detectron2.data.detection_utils import read_image

    if variant == LOOP:
        def loop():
            found = 0
            for path in paths:
                inst = predictor(read_image(path, format="RGB"))
                found += int((inst.scores >= threshold).sum())
            return found
        return loop
    batch_size, workers = map(int, variant.split(":"))
    return lambda: sum(len(inst) for _, _, inst in predictor.run(paths, threshold, batch_size, workers))


def status_mb(field: str, pid="self") -> float:
    """A memory figure of a process from /proc/PID/status (Linux), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}: run with --no-memory on this system")


def sample_memory() -> tuple:
    """(RSS of the largest child, PSS of this process and its children), in MB: the DataLoader
    workers are the children."""
    children = [c for t in Path("/proc/self/task").iterdir() for c in (t / "children").read_text().split()]
    largest, pss = 0.0, 0.0
    for pid in ["self", *children]:
        try:
            if pid != "self":
                largest = max(largest, status_mb("VmRSS", pid))
            pss += sum(int(line.split()[1]) / 1024 for line in Path(f"/proc/{pid}/smaps_rollup").read_text()
                       .splitlines() if line.startswith("Pss:"))
        except (FileNotFoundError, ProcessLookupError):  # a worker that just exited
            pass
    return largest, pss


def memory_run(args) -> dict:
    predictor, paths = build(args)
    run = runner(predictor, paths, args.memory_run, args.threshold)
    runner(predictor, paths[:2], LOOP, args.threshold)()  # one-time allocations of the first forward passes
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before, peaks, done = status_mb("VmRSS"), [0.0, 0.0], threading.Event()

    def sample():
        while not done.wait(0.02):
            peaks[:] = map(max, peaks, sample_memory())
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    run()
    done.set()
    thread.join()
    peak = status_mb("VmHWM")
    return {"rss_after_load_mb": before, "peak_rss_mb": peak, "run_raised_rss_mb": peak - before,
            "largest_worker_peak_rss_mb": peaks[0], "peak_pss_with_workers_mb": peaks[1]}


def memory_of(variant: str) -> dict:
    args = list(sys.argv[1:])
    if "--opts" in args:  # --memory-run must come before the overrides that end the command line
        i = args.index("--opts")
        args[i:i] = ["--memory-run", variant]
    else:
        args += ["--memory-run", variant]
    out = subprocess.run([sys.executable, "-m", __spec__.name, *args], check=True, capture_output=True, text=True,
                         cwd=REPO_ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    args = make_parser().parse_args()
    os.environ.setdefault("DETECTRON2_DATASETS", str(REPO_ROOT / "datasets"))  # the toy config's REGISTER paths
    if args.memory_run:
        print(json.dumps(memory_run(args)))
        return
    import torch

    predictor, paths = build(args)
    variants = [LOOP] + args.variants
    runners = {v: runner(predictor, paths, v, args.threshold) for v in variants}
    found = {v: run() for v, run in runners.items()}  # warm-up, and the same detections by every variant
    if len(set(found.values())) != 1:
        raise SystemExit(f"variants found different numbers of detections above {args.threshold}: {found}")
    rounds = interleave(runners, args.rounds, order="rotate", log="round {round}: {name:14s} {wall:6.2f} s")
    times = rounds.stats(LOOP)
    memory = {} if args.no_memory else {v: memory_of(v) for v in variants}
    rows = {}
    for v, t in times.items():
        rows[v] = {"images_per_s_min_time": len(paths) / t["min_s"],
                   "images_per_s_median_time": len(paths) / t["median_s"], "speedup_median": 1 / t["ratio_median"],
                   "round_s": t["all_s"], **memory.get(v, {})}
    print(f"{len(paths)} images of {args.folder}, {args.rounds} interleaved rounds, {torch.get_num_threads()} "
          f"threads, {os.cpu_count()} CPUs, device {predictor.cfg.MODEL.DEVICE}; {found[LOOP]} detections "
          f">= {args.threshold} per pass")
    print(table(["batch:workers", "images/s (min time)", "images/s (median time)", "x one at a time (medians)",
                 "peak RSS MB", "run raised RSS MB", "largest worker RSS MB", "peak PSS + workers MB"],
                [[v, f"{r['images_per_s_min_time']:.1f}", f"{r['images_per_s_median_time']:.1f}",
                  f"{r['speedup_median']:.2f}", *(f"{r[k]:.0f}" if k in r else "-" for k in (
                      "peak_rss_mb", "run_raised_rss_mb", "largest_worker_peak_rss_mb", "peak_pss_with_workers_mb"))]
                 for v, r in rows.items()]))
    write_results(args.output, {"images": len(paths), "folder": args.folder, "rounds": args.rounds,
                                "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                                "device": predictor.cfg.MODEL.DEVICE, "weights": args.weights,
                                "detections_per_pass": found[LOOP], "variants": rows})


if __name__ == "__main__":
    main()
