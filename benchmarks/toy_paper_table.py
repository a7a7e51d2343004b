#!/usr/bin/env python
"""ViLD's LVIS table in miniature, on the toy world: the same detector and schedule for

(a) supervised, base classes only   (b) supervised, all classes (upper bound)
(c) ViLD-text  (d) ViLD-image  (e) ViLD  (f) ViLD-ensemble

Mask AP, APr (novel), APc, APf on the toy validation set, written as markdown to
benchmarks/results/toy_paper_table.md. Stages (teacher, RPN, region cache, text classifiers)
are shared with and cached like ``python -m vild_d2.pipeline``.

    python benchmarks/toy_paper_table.py [--seeds 0 1] [--output output/demo] [--config-file ...]
                                         [--rpn-config-file ...] [--rows ...] [--opts KEY VALUE ...]

Every row trains configs/toy/ViLD-Toy-R18-ensemble.yaml by default (the full-width R18-FPN,
1,200 iterations of 4 images) from the weights of configs/toy/RPN-Toy-R18-FPN.yaml; `make demo`
trains the same method at half width on as many images (benchmarks/README.md).
"""
import argparse
import dataclasses
import json
import logging
from pathlib import Path

from detectron2.utils.logger import setup_logger

from vild_d2.toy import default_toy_root
from vild_d2.pipeline import FAST, VAL, Pipeline, PipelineSettings
from vild_d2.toy import SPLIT_FILES, TOY_PREFIX, toy_categories

logger = logging.getLogger("vild_d2.toy_paper_table")
ROWS = (("(a) supervised, base only", "supervised_base"), ("(b) supervised, all classes", "supervised_all"),
        ("(c) ViLD-text", "text"), ("(d) ViLD-image", "image"), ("(e) ViLD", "vild"), ("(f) ViLD-ensemble", "ensemble"))


def variant_opts(kind: str, world: str):
    if kind.startswith("supervised"):
        # Standard class-agnostic Mask R-CNN heads with a learned classifier.
        opts = ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
                "MODEL.VILD.MODE", "text"]  # text: the data mapper loads no cached regions
        if kind == "supervised_all":
            return opts + ["DATASETS.TRAIN", f"('{TOY_PREFIX}_train_full',)", "MODEL.ROI_HEADS.NUM_CLASSES",
                           str(len(toy_categories()))]
        # Evaluated with the base vocabulary against all classes: novel classes are never predicted.
        entry = [f"{VAL}_base_vocab", str(Path(world) / SPLIT_FILES["val"]), str(Path(world) / "images"),
                 "base"]
        return opts + ["DATASETS.VILD.REGISTER", repr([entry]), "DATASETS.TEST", f"('{VAL}_base_vocab',)"]
    return ["MODEL.VILD.MODE", kind]


CONFIGS = Path(__file__).resolve().parents[1] / "configs/toy"
TABLE_CONFIG, TABLE_RPN_CONFIG = CONFIGS / "ViLD-Toy-R18-ensemble.yaml", CONFIGS / "RPN-Toy-R18-FPN.yaml"
FIT_IMAGES = 300  # training images whose cached regions measure the distillation fit (of 1,200)


def model_diagnostics(pipe_out, kind: str):
    """Zero-shot accuracy of the trained text / image heads on the validation ground-truth boxes
    (``heads``) and, for rows that distil, how closely the distilled head fits its CLIP targets on
    the cached regions of the first FIT_IMAGES training images (``fit``). Cached in the run's
    folder (as the pipeline caches recall.json): a row run and the assembling run then evaluate
    each model once."""
    cfg = pipe_out["vild_cfg"]
    cached = Path(cfg.OUTPUT_DIR) / "diagnostics.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from vild_d2.engine import ViLDTrainer
    from vild_d2.evaluation import distillation_fit, object_embedding_accuracy
    from vild_d2.region_cache import RegionCache

    model = ViLDTrainer.build_model(cfg)
    DetectionCheckpointer(model).load(str(Path(cfg.OUTPUT_DIR) / "model_final.pth"))
    novel = MetadataCatalog.get(VAL).novel_class_ids
    out = {"heads": object_embedding_accuracy(model.eval(), DatasetCatalog.get(VAL), novel, cfg.INPUT.FORMAT)}
    if kind != "text":
        train = DatasetCatalog.get(f"{TOY_PREFIX}_train_full")[:FIT_IMAGES]  # novel objects labelled
        out["fit"] = distillation_fit(model, RegionCache(cfg.MODEL.VILD.REGION_CACHE_DIR), train, novel,
                                      cfg.INPUT.FORMAT)
    cached.write_text(json.dumps(out, indent=1))
    return out


def detection_breakdown(pipe_out, gt: dict):
    """Where the run's confident validation detections land (see confident_detection_breakdown);
    ``gt``: the validation json dict."""
    from vild_d2.evaluation import confident_detection_breakdown

    novel = [c["id"] for c in gt["categories"] if c["frequency"] == "r"]
    return confident_detection_breakdown(Pipeline.lvis_results(pipe_out["vild_cfg"]), gt, novel)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--output", default="output/demo", help="pipeline folder; the default shares the "
                   "toy teacher and text classifiers with `make demo`")
    p.add_argument("--config-file", default=str(TABLE_CONFIG), help="ViLD config of every row (rows override "
                   "the mode and, for (a)/(b), the heads)")
    p.add_argument("--rpn-config-file", default=str(TABLE_RPN_CONFIG), help="base-class RPN whose proposals "
                   "fill the region cache and whose weights every row starts from (same backbone as --config-file)")
    p.add_argument("--fast", action="store_true", help="tiny sizes, a few iterations (smoke test); the table "
                   "goes to --output instead of benchmarks/results")
    p.add_argument("--rows", nargs="+", choices=[k for _, k in ROWS], default=[k for _, k in ROWS],
                   help="train only these rows (run several instances in parallel, then once with all rows "
                        "to assemble the table from the cached runs)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides for every row: KEY VALUE ... (last on the command line)")
    return p


def main():
    args = make_parser().parse_args()
    setup_logger(name="vild_d2")
    base = dataclasses.replace(FAST if args.fast else PipelineSettings(), vild_config=args.config_file,
                               rpn_config=args.rpn_config_file)
    table, heads, fits, landing, naming, recall, val_gt = {}, {}, {}, {}, {}, None, None
    for seed in args.seeds:
        for label, kind in [(label, kind) for label, kind in ROWS if kind in args.rows]:
            opts = tuple(variant_opts(kind, default_toy_root()) + ["SEED", str(seed)] + list(base.opts) + list(args.opts))
            out = Pipeline(args.output, default_toy_root(), dataclasses.replace(base, opts=opts, num_pictures=0)).run()
            metrics = out["results"][next(iter(out["results"]))]["segm"]
            table.setdefault(label, []).append([metrics[k] for k in ("AP", "APr", "APc", "APf")])
            recall = out["recall"]
            if val_gt is None:  # the first row's pipeline has built the toy world
                val_gt = json.loads((Path(default_toy_root()) / SPLIT_FILES["val"]).read_text())
            landing.setdefault(label, []).append(detection_breakdown(out, val_gt))
            naming.setdefault(label, []).append(out["naming"])
            if not kind.startswith("supervised"):
                diagnostics = model_diagnostics(out, kind)
                heads.setdefault(label, []).append(diagnostics["heads"])
                if "fit" in diagnostics:
                    fits.setdefault(label, []).append(diagnostics["fit"])
    lines = ["| model | mask AP | APr (novel) | APc | APf |", "| --- | --- | --- | --- | --- |"]
    for label, runs in table.items():
        lines.append(f"| {label} | " + " | ".join(_cell([r[i] for r in runs]) for i in range(4)) + " |")
    lines += ["", "Zero-shot accuracy of each region-embedding head on validation ground-truth boxes "
              "(argmax over all 24 classes; diagnostic), and how often the text head's softmax with background "
              "calls the object background:", "",
              "| model | head | novel | base |", "| --- | --- | --- | --- |"]
    for label, runs in heads.items():
        for head, name in (("text", "text"), ("image", "image"), ("text_background", "text: background")):
            if head in runs[0]:
                lines.append(f"| {label} | {name} | " + " | ".join(
                    _cell([100 * r[head][g] for r in runs]) for g in ("novel", "base")) + " |")
    lines += ["", f"How closely the distilled head fits its CLIP targets on its own training regions (the cached "
              f"regions of {FIT_IMAGES} training images, novel objects labelled for this only): mean cosine of "
              "region and CLIP embedding, and the share of object regions each names right (argmax over 24 "
              "classes):", "",
              "| model | novel: cosine | novel: model right | novel: CLIP right | base: cosine | base: model right "
              "| base: CLIP right | background: cosine |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, runs in fits.items():
        cells = [_cell([f[g][k] for f in runs], digits=3 if k == "cosine" else 1, scale=1 if k == "cosine" else 100)
                 for g in ("novel", "base") for k in ("cosine", "student_accuracy", "clip_accuracy")]
        lines.append(f"| {label} | " + " | ".join(cells + [_cell([f["background"]["cosine"] for f in runs], digits=3)])
                     + " |")
    lines += ["", "Where confident detections (score >= 0.3) on the validation images land, by predicted "
              "class (novel / base): on an object of that class, on another object, on background "
              "(IoU >= 0.5 with the best-overlapping object):", "",
              "| model | novel: right | novel: other object | novel: background | base: right | base: other object "
              "| base: background |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, runs in landing.items():
        lines.append(f"| {label} | " + " | ".join(_cell([r[g][w] for r in runs], digits=0) for g in ("novel", "base")
                                                  for w in ("right", "other_object", "background")) + " |")
    lines += ["", "Novel validation objects (all of them, whether or not the row can name novel classes): found "
              "by a detection of any class at box IoU >= 0.5, and named right by the top-scoring such detection "
              "(the pipeline's report):", "", "| model | novel objects | found | named right |", "| --- | --- | --- | --- |"]
    for label, runs in naming.items():
        lines.append(f"| {label} | {runs[0]['objects']} | " + " | ".join(
            _cell([100 * r[k] / max(r["objects"], 1) for r in runs]) + " %" for k in ("found", "named_right")) + " |")
    lines += ["", f"Proposal recall AR@300 (IoU 0.5) of the base-class RPN on validation objects: novel "
              f"{100 * recall['novel']:.1f}%, base {100 * recall['base']:.1f}%.", "",
              f"Seeds: {args.seeds}; overrides: {args.opts or 'none'}; config: {Path(base.vild_config).name}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if len(args.rows) < len(ROWS):  # a partial run must not overwrite the assembled table
        logger.info("only rows %s: table printed, not written (rerun with all rows to assemble it)", args.rows)
        return
    out = Path(args.output) if args.fast else Path(__file__).resolve().parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy_paper_table.md").write_text(text)


def _cell(vals, digits: int = 1, scale: float = 1) -> str:
    vals = [scale * v for v in vals]
    return f"{sum(vals) / len(vals):.{digits}f}" + (f" ± {max(vals) - min(vals):.{digits}f}" if len(vals) > 1 else "")


if __name__ == "__main__":
    main()
