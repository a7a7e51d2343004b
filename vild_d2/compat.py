"""Fixes for third-party packages pinned by the user, applied once on ``import vild_d2``."""
import types

import numpy as np

__all__ = ["patch_lvis_numpy"]


class _NumpyWithFloat(types.ModuleType):
    """A view of numpy that still has ``np.float`` (an alias of ``float`` removed in NumPy 1.24)."""

    float = float

    def __getattr__(self, name):
        return getattr(np, name)


def patch_lvis_numpy() -> None:
    """Make ``lvis==0.5.3``'s evaluator work on NumPy 2.

    ``lvis/eval.py`` calls ``.astype(dtype=np.float)``, which raises ``AttributeError`` on
    NumPy >= 1.24. We rebind the ``np`` name inside ``lvis.eval`` only, instead of adding
    ``np.float`` back to numpy for every library in the process.
    """
    import lvis.eval as lvis_eval

    if not hasattr(np, "float") and not isinstance(lvis_eval.np, _NumpyWithFloat):
        lvis_eval.np = _NumpyWithFloat("numpy")
