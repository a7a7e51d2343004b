"""Install the vild_d2 package.

torch/torchvision and detectron2 are deliberately not listed in ``install_requires``:
detectron2 is not on PyPI and torch must match the user's CUDA. ``scripts/bootstrap.sh``
installs them first (see README, "Install").
"""
from pathlib import Path

from setuptools import find_packages, setup


def _pinned_requirements():
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#") and "pytest" not in ln]


setup(
    name="vild_d2",
    version="0.1.0",
    description="ViLD open-vocabulary detection as a Detectron2 plugin",
    python_requires=">=3.9",
    packages=find_packages(include=["vild_d2", "vild_d2.*"]),
    package_data={"vild_d2": ["data/*.txt"]},
    install_requires=_pinned_requirements() + ["lvis==0.5.3"],
)
