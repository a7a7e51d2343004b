"""ViLD's LVIS table in miniature, on the toy world: the same detector and schedule for

(a) supervised, base classes only   (b) supervised, all classes (upper bound)
(c) ViLD-text  (d) ViLD-image  (e) ViLD  (f) ViLD-ensemble

Mask AP, APr (novel), APc, APf on the toy validation set, written as markdown to
benchmarks/results/toy_paper_table.md. Stages (teacher, RPN, region cache, text classifiers)
are shared with and cached like ``python -m vild_d2.kit.pipeline``.

    python -m benchmarks.toy_paper_table [--seeds 0 1] [--output output/demo] [--config-file ...]
                                         [--rpn-config-file ...] [--rows ...] [--opts KEY VALUE ...]

With --full-width every row trains configs/toy/ViLD-Toy-R18-ensemble.yaml (the full-width R18-FPN,
1,200 iterations of 4 images) from the weights of configs/toy/RPN-Toy-R18-FPN.yaml; `make demo`
trains the same method at half width on as many images (benchmarks/README.md).
"""
import argparse
import dataclasses
import json
import logging
from pathlib import Path

from detectron2.utils.logger import setup_logger

from benchmarks.harness import RESULTS_DIR, write_results
from benchmarks.toy_table_report import LOCALISATION_ROWS, render
from vild_d2.artifacts import write_json, write_text
from vild_d2.kit.pipeline import FAST, VAL, Pipeline, PipelineSettings
from vild_d2.kit.toy import SPLIT_FILES, TOY_PREFIX, default_toy_root, toy_categories
from vild_d2.model_zoo import configs_root

logger = logging.getLogger("vild_d2.toy_paper_table")
ROWS = (("(a) supervised, base only", "supervised_base"), ("(b) supervised, all classes", "supervised_all"),
        ("(b2) supervised, all classes, class-specific box + mask", "supervised_all_specific"),
        ("(c) ViLD-text", "text"), ("(g) CLIP on cropped regions", "clip_crops"),
        ("(h) ViLD-text + CLIP", "text_clip"), ("(d) ViLD-image", "image"), ("(e) ViLD", "vild"),
        ("(f) ViLD-ensemble", "ensemble"), ("(f2) ViLD-ensemble, one box head", "ensemble_one_head"))
# Inference-only rows: the trained ViLD-text model of the same seed, scored another way (TEST_SCORES).
TEST_SCORES = {"clip_crops": "clip", "text_clip": "text+clip"}


def variant_opts(kind: str, world: str):
    if kind.startswith("supervised"):
        # Standard class-agnostic Mask R-CNN heads with a learned classifier.
        opts = ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
                "MODEL.VILD.MODE", "text"]  # text: the data mapper loads no cached regions
        if kind == "supervised_all_specific":  # Detectron2's default heads: a box and a mask per class
            opts += ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "False",
                     "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "False"]
        if kind.startswith("supervised_all"):
            return opts + ["DATASETS.TRAIN", f"('{TOY_PREFIX}_train_full',)", "MODEL.ROI_HEADS.NUM_CLASSES",
                           str(len(toy_categories()))]
        # Evaluated with the base vocabulary against all classes: novel classes are never predicted.
        entry = [f"{VAL}_base_vocab", str(Path(world) / SPLIT_FILES["val"]), str(Path(world) / "images"),
                 "base"]
        return opts + ["DATASETS.VILD.REGISTER", repr([entry]), "DATASETS.TEST", f"('{VAL}_base_vocab',)"]
    if kind == "ensemble_one_head":
        return ["MODEL.VILD.MODE", "ensemble", "MODEL.VILD.ENSEMBLE_IMAGE_BOX_HEAD", "False"]
    return ["MODEL.VILD.MODE", "text" if kind in TEST_SCORES else kind]


CONFIGS = configs_root() / "toy"
TABLE_CONFIG, TABLE_RPN_CONFIG = CONFIGS / "ViLD-Toy-R18-ensemble.yaml", CONFIGS / "RPN-Toy-R18-FPN.yaml"
# The three-seed table's preset (the default): `make demo`'s half-width detector, 1,000 steps of 2 images.
HALF_CONFIG, HALF_RPN_CONFIG = CONFIGS / "ViLD-Toy-ensemble.yaml", CONFIGS / "RPN-Toy-Lite-FPN.yaml"
HALF_SCHEDULE = ("SOLVER.MAX_ITER", "1000", "SOLVER.STEPS", "(850,)")
FIT_IMAGES = 300  # training images whose cached regions measure the distillation fit (of 1,200)


def model_diagnostics(pipe_out, kind: str, weights: str = "model_final.pth", folder: str = ""):
    """Zero-shot accuracy of the trained text / image heads on the validation ground-truth boxes
    (``heads``) and, for rows that distil, how closely the distilled head fits its CLIP targets on
    the cached regions of the first FIT_IMAGES training images (``fit``), for the checkpoint
    ``weights`` of the run. Cached in ``folder`` (default: the run's, as the pipeline caches
    recall.json): a row run and the assembling run then evaluate each model once."""
    cfg = pipe_out["vild_cfg"]
    cached = Path(folder or cfg.OUTPUT_DIR) / "diagnostics.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from vild_d2.engine import ViLDTrainer
    from vild_d2.evaluation import distillation_fit, object_embedding_accuracy
    from vild_d2.region_cache import RegionCache

    model = ViLDTrainer.build_model(cfg)
    DetectionCheckpointer(model).load(str(Path(cfg.OUTPUT_DIR) / weights))
    novel = MetadataCatalog.get(VAL).novel_class_ids
    out = {"heads": object_embedding_accuracy(model.eval(), DatasetCatalog.get(VAL), novel, cfg.INPUT.FORMAT)}
    if kind != "text":
        train = DatasetCatalog.get(f"{TOY_PREFIX}_train_full")[:FIT_IMAGES]  # novel objects labelled
        out["fit"] = distillation_fit(model, RegionCache(cfg.MODEL.VILD.REGION_CACHE_DIR), train, novel,
                                      cfg.INPUT.FORMAT)
    write_json(cached, out)
    return out


def base_class_ap(cfg, val_gt: dict) -> dict:
    """Box and mask LVIS AP / AP50 / AP75 over the base classes only (class_subset_ap), from the
    run's validation results; cached in its folder."""
    cached = Path(cfg.OUTPUT_DIR) / "base_ap.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from vild_d2.evaluation import class_subset_ap

    base = [c["id"] for c in val_gt["categories"] if c["frequency"] != "r"]
    results, gt_file = Pipeline.lvis_results(cfg), str(Path(default_toy_root()) / SPLIT_FILES["val"])
    out = {t: class_subset_ap(results, gt_file, base, t) for t in ("bbox", "segm")}
    write_json(cached, out)
    return out


def detection_breakdown(pipe_out, gt: dict):
    """Where the run's confident validation detections land (see confident_detection_breakdown);
    ``gt``: the validation json dict."""
    from vild_d2.evaluation import confident_detection_breakdown

    novel = [c["id"] for c in gt["categories"] if c["frequency"] == "r"]
    return confident_detection_breakdown(Pipeline.lvis_results(pipe_out["vild_cfg"]), gt, novel)


def evaluate_weights(trained_cfg, weights: str, folder: str, **vild: str) -> dict:
    """Evaluate the checkpoint ``weights`` (a file name in the run's folder) of the run trained with
    ``trained_cfg`` on its test set, with MODEL.VILD keys overridden by ``vild`` (no training), into
    ``folder``; cached there (eval_results.json). Returns {"results", "vild_cfg"}."""
    cfg = trained_cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(Path(trained_cfg.OUTPUT_DIR) / weights)
    for key, value in vild.items():
        cfg.MODEL.VILD[key] = value
    cfg.OUTPUT_DIR = str(folder)
    done = Path(cfg.OUTPUT_DIR) / "eval_results.json"
    if not done.is_file():
        from vild_d2.engine import ViLDTrainer, load_trained_weights

        model = ViLDTrainer.build_model(cfg)
        load_trained_weights(model, cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR)
        ViLDTrainer.test(cfg, model)  # writes eval_results.json last
    return {"results": json.loads(done.read_text()), "vild_cfg": cfg}


def scored_differently(text_cfg, test_scores: str) -> dict:
    """Evaluate the trained ViLD-text model of ``text_cfg`` with MODEL.VILD.TEST_SCORES =
    ``test_scores`` (no training), into a subfolder of its run; cached there (eval_results.json)."""
    folder = Path(text_cfg.OUTPUT_DIR) / f"test_scores_{test_scores.replace('+', '_')}"
    return evaluate_weights(text_cfg, "model_final.pth", str(folder), TEST_SCORES=test_scores)


def train_row(args, base: PipelineSettings, seed: int, kind: str):
    """Train (or find cached) one row for one seed: (its pipeline, the pipeline's run output)."""
    opts = tuple(variant_opts(kind, default_toy_root()) + ["SEED", str(seed)] + list(base.opts) + list(args.opts))
    settings = dataclasses.replace(base, opts=opts, num_pictures=0)
    pipe = Pipeline(args.output.format(seed=seed), default_toy_root(), settings)
    out = pipe.run()
    if kind in TEST_SCORES:
        out = {**out, **scored_differently(out["vild_cfg"], TEST_SCORES[kind])}
    return pipe, out


def row_data(pipe: Pipeline, out: dict, seed: int, kind: str, val_gt: dict) -> dict:
    """A trained row's metrics and diagnostics as plain data."""
    results = out["results"][next(iter(out["results"]))]
    row = {"seed": seed, "folder": out["vild_cfg"].OUTPUT_DIR, "recall": out["recall"],
           "segm": {k: results["segm"][k] for k in ("AP", "APr", "APc", "APf")},
           "bbox": {k: results["bbox"][k] for k in ("AP", "APr", "APc", "APf")},
           "landing": detection_breakdown(out, val_gt), "naming": pipe.naming(out["vild_cfg"])}
    if not kind.startswith("supervised") and kind not in TEST_SCORES:
        row.update(model_diagnostics(out, kind))
    if kind in LOCALISATION_ROWS:
        row["base_ap"] = base_class_ap(out["vild_cfg"], val_gt)
    return row


def run_row(args, base: PipelineSettings, seed: int, kind: str, val_gt: dict) -> dict:
    """Train (or find cached) one row for one seed; its metrics and diagnostics as plain data."""
    pipe, out = train_row(args, base, seed, kind)
    return row_data(pipe, out, seed, kind, val_gt)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--output", default="output/toy_table/seed{seed}", help="pipeline folder, '{seed}' replaced by "
                   "the seed: one folder per seed lets seeds run in parallel (a folder takes one run at a time)")
    p.add_argument("--full-width", action="store_true", help="the earlier two-seed table's preset: the full-width "
                   "R18-FPN, 1,200 steps of 4 images (default: `make demo`'s half width, 1,000 steps of 2 images)")
    p.add_argument("--config-file", default=None, help="ViLD config of every row (rows override the mode and, for "
                   "the supervised rows, the heads); default: the preset's")
    p.add_argument("--rpn-config-file", default=None, help="base-class RPN whose proposals fill the region cache "
                   "and whose weights every row starts from (same backbone as --config-file); default: the preset's")
    p.add_argument("--fast", action="store_true", help="tiny sizes, a few iterations (smoke test); the table "
                   "goes to --output instead of benchmarks/results")
    p.add_argument("--rows", nargs="+", choices=[k for _, k in ROWS], default=[k for _, k in ROWS],
                   help="run only these rows (run several instances in parallel, then once with all rows "
                        "to assemble the table from the cached runs)")
    p.add_argument("--write", action="store_true", help="assemble and write the table also for a subset of --rows")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides for every row: KEY VALUE ... (last on the command line)")
    return p


def main():
    args = make_parser().parse_args()
    setup_logger(name="vild_d2")
    configs = (TABLE_CONFIG, TABLE_RPN_CONFIG, ()) if args.full_width else (HALF_CONFIG, HALF_RPN_CONFIG, HALF_SCHEDULE)
    settings = FAST if args.fast else PipelineSettings()
    base = dataclasses.replace(settings, vild_config=str(args.config_file or configs[0]),
                               rpn_config=str(args.rpn_config_file or configs[1]),
                               opts=tuple(settings.opts) + (() if args.fast else configs[2]))
    val_gt = None
    runs = {}
    for seed in args.seeds:
        for kind in [kind for _, kind in ROWS if kind in args.rows]:
            if val_gt is None:  # the first row's pipeline builds the toy world
                Pipeline(args.output.format(seed=seed), default_toy_root(), base).run_toy_stages()
                val_gt = json.loads((Path(default_toy_root()) / SPLIT_FILES["val"]).read_text())
            runs.setdefault(kind, []).append(run_row(args, base, seed, kind, val_gt))
    if len(args.rows) < len(ROWS) and not args.write:  # a partial run must not overwrite the assembled table
        logger.info("only rows %s: nothing assembled (rerun with all rows to assemble the table)", args.rows)
        return
    text = render(runs, dict(ROWS), val_gt, args, base)
    print(text)
    out = Path(args.output.format(seed="all")) if args.fast else RESULTS_DIR
    write_results(out / "toy_paper_table.json", runs)
    write_text(out / "toy_paper_table.md", text)


if __name__ == "__main__":
    main()
