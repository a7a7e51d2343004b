#!/usr/bin/env python
"""Generate mini-LVIS (a synthetic LVIS v1 with the real 1203 categories) and, optionally, a random
CLIP of a real architecture, to rehearse the LVIS recipe on CPU; see vild_d2/kit/mini_lvis.py."""
import argparse
import os

from detectron2.utils.logger import setup_logger

from vild_d2.kit.mini_lvis import MiniLVISSettings, build_mini_lvis
from vild_d2.kit.random_clip import CLIP_ARCHS, save_random_clip


def main():
    d = MiniLVISSettings()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output", default=os.environ.get("DETECTRON2_DATASETS", "datasets/mini_lvis"),
                   help="dataset root, used as $DETECTRON2_DATASETS (default: %(default)s)")
    p.add_argument("--num-train", type=int, default=d.num_train)
    p.add_argument("--num-val", type=int, default=d.num_val)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the world and of the random CLIP")
    p.add_argument("--width", type=int, default=d.width, help="image width")
    p.add_argument("--height", type=int, default=d.height, help="image height")
    p.add_argument("--clip", default=None, metavar="PATH", help="also write a random-weight CLIP here")
    p.add_argument("--clip-arch", default="ViT-B/32", choices=sorted(CLIP_ARCHS))
    args = p.parse_args()
    setup_logger(name="vild_d2")
    settings = MiniLVISSettings(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                                width=args.width, height=args.height)
    build_mini_lvis(args.output, settings)
    if args.clip:
        save_random_clip(args.clip, arch=args.clip_arch, seed=args.seed)


if __name__ == "__main__":
    main()
