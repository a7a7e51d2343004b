#!/usr/bin/env python
"""Export a trained ViLD model to TorchScript and/or ONNX, for any vocabulary of its CLIP.

    python tools/export_model.py --config-file configs/toy/ViLD-Toy-ensemble.yaml --format torchscript \\
        --format onnx --output out/export/ [--verify-images datasets/toy_v4/images/val \\
        --verify-vocabulary a.npy --verify-vocabulary b.npy] MODEL.WEIGHTS output/demo/latest/model_final.pth

The graph takes a resized image (3 x H x W float32, the config's INPUT.FORMAT), the vocabulary's
text embeddings (K x D) and K novel flags, and returns boxes, scores, classes and masks before
Detectron2's postprocessing; the CLIP text encoder stays outside (tools/build_text_classifier.py).
Beside the model: manifest.json (config, weights checksum, CLIP identity, D, input format) and
config.yaml. Run it with vild_d2.export.ExportedPredictor(OUTPUT, vocabulary_file).

--verify-images runs every exported format and the eager model on those images with each
--verify-vocabulary file and prints (and writes to OUTPUT/verification.json) how far apart they are.
"""
import argparse
import sys

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

import vild_d2  # noqa: F401  (registers components and datasets)
from vild_d2.artifacts import write_json
from vild_d2.clip_model import clip_identity
from vild_d2.engine import load_config
from vild_d2.export import FORMATS, build_inference_model, export_model, read_manifest, verify_export
from vild_d2.export.runtime import model_input
from vild_d2.export.tracing import check_exportable
from vild_d2.predictor import expand_inputs
from vild_d2.text_classifier import load_text_classifier

PROJECTION = "roi_heads.box_predictor.projection.weight"


def embedding_dim(weights: str) -> int:
    """D of a trained checkpoint: the rows of its region-embedding projection."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    if PROJECTION not in state:
        raise ValueError(f"{weights} holds no {PROJECTION}: give the model_final.pth of a ViLD training")
    return int(state[PROJECTION].shape[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    # one value per flag (repeat it for more), so that the KEY VALUE overrides can follow
    p.add_argument("--format", action="append", choices=FORMATS, help="torchscript or onnx; repeat it for both "
                   "(default: both)")
    p.add_argument("--output", required=True, help="folder for the model files and manifest.json")
    p.add_argument("--sample-image", default="", help="image to trace with (default: the first --verify-images "
                   "image, else random pixels); any image works, the graph takes every size")
    p.add_argument("--vocabulary", default="", help="text classifier to trace with (default: random embeddings)")
    p.add_argument("--verify-images", action="append", default=[], help="image file, folder or glob to check on "
                   "(repeatable)")
    p.add_argument("--verify-vocabulary", action="append", default=[], help="text classifier file to check with "
                   "(repeatable; default: --vocabulary)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = p.parse_args()
    logger = setup_logger(name="vild_d2")
    cfg = load_config(args.config_file, args.opts)
    check_exportable(cfg)
    if not cfg.MODEL.WEIGHTS:
        p.error("give the trained weights: MODEL.WEIGHTS path/to/model_final.pth")
    dim = embedding_dim(cfg.MODEL.WEIGHTS)
    model = build_inference_model(cfg, dim)
    paths = expand_inputs(args.verify_images)
    sample = args.sample_image or (paths[0] if paths else "")
    rgb = read_image(sample, format="RGB") if sample else \
        np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    if args.vocabulary:
        emb, _ = load_text_classifier(args.vocabulary, expected_dim=dim, config_key="--vocabulary",
                                      expected_clip=clip_identity(cfg.MODEL.VILD.CLIP_MODEL))
    else:
        emb = torch.nn.functional.normalize(torch.randn(cfg.MODEL.ROI_HEADS.NUM_CLASSES, dim), dim=1)
    formats = list(dict.fromkeys(args.format or FORMATS))
    image = model_input(rgb, cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    seconds = export_model(cfg, model, args.output, formats, image, emb,
                           weights=cfg.MODEL.WEIGHTS)
    manifest = read_manifest(args.output)
    for fmt, record in manifest["files"].items():
        print(f"{fmt}: {args.output}/{record['name']}  {record['size'] / 2**20:.1f} MB  "
              f"exported in {seconds[fmt]:.1f} s")
    vocabularies = args.verify_vocabulary or ([args.vocabulary] if args.vocabulary else [])
    if not paths:
        return 0
    if not vocabularies:
        p.error("--verify-images needs --verify-vocabulary (or --vocabulary)")
    images = [read_image(path, format="RGB") for path in paths]
    results = verify_export(cfg, model, args.output, images, vocabularies)
    write_json(f"{args.output}/verification.json", {"images": paths, "results": results})
    ok = True
    for vocabulary, by_format in results.items():
        for fmt, r in by_format.items():
            ok &= r["classes_equal"]
            print(f"{vocabulary} {fmt}: {r['images']} images, {r['detections']} detections, classes equal "
                  f"{r['classes_equal']}, max box diff {r['max_box_diff']:.2e} px, max score diff "
                  f"{r['max_score_diff']:.2e}, min mask IoU {r['min_mask_iou']:.4f} "
                  f"(at most {r['max_mask_pixels_differ']} pixels differ)")
    if not ok:
        logger.error("an exported model's detections differ from the eager model's (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
