#!/usr/bin/env python
"""Build (or resume) the offline CLIP region-embedding cache used by ViLD-image.

    python tools/build_region_cache.py --config-file CFG --proposals proposals.npz
    python tools/build_region_cache.py --config-file CFG --detector-config RPN.yaml --detector-weights rpn.pth \
        --num-gpus 8

A killed run resumes at the first missing or damaged shard; several processes split the shards
(NCCL with --device cuda, gloo otherwise).
"""
import vild_d2  # noqa: F401  (registers datasets)
from vild_d2.engine import launch
from vild_d2.region_cache.cli import build_from_args, make_parser

if __name__ == "__main__":
    args = make_parser().parse_args()
    launch(build_from_args, args.num_gpus, device=args.device, dist_url=args.dist_url, args=(args,))
