#!/usr/bin/env python
"""Detect any vocabulary on your own images with a trained ViLD model; no retraining.

    python demo.py --config-file configs/toy/ViLD-Toy-ensemble.yaml --input img.png photos/ "shots/*.jpg" \
        --output out/ --vocabulary custom --custom-vocabulary "red circle,blue star" \
        [--scores text+clip] --opts MODEL.WEIGHTS output/demo/vild_xxx/model_final.pth

Writes one PNG (boxes, masks, class names, scores; novel classes in magenta) and one JSON of
detections per image into --output. With --serve instead of --input/--output, a web page on
http://127.0.0.1:8000/ takes vocabularies and images and shows the same (docs/web.md).
"""
import argparse
import sys
from pathlib import Path

from detectron2.utils.logger import setup_logger
from PIL import Image

import vild_d2  # noqa: F401  (registers components and datasets)
from vild_d2.artifacts import atomic_path, write_json
from vild_d2.engine import load_config
from vild_d2.modeling import TEST_SCORES
from vild_d2.predictor import IMAGE_EXTENSIONS, VocabularyPredictor, expand_inputs, output_stems, vocabulary_source
from vild_d2.visualize import detections_to_json, draw_detections


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", help="image files, folders or globs")
    p.add_argument("--output", help="folder for PNG + JSON per image")
    p.add_argument("--vocabulary", default="custom", help="lvis | coco | a dataset the config registers | custom")
    p.add_argument("--custom-vocabulary", default="", help="'class a,class b' or a file, one class per line")
    p.add_argument("--confidence-threshold", type=float, default=0.3)
    p.add_argument("--scores", choices=TEST_SCORES, default=None, help="model: the trained heads; clip: CLIP on each "
                   "proposal's crops; text+clip: the text head ensembled with CLIP on the crops (sets "
                   "MODEL.VILD.TEST_SCORES; default: the config's)")
    p.add_argument("--serve", action="store_true", help="instead of --input/--output: a web page to type "
                   "vocabularies and drop images on (docs/web.md); the model stays loaded")
    p.add_argument("--host", default="127.0.0.1", help="--serve: address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="--serve: port (0: any free one)")
    p.add_argument("--max-megapixels", type=float, default=20.0, help="--serve: larger images are refused")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="background processes reading and decoding images (0: none)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = p.parse_args()
    if not args.serve and not (args.input and args.output):
        p.error("--input and --output are required (or --serve for the web page)")
    logger = setup_logger(name="vild_d2")
    scores = ["MODEL.VILD.TEST_SCORES", args.scores] if args.scores else []
    cfg = load_config(args.config_file, scores + args.opts)  # registers DATASETS.VILD.REGISTER, as train_net.py does
    if args.serve:
        from vild_d2.serve import serve  # starlette + uvicorn: only the web page needs them

        return serve(cfg, args.vocabulary, args.custom_vocabulary, args.host, args.port,
                     args.confidence_threshold, args.max_megapixels)
    predictor = VocabularyPredictor(cfg, vocabulary_source(args.vocabulary, args.custom_vocabulary))
    paths = expand_inputs(args.input)
    stems = output_stems(paths)  # a/x.png and b/x.png must not overwrite each other's results
    failed = []
    for path, image, inst in predictor.run(paths, args.confidence_threshold, args.batch_size, args.workers):
        if image is None:
            failed.append(path)
            continue
        stem = Path(args.output) / stems[path]
        with atomic_path(f"{stem}.png") as tmp:
            Image.fromarray(draw_detections(image, inst, predictor.class_names, predictor.novel_ids)).save(
                tmp, format="PNG")
        write_json(f"{stem}.json", {"image": path, "detections": detections_to_json(inst, predictor.class_names)})
        logger.info("%s: %d detections -> %s.png", path, len(inst), stem)
    if failed:
        logger.error("%d of %d input(s) could not be read and were skipped: %s", len(failed), len(paths), failed)
    if len(failed) == len(paths):
        logger.error("no image was processed: check --input (files, folders or globs of %s)",
                     "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
