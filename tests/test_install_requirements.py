"""setup.py's ``install_requires`` (ranges, for ``pip install -e .`` into a user's environment)
against requirements.txt (exact pins, for scripts/bootstrap.sh): the two cannot drift apart.

setup.py is read, not run: ``setup()`` is behind ``if __name__ == "__main__"``.
"""
import runpy
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .helpers import REPO

# Never required by setup.py: torch/torchvision are the user's CUDA build, any opencv* adds a
# second cv2, lvis 0.5.3 requires opencv-python.
FORBIDDEN = {"torch", "torchvision", "lvis"}


def _pins():
    """{canonical name: pinned version} of requirements.txt."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            versions = [s.version for s in req.specifier if s.operator == "=="]
            assert len(versions) == 1, f"requirements.txt: pin {line!r} with exactly one '=='"
            pins[canonicalize_name(req.name)] = versions[0]
    return pins


@pytest.fixture(scope="module")
def setup_py():
    """setup.py's globals (run under another name than __main__, so setup() is not called)."""
    return runpy.run_path(str(REPO / "setup.py"))


@pytest.fixture(scope="module")
def requirements(setup_py):
    return [Requirement(r) for r in setup_py["install_requires"]()]


def test_install_requires_has_no_exact_pins(requirements):
    pinned = [str(r) for r in requirements if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"setup.py pins {pinned}: use ranges there, exact pins in requirements.txt"


def test_install_requires_names_no_torch_opencv_or_lvis(requirements):
    names = {canonicalize_name(r.name) for r in requirements}
    bad = sorted(n for n in names if n in FORBIDDEN or n.startswith("opencv"))
    assert not bad, f"setup.py must not require {bad} (see its module docstring)"


def test_every_range_admits_the_pinned_version(requirements):
    pins = _pins()
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"setup.py requires {req}, but requirements.txt pins no {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"setup.py's {req} excludes requirements.txt's {req.name}=={pins[name]}: move one of them")


def test_every_pin_is_required_or_left_to_bootstrap(setup_py, requirements):
    required = {canonicalize_name(r.name) for r in requirements}
    left = {canonicalize_name(n) for n in setup_py["LEFT_TO_BOOTSTRAP"]}
    assert not required & left, f"{sorted(required & left)} both required and left to the bootstrap"
    unaccounted = sorted(set(_pins()) - required - left)
    assert not unaccounted, (f"requirements.txt pins {unaccounted}: add a range to setup.py's "
                             "install_requires(), or the name and reason to LEFT_TO_BOOTSTRAP")
    stale = sorted(left - set(_pins()))
    assert not stale, f"setup.py's LEFT_TO_BOOTSTRAP names {stale}, which requirements.txt no longer pins"


@pytest.mark.parametrize("missing,advice", [("lvis", "pip install --no-deps lvis==0.5.3"),
                                            ("cv2", "pip install opencv-python-headless")])
def test_missing_lvis_or_cv2_says_what_to_install(monkeypatch, missing, advice):
    from vild_d2 import compat

    for name in [m for m in sys.modules if m == "lvis" or m.startswith("lvis.")]:
        monkeypatch.delitem(sys.modules, name)  # re-imported below; restored afterwards
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` fail
    with pytest.raises(ImportError, match=advice.replace(".", r"\.")):
        compat.patch_lvis_numpy()
