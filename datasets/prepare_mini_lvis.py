#!/usr/bin/env python
"""Generate mini-LVIS (a synthetic LVIS v1 with the real 1203 categories) and, optionally, a random
CLIP of a real architecture, to rehearse the LVIS recipe on CPU; see vild_d2/kit/mini_lvis.py."""
from vild_d2.kit.mini_lvis import MiniLVISSettings, build_mini_lvis
from vild_d2.kit.synthetic_images import prepare_main

if __name__ == "__main__":
    prepare_main(__doc__, MiniLVISSettings, build_mini_lvis, "datasets/mini_lvis")
