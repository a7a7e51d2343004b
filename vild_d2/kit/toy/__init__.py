"""The toy world: a synthetic open-vocabulary detection dataset and a toy CLIP teacher."""
from .dataset import SPLIT_FILES, TOY_PREFIX, ToyWorldSettings, build_toy_world
from .registration import default_toy_root, register_toy_world, toy_register_entries, toy_register_opts
from .scenes import toy_categories

__all__ = ["SPLIT_FILES", "TOY_PREFIX", "ToyWorldSettings", "build_toy_world", "toy_categories", "default_toy_root",
           "register_toy_world", "toy_register_entries", "toy_register_opts"]
