#!/usr/bin/env python
"""Train (or reuse) the toy CLIP teacher for a toy world and print its zero-shot accuracy."""
import argparse
import dataclasses
import json
import logging

from detectron2.utils.logger import setup_logger

from vild_d2.kit.toy import default_toy_root
from vild_d2.kit.toy.teacher import TeacherSettings, ensure_teacher


def main():
    d = TeacherSettings()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--world", default=default_toy_root(), help="toy world folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--seed", type=int, default=d.seed)
    args = p.parse_args()
    setup_logger(name="vild_d2")
    path = ensure_teacher(args.world, dataclasses.replace(d, steps=args.steps, seed=args.seed))
    logging.getLogger("vild_d2").info("teacher: %s\n%s", path, json.dumps(
        json.loads(path.with_suffix(".json").read_text())["zero_shot_val"], indent=1))


if __name__ == "__main__":
    main()
