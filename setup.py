"""Install the vild_d2 package.

``install_requires`` holds ranges, not pins: ``pip install -e .`` into an existing torch +
detectron2 environment (README, "Install") must leave the user's torch, torchvision, numpy and
OpenCV as they are. Lower bounds are what the code or a dependency needs; an upper bound only
where a known break exists. The exact, tested versions live in ``requirements.txt`` and
``requirements-torch.txt``, which ``scripts/bootstrap.sh`` installs before
``pip install --no-deps -e .``. ``tests/test_install_requirements.py`` checks that every range
here admits the version pinned there, and that every pin there is either required here or named
in ``LEFT_TO_BOOTSTRAP``; ``scripts/check_user_install.sh`` shows the install end to end.

Deliberately not required here:

- torch / torchvision: they must match the user's CUDA (``clip-anytorch`` names them unversioned,
  so an installed build satisfies it); detectron2: not on PyPI. Both come first (README, "Install").
- OpenCV: detectron2 and lvis import ``cv2``, but ``opencv-python`` and
  ``opencv-python-headless`` both install the same ``cv2`` package and clobber each other's files,
  so requiring either one adds a second ``cv2`` next to the user's build. The user's build is
  kept; detectron2 needs one, and the bootstrap installs the headless one (``requirements.txt``).
- lvis: ``lvis==0.5.3`` requires ``opencv-python`` (the GUI build), so it is installed on its own
  with ``pip install --no-deps lvis==0.5.3``; ``import vild_d2`` says so when it is missing.
"""
import os
import shutil
from pathlib import Path
from typing import Dict, List

from setuptools import find_packages, setup

# Pinned in requirements.txt for the bootstrap but not required by vild_d2 itself, with the reason.
LEFT_TO_BOOTSTRAP: Dict[str, str] = {
    "opencv-python-headless": "a cv2 build; the user's own one is kept (see the module docstring)",
    "ftfy": "required by clip-anytorch",
    "regex": "required by clip-anytorch",
    "pytest": "runs the tests only",
    # ONNX export only (the `export` extra): TorchScript export and everything else run without them
    "onnx": "ONNX export only (extras_require 'export')",
    "onnxruntime": "runs ONNX exports only (extras_require 'export')",
    "ruff": "lints the code (make lint, CI) only",
    "selenium": "the browser test of the web page only",
    # optional: extras_require["web"] below
    "starlette": "the web page only (demo.py --serve): pip install vild_d2[web]",
    "uvicorn": "the web page only (demo.py --serve): pip install vild_d2[web]",
    "python-multipart": "the web page only (demo.py --serve): pip install vild_d2[web]",
    # detectron2's own dependencies: a user's detectron2 brings them (detectron2 pins some,
    # e.g. iopath<0.1.10, that requirements.txt does not match); the bootstrap installs
    # detectron2 with --no-deps, hence these pins.
    "fvcore": "a detectron2 dependency",
    "iopath": "a detectron2 dependency",
    "omegaconf": "a detectron2 dependency",
    "hydra-core": "a detectron2 dependency",
    "yacs": "a detectron2 dependency",
    "termcolor": "a detectron2 dependency",
    "cloudpickle": "a detectron2 dependency",
    "tensorboard": "a detectron2 dependency",
    "packaging": "a detectron2 dependency",
}


def install_requires() -> List[str]:
    """Ranges of what vild_d2 needs at run time besides torch, torchvision, detectron2, OpenCV
    and lvis (see the module docstring)."""
    return [
        # clip and detectron2.model_zoo import pkg_resources, which setuptools 81 drops
        "setuptools<81",
        # 1.x and 2.x both: vild_d2/compat.py gives lvis 0.5.3 back the np.float NumPy 1.24 removed
        "numpy>=1.24",
        # vild_d2.kit.toy / data / demo read and write images (detectron2's own lower bound)
        "pillow>=7.1",
        # polygon rasterising and RLE (pycocotools.mask); detectron2's own lower bound
        "pycocotools>=2.0.2",
        # the default LVIS evaluator (MODEL.VILD.LVIS_EVALUATOR, its C++ LVIS mode); needs numpy only
        "faster-coco-eval>=1.8.0",
        # lvis (installed with --no-deps) imports matplotlib; lvis 0.5.3's own lower bound
        "matplotlib>=3.1.1",
        # detectron2's FixedSizeCrop (large-scale jitter, LVIS configs) crops polygons with it
        "shapely",
        "tqdm",
        "tabulate",
        # the CLIP teacher and text encoder (module `clip`); 2.6.0 is the release tested here
        "clip-anytorch>=2.6.0",
    ]


def extras_require() -> Dict[str, List[str]]:
    """Optional features: ``pip install -e .[NAME]``."""
    return {
        # the web page (vild_d2.serve); starlette 1.6 added Route(max_body_size=...)
        "web": ["starlette>=1.6", "uvicorn>=0.30", "python-multipart>=0.0.18"],
        # ONNX export (tools/export_model.py --format onnx) and running ONNX exports (vild_d2.export)
        "export": ["onnx>=1.16", "onnxruntime>=1.17"],
    }


def link_configs() -> List[str]:
    """Put ``configs/`` inside the package as ``vild_d2/model_zoo/configs`` (a link to the checkout's
    folder, a copy where links are not possible), so that ``pip install .`` ships the configs the
    kit and the tools find through :func:`vild_d2.model_zoo.get_config_file`; the package-data
    patterns that carry them."""
    here = Path(__file__).resolve().parent
    source, dest = here / "configs", here / "vild_d2" / "model_zoo" / "configs"
    if source.is_dir():
        if dest.is_symlink():
            dest.unlink()
        elif dest.is_dir():
            shutil.rmtree(dest)
        try:
            os.symlink(os.path.relpath(source, dest.parent), dest)
        except OSError:
            shutil.copytree(source, dest)
    return ["configs/**/*.yaml"]


if __name__ == "__main__":  # pip runs setup.py as __main__; tests read install_requires()
    setup(
        name="vild_d2",
        version="0.1.0",
        description="ViLD open-vocabulary detection as a Detectron2 plugin",
        python_requires=">=3.9",
        packages=find_packages(include=["vild_d2", "vild_d2.*"]),
        package_data={"vild_d2": ["data/*.txt", "serve.html"], "vild_d2.model_zoo": link_configs()},
        install_requires=install_requires(),
        extras_require=extras_require(),
    )
