#!/usr/bin/env python
"""Inference cost of CLIP on cropped regions (MODEL.VILD.TEST_SCORES "clip" / "text+clip" on the
ViLD-text model) against ViLD-ensemble, on trained models of benchmarks/toy_paper_table.py.

    python benchmarks/bench_crop_scoring.py [--runs output/toy_table/seed0] [--images 50] [--rounds 5]

Every variant runs the same validation images one at a time (batch 1, as `demo.py` does);
variants are interleaved round by round in one process. Reported per variant: the min and
median over rounds of the mean time per image, the ratio of the medians to ViLD-ensemble's, the
time inside the CLIP crop embedder alone, and the mean number of detections per image.
"""
import argparse
import logging
import statistics
import time
from pathlib import Path

import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.utils.logger import setup_logger

from vild_d2.artifacts import write_json
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
        raise SystemExit(f"{folder} holds no finished {sorted(missing)} run: run benchmarks/toy_paper_table.py "
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
    p.add_argument("--output", default=str(Path(__file__).resolve().parent / "results/crop_scoring_cost.json"))
    args = p.parse_args()
    setup_logger(name="vild_d2")
    runs = find_runs(Path(args.runs))
    variants = {"ViLD-ensemble": build(runs["ensemble"], "model"), "ViLD-text": build(runs["text"], "model"),
                "CLIP on cropped regions": build(runs["text"], "clip"),
                "ViLD-text + CLIP": build(runs["text"], "text+clip")}
    cfg = variants["ViLD-text"][0]
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [mapper(r) for r in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.images]]
    crop_time = dict.fromkeys(variants, 0.0)
    for name, (_, model) in variants.items():
        if model.roi_heads.crop_embedder is not None:
            model.roi_heads.crop_embedder.register_forward_pre_hook(lambda m, inp: setattr(m, "t0", time.perf_counter()))
            model.roi_heads.crop_embedder.register_forward_hook(
                lambda m, inp, out, name=name: crop_time.__setitem__(name, crop_time[name] + time.perf_counter() - m.t0))
    times = {name: [] for name in variants}
    detections = {}
    with torch.no_grad():
        for name, (_, model) in variants.items():  # warm-up, and the detections each keeps
            detections[name] = statistics.fmean(len(model([x])[0]["instances"]) for x in inputs[:5])
        crop_time = dict.fromkeys(crop_time, 0.0)
        for r in range(args.rounds):
            names = list(variants)
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
                model = variants[name][1]
                start = time.perf_counter()
                for x in inputs:
                    model([x])
                times[name].append((time.perf_counter() - start) / len(inputs))
    base = statistics.median(times["ViLD-ensemble"])
    rows = {name: {"min_ms": 1000 * min(t), "median_ms": 1000 * statistics.median(t),
                   "ratio_to_ensemble": statistics.median(t) / base,
                   "crop_embedder_ms": 1000 * crop_time[name] / (args.rounds * len(inputs)),
                   "detections_per_image": detections[name]} for name, t in times.items()}
    lines = ["| variant | min ms / image | median ms / image | median / ViLD-ensemble | CLIP crops ms / image "
             "| detections / image |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {r['min_ms']:.1f} | {r['median_ms']:.1f} | {r['ratio_to_ensemble']:.2f}x | "
              f"{r['crop_embedder_ms']:.1f} | {r['detections_per_image']:.1f} |" for n, r in rows.items()]
    logger.info("inference cost, %d images x %d rounds, %d threads:\n%s", len(inputs), args.rounds,
                torch.get_num_threads(), "\n".join(lines))
    write_json(args.output, {"runs": {k: str(v) for k, v in runs.items()}, "images": len(inputs),
                             "rounds": args.rounds, "threads": torch.get_num_threads(), "variants": rows})


if __name__ == "__main__":
    main()
