#!/usr/bin/env python
"""Build (or reuse) a CLIP text classifier: K x D .npy plus a JSON sidecar.

    python tools/build_text_classifier.py --vocabulary lvis --clip-model ViT-B/32 --output-dir out/
    python tools/build_text_classifier.py --vocabulary "red circle,blue star" --clip-model toy_clip.pt

--vocabulary: lvis | coco | toy | a registered dataset name | a text file | "a,b,c".
"""
import argparse

from detectron2.utils.logger import setup_logger

import vild_d2  # noqa: F401  (registers datasets)
from vild_d2.text_classifier import cached_text_classifier


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocabulary", required=True)
    p.add_argument("--clip-model", required=True, help="clip.load name or local checkpoint")
    p.add_argument("--output-dir", default="output/text_classifiers", help="cache folder (default: %(default)s)")
    p.add_argument("--templates", default=None, help="template file, one '{}' per line (default: package set)")
    p.add_argument("--no-synonyms", action="store_true", help="use only the first name of each class")
    p.add_argument("--batch-size", type=int, default=None, help="texts per forward (default: 64 on CPU, 256 on GPU)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    logger = setup_logger(name="vild_d2")
    path = cached_text_classifier(args.output_dir, args.vocabulary, args.clip_model, args.templates,
                                  use_synonyms=not args.no_synonyms, batch_size=args.batch_size, device=args.device)
    logger.info("text classifier: %s (sidecar %s)", path, path.with_suffix(".json"))


if __name__ == "__main__":
    main()
