"""Training and evaluation entry points (used by train_net.py)."""
from .trainer import ViLDTrainer, setup_cfg

__all__ = ["ViLDTrainer", "setup_cfg"]
