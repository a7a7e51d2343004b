"""Command line of tools/build_region_cache.py (kept in the package so launch() can pickle it)."""
import argparse
import logging

import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from ..clip_model import load_clip
from ..engine import load_config
from .builder import RegionCacheSettings, build_region_cache
from .proposals import ProposalFileSource, detector_proposal_source

logger = logging.getLogger(__name__)

__all__ = ["make_parser", "build_from_args"]


def make_parser() -> argparse.ArgumentParser:
    d = RegionCacheSettings()
    p = argparse.ArgumentParser(description="Build the offline CLIP region-embedding cache of a dataset.")
    p.add_argument("--config-file", required=True, help="ViLD config: CLIP_MODEL, NUM_CACHED_PROPOSALS, "
                   "CROP_SCALES, REGION_CACHE_DIR and DATASETS.TRAIN are read from it")
    p.add_argument("--dataset", default="", help="registered dataset (default: DATASETS.TRAIN[0])")
    p.add_argument("--proposals", default="", help="proposal file (.npz; see tools/convert_proposals.py)")
    p.add_argument("--allow-pickle", action="store_true", help="read a pickled Detectron2 proposal file "
                   "(as plain data only)")
    p.add_argument("--detector-config", default="", help="config of a trained class-agnostic detector / RPN")
    p.add_argument("--detector-weights", default="", help="its weights")
    p.add_argument("--output", default="", help="cache folder (default: MODEL.VILD.REGION_CACHE_DIR)")
    p.add_argument("--shard-size", type=int, default=d.shard_size, help="images per shard")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="crops per encoder forward")
    p.add_argument("--combine", choices=("sum", "first"), default=d.combine)
    p.add_argument("--num-workers", type=int, default=2, help="image-decoding DataLoader workers")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-gpus", type=int, default=1, help="processes on this machine (gloo on CPU)")
    p.add_argument("--dist-url", default="auto")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def build_from_args(args) -> None:
    setup_logger(name="vild_d2")
    cfg = load_config(args.config_file, args.opts)  # registers DATASETS.VILD.REGISTER, as train_net.py does
    dataset = args.dataset or cfg.DATASETS.TRAIN[0]
    if dataset not in DatasetCatalog.list():
        raise KeyError(f"dataset {dataset!r} is not registered: list it in the config's DATASETS.VILD.REGISTER "
                       "or use a built-in name (datasets/README.md)")
    out = args.output or cfg.MODEL.VILD.REGION_CACHE_DIR
    if not out:
        raise ValueError("no output folder: pass --output or set MODEL.VILD.REGION_CACHE_DIR")
    if bool(args.proposals) == bool(args.detector_weights):
        raise ValueError("give exactly one proposal source: --proposals FILE, or --detector-config and "
                         "--detector-weights")
    if args.proposals:
        source = ProposalFileSource(args.proposals, allow_pickle=args.allow_pickle)
    else:
        det_cfg = load_config(args.detector_config or args.config_file)
        source = detector_proposal_source(det_cfg, args.detector_weights, cfg.MODEL.VILD.NUM_CACHED_PROPOSALS,
                                          args.device)
    model = load_clip(cfg.MODEL.VILD.CLIP_MODEL, args.device)
    settings = RegionCacheSettings(num_proposals=cfg.MODEL.VILD.NUM_CACHED_PROPOSALS,
                                   scales=tuple(cfg.MODEL.VILD.CROP_SCALES), combine=args.combine,
                                   shard_size=args.shard_size, batch_size=args.batch_size)
    build_region_cache(out, DatasetCatalog.get(dataset), source, model, cfg.MODEL.VILD.CLIP_MODEL, settings,
                       dataset_name=dataset, num_workers=args.num_workers)
    logger.info("region cache ready: %s", out)
