"""Mixed-precision training steps (``SOLVER.AMP.ENABLED``) that clip true gradients, on CUDA and CPU.

* CUDA: Detectron2's :class:`AMPTrainer` (float16 autocast, a ``GradScaler``) with the gradients
  unscaled right after the backward pass. ``GradScaler.step`` does not unscale before stepping an
  optimizer that handles scaling itself (fused AdamW, ``MODEL.VILD.OPTIMIZER AdamW``), and
  Detectron2's ``SOLVER.CLIP_GRADIENTS`` clips inside ``optimizer.step``: without the explicit
  ``unscale_`` it clips gradients multiplied by the scale (65,536 at the start).
* CPU: bfloat16 autocast, which keeps float32's exponent range, so no scaling is needed.
"""
import contextlib

import detectron2.engine.defaults as d2_defaults
import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from .distributed import is_cuda

__all__ = ["ScaledClippingAMPTrainer", "CPUAutocastTrainer", "amp_trainer_for"]


class ScaledClippingAMPTrainer(AMPTrainer):
    """:class:`AMPTrainer` whose hooks, gradient clipping and optimizer see unscaled gradients.

    ``unscale_`` runs once per step before ``after_backward``; ``GradScaler.step`` then knows the
    gradients are unscaled (it skips the step on inf / NaN as before, and fused optimizers get no
    second division)."""

    def after_backward(self):
        self.grad_scaler.unscale_(self.optimizer)
        super().after_backward()


class CPUAutocastTrainer(SimpleTrainer):
    """``SOLVER.AMP.ENABLED`` on CPU: each step under bfloat16 autocast. Detectron2's AMPTrainer
    asserts CUDA; bfloat16 keeps float32's exponent range, so no gradient scaling is needed."""

    def __init__(self, model, data_loader, optimizer, **kwargs):
        super().__init__(model, data_loader, optimizer)

    def run_step(self):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            super().run_step()


@contextlib.contextmanager
def amp_trainer_for(device: str):
    """Inside the block, ``DefaultTrainer`` builds the AMP step of ``device`` (``MODEL.DEVICE``)
    for ``SOLVER.AMP.ENABLED`` instead of Detectron2's AMPTrainer."""
    original = d2_defaults.AMPTrainer
    d2_defaults.AMPTrainer = ScaledClippingAMPTrainer if is_cuda(device) else CPUAutocastTrainer
    try:
        yield
    finally:
        d2_defaults.AMPTrainer = original
