"""Inference cost of CLIP on cropped regions (MODEL.VILD.TEST_SCORES "clip" / "text+clip" on the
ViLD-text model) against ViLD-ensemble, on trained models of ``python -m benchmarks.toy_paper_table``.

    python -m benchmarks.bench_crop_scoring [--runs output/toy_table/seed0] [--images 50] [--rounds 5]

Every variant runs the same validation images one at a time (batch 1, as `demo.py` does);
variants are interleaved round by round in one process. Reported per variant: the min and
median over rounds of the mean time per image, the ratio of the medians to ViLD-ensemble's, the
time inside the CLIP crop embedder alone, and the mean number of detections per image.
"""
import argparse
import logging
import statistics
from pathlib import Path

import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.utils.logger import setup_logger

from benchmarks.harness import RESULTS_DIR, Timers, interleave, table, write_results
from vild_d2.engine import ViLDTrainer, load_config, load_trained_weights

logger = logging.getLogger("vild_d2.bench_crop_scoring")


def find_runs(folder: Path) -> dict:
    """The trained ViLD-text and ViLD-ensemble (own image box head) runs of a table seed folder."""
    runs = {}
    for cfg_file in sorted(folder.glob("vild_*/config.yaml")):
        cfg = load_config(cfg_file, register=False)
        if cfg.MODEL.META_ARCHITECTURE != "ViLDRCNN" or not (cfg_file.parent / "model_final.pth").is_file():
            continue
        v = cfg.MODEL.VILD
        if v.MODE == "text" or (v.MODE == "ensemble" and v.ENSEMBLE_IMAGE_BOX_HEAD):
            runs[v.MODE] = cfg_file
    missing = {"text", "ensemble"} - runs.keys()
    if missing:
        raise SystemExit(f"{folder} holds no finished {sorted(missing)} run: run python -m benchmarks.toy_paper_table "
                         f"--rows text ensemble --output {folder} first")
    return runs


def build(cfg_file: Path, test_scores: str):
    cfg = load_config(cfg_file, ["MODEL.VILD.TEST_SCORES", test_scores])
    model = ViLDTrainer.build_model(cfg)
    load_trained_weights(model, str(cfg_file.parent / "model_final.pth"), cfg.OUTPUT_DIR)
    return cfg, model.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="output/toy_table/seed0", help="a seed folder of toy_paper_table.py")
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--output", default=str(RESULTS_DIR / "crop_scoring_cost.json"))
    args = p.parse_args()
    setup_logger(name="vild_d2")
    runs = find_runs(Path(args.runs))
    variants = {"ViLD-ensemble": build(runs["ensemble"], "model"), "ViLD-text": build(runs["text"], "model"),
                "CLIP on cropped regions": build(runs["text"], "clip"),
                "ViLD-text + CLIP": build(runs["text"], "text+clip")}
    cfg = variants["ViLD-text"][0]
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [mapper(r) for r in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.images]]
    crops = Timers()  # time inside the CLIP crop embedder, by variant
    for name, (_, model) in variants.items():
        if model.roi_heads.crop_embedder is not None:
            crops.hook(model.roi_heads.crop_embedder, name)
    detections = {}
    with torch.no_grad():
        for name, (_, model) in variants.items():  # warm-up, and the detections each keeps
            detections[name] = statistics.fmean(len(model([x])[0]["instances"]) for x in inputs[:5])
        crops.reset()
        runners = {name: lambda model=model: [model([x]) for x in inputs] for name, (_, model) in variants.items()}
        times = interleave(runners, args.rounds, order="rotate").stats("ViLD-ensemble", scale=1 / len(inputs))
    rows = {name: {"min_ms": 1000 * t["min_s"], "median_ms": 1000 * t["median_s"],
                   "ratio_to_ensemble": t["ratio_median"],
                   "crop_embedder_ms": 1000 * crops.spent.get(name, 0.0) / (args.rounds * len(inputs)),
                   "detections_per_image": detections[name]} for name, t in times.items()}
    text = table(["variant", "min ms / image", "median ms / image", "median / ViLD-ensemble", "CLIP crops ms / image",
                  "detections / image"],
                 [[n, f"{r['min_ms']:.1f}", f"{r['median_ms']:.1f}", f"{r['ratio_to_ensemble']:.2f}x",
                   f"{r['crop_embedder_ms']:.1f}", f"{r['detections_per_image']:.1f}"] for n, r in rows.items()])
    logger.info("inference cost, %d images x %d rounds, %d threads:\n%s", len(inputs), args.rounds,
                torch.get_num_threads(), text)
    write_results(args.output, {"runs": {k: str(v) for k, v in runs.items()}, "images": len(inputs),
                                "rounds": args.rounds, "threads": torch.get_num_threads(), "variants": rows})


if __name__ == "__main__":
    main()
