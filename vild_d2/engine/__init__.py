"""Training and evaluation entry points (used by train_net.py)."""
from .checkpoint import VerifiedCheckpointer, load_trained_weights
from .distributed import init_torchrun, launch
from .setup import load_config, setup_cfg
from .trainer import ViLDTrainer, summary_table

__all__ = ["load_config", "setup_cfg", "VerifiedCheckpointer", "load_trained_weights", "ViLDTrainer", "init_torchrun",
           "launch", "summary_table"]
