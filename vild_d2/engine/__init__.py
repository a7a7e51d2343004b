"""Training and evaluation entry points (used by train_net.py)."""
from .checkpoint import VerifiedCheckpointer, load_trained_weights
from .trainer import ViLDTrainer, init_torchrun, setup_cfg, summary_table

__all__ = ["VerifiedCheckpointer", "load_trained_weights", "ViLDTrainer", "init_torchrun", "setup_cfg", "summary_table"]
