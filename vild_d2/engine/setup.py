"""A config as every command of the project reads it: Detectron2's defaults, the ViLD keys, the
file with its ``_BASE_`` chain, overlays and overrides, and the datasets it registers
(``DATASETS.VILD.REGISTER``); and ``train_net.py``'s setup around it."""
from typing import Sequence

from detectron2.config import CfgNode as CN
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import vild_defaults
from ..data import register_from_config
from ..locking import exclusive

__all__ = ["load_config", "setup_cfg"]


def load_config(path: str, opts: Sequence[str] = (), overlays: Sequence[str] = (), register: bool = True) -> CN:
    """A Detectron2 config with the ViLD keys: ``path`` (with its ``_BASE_`` chain), then each
    overlay YAML file, then ``opts`` (KEY VALUE ...). With ``register``, the datasets listed in
    ``DATASETS.VILD.REGISTER`` are registered, so every tool sees the config's datasets."""
    cfg = vild_defaults()
    cfg.merge_from_file(str(path))
    for overlay in overlays:
        cfg.merge_from_file(str(overlay))
    opts = list(opts)
    if len(opts) % 2:
        raise ValueError(f"config overrides come as KEY VALUE pairs, got {len(opts)} words: {opts[:6]}"
                         f"{' ...' if len(opts) > 6 else ''}; a glob the shell expanded into several paths "
                         "ends up here: quote it ('folder/*.png') or give the folder")
    cfg.merge_from_list(opts)
    if register:
        register_from_config(cfg)
    return cfg


def setup_cfg(args):
    """Config from ``--config-file`` and ``opts`` with the ViLD keys; Detectron2's default setup;
    datasets named in ``DATASETS.VILD.REGISTER`` registered."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if comm.is_main_process() and not getattr(args, "eval_only", False):
        with exclusive(cfg.OUTPUT_DIR, "training"):
            pass  # a job still training into OUTPUT_DIR: stop now, before anything there is rewritten
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="vild_d2")
    return cfg
