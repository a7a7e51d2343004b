"""Training and evaluation entry points (used by train_net.py)."""
from .trainer import ViLDTrainer, init_torchrun, setup_cfg, summary_table

__all__ = ["ViLDTrainer", "init_torchrun", "setup_cfg", "summary_table"]
