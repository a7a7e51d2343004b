"""The configs shipped with vild_d2, found the same way after ``pip install .`` as in a checkout.

``setup.py`` links the repository's ``configs/`` folder into this package (a wheel then carries a
copy), as Detectron2 does for its model zoo; a checkout used without installing falls back to the
repository's folder."""
from pathlib import Path

__all__ = ["get_config_file", "configs_root"]


def configs_root() -> Path:
    """The folder holding ``LVIS-OV/``, ``COCO-OV/``, ``toy/`` and ``overlays/``."""
    packaged = Path(__file__).with_name("configs")
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "configs"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"no configs folder at {packaged} or {checkout}: reinstall vild_d2 (pip install .) "
                            "from a checkout that has configs/")


def get_config_file(name: str) -> str:
    """Path of a shipped config, e.g. ``get_config_file("toy/ViLD-Toy-ensemble.yaml")``."""
    path = configs_root() / name
    if not path.is_file():
        raise FileNotFoundError(f"vild_d2 ships no config {name!r} (looked in {configs_root()})")
    return str(path)
