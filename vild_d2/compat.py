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


def _import_lvis_eval() -> types.ModuleType:
    """``lvis.eval``, or an ``ImportError`` that says how to install what is missing.

    ``setup.py`` does not require lvis: ``lvis==0.5.3`` requires ``opencv-python``, a second
    ``cv2`` build next to the headless one (or the user's own), so it is installed without its
    dependencies; its ``__init__`` still imports ``cv2`` (``lvis.vis``).
    """
    try:
        import lvis.eval as lvis_eval
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if missing == "lvis":
            raise ImportError("vild_d2 needs lvis (LVIS annotations and evaluation), which is not "
                              "installed: run `pip install --no-deps lvis==0.5.3` (--no-deps keeps out "
                              "its opencv-python dependency; see README, \"Install\")") from err
        if missing == "cv2":
            raise ImportError("lvis imports cv2, which is not installed: install one OpenCV build, e.g. "
                              "`pip install opencv-python-headless` (never both opencv-python and "
                              "opencv-python-headless: they overwrite each other's cv2)") from err
        raise
    return lvis_eval


def patch_lvis_numpy() -> None:
    """Make ``lvis==0.5.3``'s evaluator work on NumPy 2.

    ``lvis/eval.py`` calls ``.astype(dtype=np.float)``, which raises ``AttributeError`` on
    NumPy >= 1.24. We rebind the ``np`` name inside ``lvis.eval`` only, instead of adding
    ``np.float`` back to numpy for every library in the process.
    """
    lvis_eval = _import_lvis_eval()
    if not hasattr(np, "float") and not isinstance(lvis_eval.np, _NumpyWithFloat):
        lvis_eval.np = _NumpyWithFloat("numpy")
