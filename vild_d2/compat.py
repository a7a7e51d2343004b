"""Fixes for third-party packages pinned by the user, applied once on ``import vild_d2``."""
import types
import warnings

import numpy as np

__all__ = ["patch_lvis_numpy", "silence_known_warnings"]


def silence_known_warnings() -> None:
    """``clip`` imports ``pkg_resources`` (hence the ``setuptools<81`` pin), which warns on
    every import; the pin is deliberate, so the warning is noise for our users."""
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


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
