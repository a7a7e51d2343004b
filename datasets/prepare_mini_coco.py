#!/usr/bin/env python
"""Generate mini-COCO (a synthetic COCO 2017 with the real 80 categories, for the 48 base / 17 novel
open-vocabulary split) and, optionally, a random CLIP of a real architecture, to rehearse the
open-vocabulary COCO recipe on CPU; see vild_d2/kit/mini_coco.py."""
from vild_d2.kit.mini_coco import MiniCOCOSettings, build_mini_coco
from vild_d2.kit.synthetic_images import prepare_main

if __name__ == "__main__":
    prepare_main(__doc__, MiniCOCOSettings, build_mini_coco, "datasets/mini_coco")
