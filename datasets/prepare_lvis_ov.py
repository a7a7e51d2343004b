#!/usr/bin/env python
"""Write the LVIS v1 base split (frequent + common annotations, every image) as a json file.

    python datasets/prepare_lvis_ov.py [--input datasets/lvis/lvis_v1_train.json]
                                       [--output datasets/lvis/lvis_v1_train_base.json]

``lvis_v1_train_base`` filters at load time and does not need this file; other tools may.
"""
import argparse
import os

from detectron2.utils.logger import setup_logger

from vild_d2.data.lvis_ov import write_base_split


def main():
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=os.path.join(root, "lvis/lvis_v1_train.json"))
    p.add_argument("--output", default=os.path.join(root, "lvis/lvis_v1_train_base.json"))
    args = p.parse_args()
    setup_logger(name="vild_d2")
    write_base_split(args.input, args.output)


if __name__ == "__main__":
    main()
