#!/usr/bin/env python
"""Detect any vocabulary on your own images with a trained ViLD model; no retraining.

    python demo.py --config-file configs/toy/ViLD-Toy-ensemble.yaml --input img.png photos/ "shots/*.jpg" \
        --output out/ --vocabulary custom --custom-vocabulary "red circle,blue star" \
        --opts MODEL.WEIGHTS output/demo/vild_xxx/model_final.pth

Writes one PNG (boxes, masks, class names, scores; novel classes in magenta) and one JSON of
detections per image into --output.
"""
import argparse
import json
import os
from pathlib import Path

from detectron2.utils.logger import setup_logger
from PIL import Image

import vild_d2  # noqa: F401  (registers components and datasets)
from vild_d2.config import load_config
from vild_d2.predictor import VocabularyPredictor, expand_inputs, vocabulary_source
from vild_d2.visualize import detections_to_json, draw_detections


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files, folders or globs")
    p.add_argument("--output", required=True, help="folder for PNG + JSON per image")
    p.add_argument("--vocabulary", default="custom", help="lvis | coco | toy | custom")
    p.add_argument("--custom-vocabulary", default="", help="'class a,class b' or a file, one class per line")
    p.add_argument("--confidence-threshold", type=float, default=0.3)
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = p.parse_args()
    logger = setup_logger(name="vild_d2")
    cfg = load_config(args.config_file, args.opts)  # registers DATASETS.VILD.REGISTER, as train_net.py does
    predictor = VocabularyPredictor(cfg, vocabulary_source(args.vocabulary, args.custom_vocabulary))
    os.makedirs(args.output, exist_ok=True)
    failed = []
    for path, image, inst in predictor.run(expand_inputs(args.input), args.confidence_threshold):
        if image is None:
            failed.append(path)
            continue
        stem = Path(args.output) / Path(path).stem
        Image.fromarray(draw_detections(image, inst, predictor.class_names, predictor.novel_ids)).save(f"{stem}.png")
        Path(f"{stem}.json").write_text(json.dumps({"image": path, "detections": detections_to_json(
            inst, predictor.class_names)}, indent=1))
        logger.info("%s: %d detections -> %s.png", path, len(inst), stem)
    if failed:
        logger.error("%d unreadable input(s) skipped: %s", len(failed), failed)


if __name__ == "__main__":
    main()
