#!/usr/bin/env python
"""Build (or reuse) CLIP text classifiers: K x D .npy plus a JSON sidecar each.

    python tools/build_text_classifier.py --vocabulary lvis --clip-model ViT-B/32 --output-dir out/
    python tools/build_text_classifier.py --vocabulary "red circle,blue star" --clip-model toy_clip.pt
    python tools/build_text_classifier.py --config-file my_vild.yaml [--opts KEY VALUE ...]

--vocabulary: lvis | coco | a dataset the --config-file registers | a text file | "a,b,c".
With --config-file (datasets in its DATASETS.VILD.REGISTER are registered), the default
vocabularies are the config's DATASETS.TRAIN[0] and DATASETS.TEST[0], the CLIP its
MODEL.VILD.CLIP_MODEL and the folder its MODEL.VILD.TEXT_CACHE_DIR: exactly the files train_net.py
would build itself when MODEL.VILD.TEXT_EMBEDDINGS / TEST_TEXT_EMBEDDINGS are empty.
"""
import argparse

from detectron2.utils.logger import setup_logger

import vild_d2  # noqa: F401  (registers the built-in datasets)
from vild_d2.engine import load_config
from vild_d2.text_classifier import cached_text_classifier


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocabulary", nargs="+", default=[], help="one or more vocabularies")
    p.add_argument("--config-file", default="", help="a ViLD config: its datasets, CLIP, templates and cache folder")
    p.add_argument("--clip-model", default="", help="clip.load name or local checkpoint")
    p.add_argument("--output-dir", default="", help="cache folder (default: MODEL.VILD.TEXT_CACHE_DIR, "
                   "output/text_classifiers without a config)")
    p.add_argument("--templates", default=None, help="template file, one '{}' per line (default: the config's "
                   "MODEL.VILD.PROMPT_TEMPLATES, else the package set)")
    p.add_argument("--no-synonyms", action="store_true", help="use only the first name of each class")
    p.add_argument("--batch-size", type=int, default=None, help="texts per forward (default: 64 on CPU, 256 on GPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = p.parse_args()
    logger = setup_logger(name="vild_d2")
    vocabularies, clip_model, out, templates = args.vocabulary, args.clip_model, args.output_dir, args.templates
    if args.config_file:
        cfg = load_config(args.config_file, args.opts)
        vocabularies = vocabularies or [*cfg.DATASETS.TRAIN[:1], *cfg.DATASETS.TEST[:1]]
        clip_model = clip_model or cfg.MODEL.VILD.CLIP_MODEL
        out = out or cfg.MODEL.VILD.TEXT_CACHE_DIR
        templates = templates or cfg.MODEL.VILD.PROMPT_TEMPLATES or None
    if not vocabularies or not clip_model:
        p.error("give --vocabulary and --clip-model, or a --config-file that names its datasets and CLIP")
    for vocabulary in vocabularies:
        path = cached_text_classifier(out or "output/text_classifiers", vocabulary, clip_model, templates,
                                      use_synonyms=not args.no_synonyms, batch_size=args.batch_size, device=args.device)
        logger.info("text classifier of %s: %s (sidecar %s)", vocabulary, path, path.with_suffix(".json"))


if __name__ == "__main__":
    main()
