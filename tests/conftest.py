"""Shared fixtures: a ViLD config on the toy world with random text classifiers on disk."""
import pytest
import torch
from detectron2.data import MetadataCatalog

from vild_d2.clip_model import clip_identity
from vild_d2.engine import load_config
from vild_d2.kit.toy import TOY_PREFIX

from .helpers import TOY_CFG, random_classifier, train_net

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def toy_env(tmp_path_factory):
    """<tmp>/TOY_PREFIX: a 10 + 4 image toy world registered in this process as ``tiny_toy_*`` and
    as ``TOY_PREFIX_*`` (the names the toy configs use); <tmp>/clip.pt: a random toy-sized CLIP that
    ``clip.load`` accepts. Subprocesses that load a toy config see the world as ``TOY_PREFIX_*``
    with ``DETECTRON2_DATASETS=<tmp>``."""
    from vild_d2.kit.toy import ToyWorldSettings, build_toy_world, register_toy_world
    from vild_d2.kit.toy.teacher import TeacherSettings, build_toy_clip

    base = tmp_path_factory.mktemp("toy_env")
    build_toy_world(base / TOY_PREFIX, ToyWorldSettings(num_train=10, num_val=4, seed=5), workers=1)
    register_toy_world(str(base / TOY_PREFIX), prefix="tiny_toy")
    register_toy_world(str(base / TOY_PREFIX))
    torch.manual_seed(0)
    torch.save(build_toy_clip(TeacherSettings()).state_dict(), base / "clip.pt")
    return base


@pytest.fixture
def toy_cfg(tmp_path, toy_env):
    """Frozen-able toy config whose train/test classifiers are random 64-d files."""
    cfg = load_config(TOY_CFG, register=False)
    ident = clip_identity(cfg.MODEL.VILD.CLIP_MODEL)
    cfg.MODEL.VILD.TEXT_EMBEDDINGS = random_classifier(
        tmp_path / "train.npy", MetadataCatalog.get(f"{TOY_PREFIX}_train_base").thing_classes, clip=ident)
    cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS = random_classifier(
        tmp_path / "test.npy", MetadataCatalog.get(f"{TOY_PREFIX}_val").thing_classes, seed=1, clip=ident)
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(tmp_path / "output")
    return cfg


@pytest.fixture(scope="session")
def instant_run(toy_env, tmp_path_factory):
    """A few-iteration ViLD-text model trained through train_net.py: (output folder, log)."""
    out = tmp_path_factory.mktemp("instant")
    return out, train_net(toy_env, out)

