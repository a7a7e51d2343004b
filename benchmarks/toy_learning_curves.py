"""Learning curves of the paper's models on the toy world at ``make demo``'s schedule (2,400 steps of
2 images: 4,800 training images), with error bars over seeds: AP and APr of every checkpoint along
the way (every 600 steps: 1,200 / 2,400 / 3,600 / 4,800 images), the distillation diagnostics at
each, CLIP on crops (the teacher, ``TEST_SCORES clip``) as the ceiling, and remedies for the slow
student as config overrides beside the baseline.

    python -m benchmarks.toy_learning_curves [--rows text vild ensemble ensemble_one_head ...]
        [--seeds 0 1 2] [--remedies image_loss_x4 regions_50] [--output output/toy_curves/w0]
        [--share-stages-from output/demo]
    python -m benchmarks.toy_learning_curves --report   # table + plot from whatever is finished

Resumable row by row and seed by seed: each finished (row, seed) writes
benchmarks/results/toy_curves/<row>_seed<S>.json and is skipped on the next run; inside one, the
pipeline's stages and each checkpoint's evaluation are cached in the run's folder. Several workers
share the work: start the same command with another --output each (a pipeline folder takes one run
at a time); a worker claims each job with a lock in the results folder and skips those another
holds. --share-stages-from hard-links the finished teacher-side stages (proposal network, region
cache, text classifiers) of another pipeline folder into a new one, so workers do not rebuild them.
The report (benchmarks/toy_curves_report.py) names what is missing.
"""
import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, List, Tuple

from detectron2.utils.logger import setup_logger

from benchmarks.harness import RESULTS_DIR, write_results
from benchmarks.toy_paper_table import (
    HALF_CONFIG,
    HALF_RPN_CONFIG,
    TEST_SCORES,
    evaluate_weights,
    model_diagnostics,
    row_data,
    train_row,
)
from vild_d2.kit.pipeline import FAST, Pipeline, PipelineSettings
from vild_d2.kit.toy import SPLIT_FILES, default_toy_root
from vild_d2.locking import BusyError, exclusive

logger = logging.getLogger("vild_d2.toy_learning_curves")
CURVES_DIR = RESULTS_DIR / "toy_curves"
ROWS = ("text", "vild", "ensemble", "ensemble_one_head", "supervised_all", "supervised_all_specific", "clip_crops")
CHECKPOINT_PERIOD = 600  # steps; x 2 images per step: 1,200 / 2,400 / 3,600 / 4,800 images
# Remedies for the slow student, each a config override of the ViLD row whose default is the paper's.
REMEDIES = {
    # the L1 distillation's share of the gradient against the text loss: 4x the paper's weight 0.5
    "image_loss_x4": ("vild", ("MODEL.VILD.IMAGE_LOSS_WEIGHT", "2.0")),
    # distil 50 cached regions per image instead of the toy config's 16 (the paper caches 300 on LVIS):
    # more crops of novel objects in every image, at the price of a larger cache
    "regions_50": ("vild", ("MODEL.VILD.NUM_CACHED_PROPOSALS", "50")),
}
SHARED_STAGES = ("rpn_*", "region_cache_*", "text_classifiers")


def share_stages(source: Path, target: Path) -> None:
    """Hard-link the finished stage folders of pipeline folder ``source`` into ``target`` where it has
    none of that name (every artifact is written to a temporary name and renamed, never in place,
    so the two folders never change each other's files)."""
    target.mkdir(parents=True, exist_ok=True)
    for pattern in SHARED_STAGES:
        for folder in sorted(source.glob(pattern)):
            if not (target / folder.name).exists():
                logger.info("sharing %s into %s (hard links)", folder, target)
                shutil.copytree(folder, target / folder.name, copy_function=os.link, symlinks=True)


def checkpoint_metrics(results: dict) -> dict:
    results = results[next(iter(results))]
    return {t: {k: results[t][k] for k in ("AP", "AP50", "AP75", "APr", "APc", "APf")} for t in ("segm", "bbox")}


def curve(out: dict, kind: str) -> dict:
    """{training images: {"segm", "bbox", "diagnostics"}} of every checkpoint of a trained run."""
    cfg = out["vild_cfg"]
    period, images_per_step = cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.IMS_PER_BATCH
    points = {}
    for it in range(period, cfg.SOLVER.MAX_ITER + 1, period):
        final = it == cfg.SOLVER.MAX_ITER
        weights = "model_final.pth" if final else f"model_{it - 1:07d}.pth"
        folder = Path(cfg.OUTPUT_DIR) / "curve" / f"iter_{it:05d}"
        results = out["results"] if final else evaluate_weights(cfg, weights, str(folder))["results"]
        point = checkpoint_metrics(results)
        if not kind.startswith("supervised"):
            point["diagnostics"] = model_diagnostics(out, kind, weights, "" if final else str(folder))
        points[it * images_per_step] = point
        logger.info("%s at %d images: mask AP %.1f APr %.1f", kind, it * images_per_step,
                    point["segm"]["AP"], point["segm"]["APr"])
    return points


def run_job(args, base: PipelineSettings, row: str, seed: int, val_gt: dict) -> dict:
    """One (row, seed): train or find the run, evaluate its checkpoints; plain data."""
    kind, extra = REMEDIES[row] if row in REMEDIES else (row, ())
    job_args = argparse.Namespace(output=args.output, opts=list(extra) + list(args.opts))
    pipe, out = train_row(job_args, base, seed, kind)
    final = row_data(pipe, out, seed, kind, val_gt)
    # the ceiling (CLIP on crops) is one point: the ViLD-text model's last checkpoint rescored
    return {"row": row, "seed": seed, "final": final, "curve": {} if kind in TEST_SCORES else curve(out, kind)}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS[:4]) + ["clip_crops"])
    p.add_argument("--remedies", nargs="*", choices=sorted(REMEDIES), default=[])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--output", default="output/toy_curves/w0", help="pipeline folder of this worker")
    p.add_argument("--share-stages-from", default="", help="pipeline folder whose finished proposal network, "
                   "region cache and text classifiers this worker reuses (hard links)")
    p.add_argument("--results", default=str(CURVES_DIR), help="one JSON per finished (row, seed)")
    p.add_argument("--fast", action="store_true", help="tiny sizes, a few steps (smoke test)")
    p.add_argument("--report", action="store_true", help="only assemble the table and plot from --results")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides for every row")
    return p


def main():
    args = make_parser().parse_args()
    setup_logger(name="vild_d2")
    from benchmarks.toy_curves_report import PLOT, write_report

    if args.report:  # the plot goes to docs/ for the project's results, beside any other results folder
        results = Path(args.results)
        write_report(results, PLOT if results.resolve() == CURVES_DIR.resolve() else results / PLOT.name)
        return
    settings = FAST if args.fast else PipelineSettings()
    period = ("SOLVER.CHECKPOINT_PERIOD", "1" if args.fast else str(CHECKPOINT_PERIOD))
    base = dataclasses.replace(settings, vild_config=str(HALF_CONFIG), rpn_config=str(HALF_RPN_CONFIG),
                               opts=tuple(settings.opts) + period)
    if args.share_stages_from:
        share_stages(Path(args.share_stages_from), Path(args.output))
    state = {}

    def run(row: str, seed: int) -> dict:
        if not state:  # the toy world and teacher, once per worker, only when something is left to run
            Pipeline(args.output, default_toy_root(), base).run_toy_stages()
            state["val_gt"] = json.loads((Path(default_toy_root()) / SPLIT_FILES["val"]).read_text())
        return run_job(args, base, row, seed, state["val_gt"])

    run_jobs(args, run)


def run_jobs(args, run: Callable[[str, int], dict]) -> None:
    """Every job of :func:`jobs` whose results are missing and that no other worker holds:
    ``run(row, seed)`` gives the results written to ``<args.results>/<row>_seed<seed>.json``."""
    claims = Path(args.results) / ".claims"
    for seed, rows in jobs(args):
        done = [Path(args.results) / f"{row}_seed{seed}.json" for row in rows]
        if all(d.is_file() for d in done):
            logger.info("%s seed %d: done (%s)", "+".join(rows), seed, args.results)
            continue
        claim = contextlib.ExitStack()
        try:  # one worker per job: the kernel's lock, released when its process ends, killed or not
            claim.enter_context(exclusive(claims, f"{rows[0]} seed {seed}", name=f"{rows[0]}_seed{seed}.lock"))
        except BusyError:
            logger.info("%s seed %d: another worker runs it", "+".join(rows), seed)
            continue
        with claim:
            for row, path in zip(rows, done):
                if not path.is_file():
                    write_results(path, run(row, seed))
                    logger.info("%s seed %d: written to %s", row, seed, path)

def jobs(args) -> List[Tuple[int, List[str]]]:
    """(seed, rows) in the order they run: each seed's rows, seed after seed, then the remedies the same
    way. The ceiling (clip_crops) rescores the ViLD-text model of its seed, so it joins that job (the
    same pipeline folder) when both are asked for."""
    out = []
    for rows in (list(args.rows), list(args.remedies)):
        for seed in args.seeds:
            for row in rows:
                if row == "clip_crops" and "text" in rows:
                    continue
                out.append((seed, [row, "clip_crops"] if row == "text" and "clip_crops" in rows else [row]))
    return out

if __name__ == "__main__":
    main()
