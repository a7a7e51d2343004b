"""Shared fixtures: a ViLD config on the toy world with random text classifiers on disk."""
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from vild_d2.clip_model import clip_identity
from vild_d2.engine import load_config
from vild_d2.kit.toy import TOY_PREFIX
from vild_d2.text_classifier import save_text_classifier

REPO = Path(__file__).resolve().parents[1]
TOY_CFG = REPO / "configs/toy/Base-ViLD-Toy-R18-FPN.yaml"

torch.set_num_threads(2)


def random_classifier(path, names, dim=64, seed=0, clip="name:test"):
    emb = np.random.default_rng(seed).normal(size=(len(names), dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return str(save_text_classifier(path, emb, names, {"clip": clip}))


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


INSTANT = REPO / "configs/toy/quick_schedules/ViLD-Toy-text-instant_test.yaml"


def run_script(script, toy_env, *args):
    """Run a repository script on the tiny toy world with the random tiny CLIP; return its log."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DETECTRON2_DATASETS=str(toy_env), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / script), *args], env=env, capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def train_net(toy_env, out, *extra):
    return run_script("train_net.py", toy_env, "--config-file", str(INSTANT), *extra,
                      "MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt"), "OUTPUT_DIR", str(out),
                      "MODEL.VILD.TEXT_CACHE_DIR", str(out / "text_classifiers"))


@pytest.fixture(scope="session")
def instant_run(toy_env, tmp_path_factory):
    """A few-iteration ViLD-text model trained through train_net.py: (output folder, log)."""
    out = tmp_path_factory.mktemp("instant")
    return out, train_net(toy_env, out)


def kill_when(proc, ready, timeout=300):
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False when it ended first."""
    import signal
    import time

    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def checkpoint_weights(path):
    """The model state dict of a checkpoint file."""
    return torch.load(path, map_location="cpu", weights_only=True)["model"]
