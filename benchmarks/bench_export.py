"""Per-image CPU latency of an exported ViLD model against the eager one, and what exporting costs:

    python -m benchmarks.bench_export [--models toy lvis] [--rounds 5] [--images 4] [--lvis-images 2]

Variants, in one process and interleaved round by round (benchmarks/harness.py): ``eager``
(Detectron2's DefaultPredictor around the model), ``torchscript`` and ``onnx`` (ONNX Runtime's CPU
provider with as many threads as torch), each through the whole predictor: resize, model,
postprocessing (box rescale, mask paste). Models: ``toy``, configs/toy/ViLD-Toy-ensemble.yaml with
the demo's weights and text classifier when present (random otherwise), 24 classes, on the toy
world's validation images; ``lvis``, configs/LVIS-OV/vild_ensemble_R50_FPN.yaml with random weights
and 1,203 random text embeddings on random 640 x 480 images (resized to 1024 as at test time).
Also reported: export seconds per format and file sizes. Results:
benchmarks/results/export_latency.json.
"""
import argparse
import os
import tempfile
from pathlib import Path

from benchmarks.harness import RESULTS_DIR, interleave, table, write_results

TOY_CONFIG = "configs/toy/ViLD-Toy-ensemble.yaml"
TOY_WEIGHTS = "output/demo/latest/model_final.pth"
TOY_VOCABULARY = "output/demo/text_classifiers/toy_v4_val_*.npy"  # the demo's, built with the toy CLIP
LVIS_CONFIG = "configs/LVIS-OV/vild_ensemble_R50_FPN.yaml"
LVIS_CLASSES = 1203
LVIS_DIM = 512  # CLIP ViT-B/32


def model_setup(name: str, args, tmp: Path):
    """(cfg, eager model, RGB images, vocabulary file, weights path or None) of one benchmarked model."""
    import glob

    import numpy as np
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import read_image

    from vild_d2.clip_model import clip_identity
    from vild_d2.engine import load_config
    from vild_d2.export import build_inference_model
    from vild_d2.text_classifier import save_text_classifier

    rng = np.random.default_rng(0)
    if name == "toy":
        weights = args.toy_weights if os.path.isfile(args.toy_weights) else None
        cfg = load_config(TOY_CONFIG, ["MODEL.WEIGHTS", weights or ""])
        names = list(MetadataCatalog.get(cfg.DATASETS.TEST[0]).thing_classes)
        dim = 64
        folder = Path(MetadataCatalog.get(cfg.DATASETS.TEST[0]).image_root) / "val"
        images = [read_image(str(p), format="RGB") for p in sorted(folder.glob("*.png"))[:args.images]]
    else:
        weights = None
        cfg = load_config(LVIS_CONFIG, ["MODEL.DEVICE", "cpu"])
        names, dim = [f"class_{i}" for i in range(LVIS_CLASSES)], LVIS_DIM
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(args.lvis_images)]
    torch.manual_seed(0)
    model = build_inference_model(cfg, dim, weights=weights is not None)
    # random text embeddings match no trained region embedding: the toy model would detect nothing
    found = sorted(glob.glob(TOY_VOCABULARY)) if name == "toy" and weights else []
    if found:
        return cfg, model, images, found[0], weights
    emb = rng.normal(size=(len(names), dim)).astype(np.float32)
    vocabulary = save_text_classifier(tmp / f"{name}_vocabulary.npy", emb / np.linalg.norm(emb, axis=1, keepdims=True),
                                      names, {"clip": clip_identity(cfg.MODEL.VILD.CLIP_MODEL)})
    return cfg, model, images, str(vocabulary), weights


def bench_model(name: str, args, tmp: Path) -> dict:
    """Export times, file sizes and the interleaved per-image latencies of one model."""
    import torch

    from vild_d2.export import (
        ExportedPredictor,
        compare_detections,
        eager_predictor,
        export_model,
        model_input,
        read_manifest,
        summarize,
    )

    cfg, model, images, vocabulary, weights = model_setup(name, args, tmp)
    dim = model.roi_heads.box_predictor.projection.out_features
    folder = tmp / f"{name}_export"
    sample = model_input(images[0], cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    traced_with = torch.nn.functional.normalize(torch.randn(cfg.MODEL.ROI_HEADS.NUM_CLASSES, dim), dim=1)
    export_s = export_model(cfg, model, folder, ["torchscript", "onnx"], sample, traced_with, weights=weights)
    sizes = {fmt: r["size"] / 2**20 for fmt, r in read_manifest(folder)["files"].items()}
    threads = torch.get_num_threads()
    runners = {fmt: ExportedPredictor(folder, vocabulary, fmt, num_threads=threads) for fmt in ("torchscript", "onnx")}
    first = runners["onnx"]
    predictors = {"eager": eager_predictor(cfg, model, first.embeddings, first.class_names, first.novel_ids),
                  **runners}
    refs = [predictors["eager"](im) for im in images]  # also the untimed first call of each variant
    agreement = {fmt: summarize(compare_detections(r, fn(im)) for r, im in zip(refs, images))
                 for fmt, fn in runners.items()}
    rounds = interleave({v: (lambda fn=fn: [fn(im) for im in images]) for v, fn in predictors.items()},
                        args.rounds, warmup=args.warmup, order="rotate",
                        log="round {round}{warm} " + name + " {name}: {wall:.2f} s")
    hw = list(sample.shape[-2:])
    print(f"{name}: {len(images)} images per round (the first at {hw[0]} x {hw[1]} after resizing), "
          f"K={len(first.class_names)}, weights {weights or 'random'}")
    for fmt, a in agreement.items():
        print(f"  {fmt} vs eager: {a['detections']} detections, classes equal {a['classes_equal']}, max box diff "
              f"{a['max_box_diff']:.1e} px, max score diff {a['max_score_diff']:.1e}, "
              f"min mask IoU {a['min_mask_iou']:.4f} "
              f"(at most {a['max_mask_pixels_differ']} pixels differ)")
    return {"config": TOY_CONFIG if name == "toy" else LVIS_CONFIG, "weights": weights,
            "num_classes": len(first.class_names), "images_per_round": len(images), "first_image_hw": hw,
            "agreement": agreement, "export_s": export_s, "size_mb": sizes,
            "latency": rounds.stats(baseline="eager", scale=1 / len(images)), "errors": rounds.errors}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=("toy", "lvis"), default=["toy", "lvis"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--images", type=int, default=4, help="toy images per round and variant")
    p.add_argument("--lvis-images", type=int, default=2, help="LVIS-sized images per round and variant")
    p.add_argument("--toy-weights", default=TOY_WEIGHTS)
    p.add_argument("--output", default=str(RESULTS_DIR / "export_latency.json"))
    args = p.parse_args()
    import torch

    results = {"torch_threads": torch.get_num_threads(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            results["models"][name] = bench_model(name, args, Path(tmp))
    rows = []
    for name, r in results["models"].items():
        for v, s in r["latency"].items():
            size = r["size_mb"].get(v)
            rows.append([name, v, f"{s['min_s'] * 1000:.0f}", f"{s['median_s'] * 1000:.0f}",
                         f"{s.get('ratio_median', 1.0):.2f}", f"{r['export_s'][v]:.1f}" if v in r["export_s"] else "",
                         f"{size:.1f}" if size else ""])
    print(f"torch threads {results['torch_threads']}; ms per image, min / median over rounds")
    print(table(["model", "variant", "min ms", "median ms", "median / eager", "export s", "file MB"], rows))
    print(f"results: {write_results(args.output, results)}")


if __name__ == "__main__":
    main()
