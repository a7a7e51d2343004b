#!/usr/bin/env python
"""Generate the synthetic toy world (LVIS v1 format); see vild_d2/kit/toy/dataset.py."""
import argparse

from detectron2.utils.logger import setup_logger

from vild_d2.kit.toy import ToyWorldSettings, build_toy_world, default_toy_root


def main():
    d = ToyWorldSettings()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output", default=default_toy_root(), help="dataset folder (default: %(default)s)")
    p.add_argument("--num-train", type=int, default=d.num_train)
    p.add_argument("--num-val", type=int, default=d.num_val)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--min-size", type=int, default=d.min_size, help="smallest image side")
    p.add_argument("--max-size", type=int, default=d.max_size, help="largest image side")
    p.add_argument("--workers", type=int, default=2, help="rendering processes")
    args = p.parse_args()
    setup_logger(name="vild_d2")
    settings = ToyWorldSettings(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                                min_size=args.min_size, max_size=args.max_size)
    build_toy_world(args.output, settings, workers=args.workers)


if __name__ == "__main__":
    main()
