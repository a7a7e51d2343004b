#!/usr/bin/env python
"""Run the whole ViLD recipe on any registered dataset with one command, cached stage by stage:

text classifiers -> proposal network (base classes) -> CLIP region cache -> ViLD training +
evaluation -> proposal recall (novel vs base). A rerun skips finished stages; a killed one resumes.

    python tools/run_recipe.py --config-file configs/LVIS-OV/vild_ensemble_R50_FPN.yaml \\
        --proposal-config configs/LVIS-OV/rpn_R50_FPN.yaml --output output/lvis --num-gpus 8
    # the same recipe rehearsed on CPU (datasets/prepare_mini_lvis.py makes the stand-in data):
    DETECTRON2_DATASETS=datasets/mini_lvis python tools/run_recipe.py \\
        --config-file configs/LVIS-OV/vild_ensemble_R50_FPN.yaml --proposal-config configs/LVIS-OV/rpn_R50_FPN.yaml \\
        --overlay configs/overlays/CPU-rehearsal.yaml --output output/lvis_rehearsal \\
        MODEL.VILD.CLIP_MODEL datasets/mini_lvis/clip_vit_b32.pt

Trailing KEY VALUE pairs (after --output, or after "--") override the ViLD config; --proposal-opts
KEY VALUE ... the proposal network's. The proposal network trains on the ViLD config's
DATASETS.TRAIN, with the datasets that config registers. Several machines: --num-machines,
--machine-rank, --dist-url, as in train_net.py.
"""
import argparse
import json
import logging

from detectron2.utils.logger import setup_logger

import vild_d2  # noqa: F401  (registers components and datasets)
from vild_d2.engine import summary_table
from vild_d2.recipe import RecipeSettings, run_recipe, summary


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the ViLD config (its DATASETS.TRAIN / TEST, CLIP, mode)")
    p.add_argument("--proposal-config", required=True, help="the class-agnostic proposal network's config")
    p.add_argument("--proposal-weights", default="", help="a trained proposal network: skip its training")
    p.add_argument("--overlay", action="append", default=[], help="YAML merged into both configs (repeatable)")
    p.add_argument("--proposal-opts", nargs="*", default=[], help="proposal config overrides: KEY VALUE ...")
    p.add_argument("--output", default="output/recipe", help="recipe folder (default: %(default)s)")
    p.add_argument("--no-recall", action="store_true", help="skip the proposal recall stage")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per machine (gloo on CPUs)")
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0)
    p.add_argument("--dist-url", default="auto")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="ViLD config overrides: KEY VALUE ...")
    args = p.parse_args()
    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts  # "--" may end the options
    setup_logger(name="vild_d2")
    setup_logger(name="detectron2")
    settings = RecipeSettings(vild_config=args.config_file, proposal_config=args.proposal_config,
                              opts=tuple(opts), proposal_opts=tuple(args.proposal_opts),
                              overlays=tuple(args.overlay), proposal_weights=args.proposal_weights,
                              recall_top_k=0 if args.no_recall else RecipeSettings.recall_top_k)
    plan = run_recipe(args.output, settings, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url)
    if args.machine_rank:
        return
    out = summary(plan)
    log = logging.getLogger("vild_d2.recipe")
    for name, (secs, how) in (out["timings"] or {}).items():
        log.info("stage %-34s %-7s %8.1f s", name, how, secs)
    if out["results"]:
        log.info("results (%s):\n%s", out["vild_dir"], summary_table(out["results"]))
    if out["recall"]:
        log.info("proposal recall: %s", json.dumps(out["recall"]))


if __name__ == "__main__":
    main()
