"""The main job on the toy world (``make demo``): every stage a user runs by hand, cached.

Stages so far: toy world -> toy CLIP teacher (with its zero-shot report). Each stage skips
itself when its artifact exists for the same settings; later stages join as they land.
Run as ``python -m vild_d2.pipeline``.
"""
import argparse
import json
import logging
import time

from detectron2.utils.logger import setup_logger

from .data.builtin import default_toy_root
from .toy import ToyWorldSettings, build_toy_world
from .toy.teacher import TeacherSettings, ensure_teacher, teacher_path

logger = logging.getLogger("vild_d2.pipeline")


def run_pipeline(world_root: str, world: ToyWorldSettings, teacher: TeacherSettings) -> dict:
    timings = {}

    t0 = time.perf_counter()
    built = build_toy_world(world_root, world)
    timings["toy world"] = (time.perf_counter() - t0, "built" if built else "cached")

    t0 = time.perf_counter()
    cached = teacher_path(world_root, teacher).is_file()
    path = ensure_teacher(world_root, teacher)
    timings["toy CLIP teacher"] = (time.perf_counter() - t0, "cached" if cached else "trained")

    report = json.loads(path.with_suffix(".json").read_text())["zero_shot_val"]
    for stage, (secs, how) in timings.items():
        logger.info("stage %-18s %-8s %6.1f s", stage, how, secs)
    logger.info("toy CLIP zero-shot accuracy on val crops (%d objects):", report["1.0x"]["crops"])
    for scale, acc in report.items():
        logger.info("  %s crops: all %.1f%%  rare/novel %.1f%%  base %.1f%%",
                    scale, 100 * acc["all"], 100 * acc["rare"], 100 * acc["base"])
    return {"teacher": str(path), "zero_shot_val": report, "timings": timings}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--world", default=default_toy_root(), help="toy world folder (default: %(default)s)")
    args = p.parse_args()
    setup_logger(name="vild_d2")
    run_pipeline(args.world, ToyWorldSettings(), TeacherSettings())


if __name__ == "__main__":
    main()
