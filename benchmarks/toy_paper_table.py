#!/usr/bin/env python
"""ViLD's LVIS table in miniature, on the toy world: the same detector and schedule for

(a) supervised, base classes only   (b) supervised, all classes (upper bound)
(c) ViLD-text  (d) ViLD-image  (e) ViLD  (f) ViLD-ensemble

Mask AP, APr (novel), APc, APf on toy_v1_val, written as markdown to
benchmarks/results/toy_paper_table.md. Stages (teacher, RPN, region cache, text classifiers)
are shared with and cached like ``python -m vild_d2.pipeline``.

    python benchmarks/toy_paper_table.py [--seeds 0 1] [--output output/paper_table] [KEY VALUE ...]
"""
import argparse
from pathlib import Path

from detectron2.utils.logger import setup_logger

from vild_d2.data import register_ov_lvis_instances
from vild_d2.data.builtin import default_toy_root
from vild_d2.pipeline import Pipeline, PipelineSettings
from vild_d2.toy import SPLIT_FILES

ROWS = (("(a) supervised, base only", "supervised_base"), ("(b) supervised, all classes", "supervised_all"),
        ("(c) ViLD-text", "text"), ("(d) ViLD-image", "image"), ("(e) ViLD", "vild"), ("(f) ViLD-ensemble", "ensemble"))


def variant_opts(kind: str, world: str):
    if kind.startswith("supervised"):
        # Standard class-agnostic Mask R-CNN heads with a learned classifier.
        opts = ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
                "MODEL.VILD.MODE", "text"]  # text: the data mapper loads no cached regions
        if kind == "supervised_all":
            return opts + ["DATASETS.TRAIN", "('toy_v1_train_full',)", "MODEL.ROI_HEADS.NUM_CLASSES", "24"]
        # Evaluated with the base vocabulary against all classes: novel classes are never predicted.
        register_ov_lvis_instances("toy_v1_val_base_vocab", str(Path(world) / SPLIT_FILES["val"]),
                                   str(Path(world) / "images"), vocabulary="base")
        return opts + ["DATASETS.TEST", "('toy_v1_val_base_vocab',)"]
    return ["MODEL.VILD.MODE", kind]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--output", default="output/paper_table")
    p.add_argument("--world", default=default_toy_root())
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every row")
    args = p.parse_args()
    setup_logger(name="vild_d2")
    table = {}
    for seed in args.seeds:
        for label, kind in ROWS:
            opts = tuple(variant_opts(kind, args.world) + ["SEED", str(seed)] + list(args.opts))
            pipe = Pipeline(args.output, args.world, PipelineSettings(opts=opts, num_pictures=0))
            out = pipe.run()
            metrics = out["results"][next(iter(out["results"]))]["segm"]
            table.setdefault(label, []).append([metrics[k] for k in ("AP", "APr", "APc", "APf")])
    lines = ["| model | mask AP | APr (novel) | APc | APf |", "| --- | --- | --- | --- | --- |"]
    for label, runs in table.items():
        cells = []
        for i in range(4):
            vals = [r[i] for r in runs]
            cells.append(f"{sum(vals) / len(vals):.1f}" + (f" ± {max(vals) - min(vals):.1f}" if len(vals) > 1 else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + f"\n\nSeeds: {args.seeds}; overrides: {args.opts or 'none'}; config: " \
                              f"{Path(PipelineSettings().vild_config).name}.\n"
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "toy_paper_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
