"""Shared test code: repository paths, random text classifiers on disk, and running, killing and
checking the repository's scripts as subprocesses. Fixtures live in conftest.py."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vild_d2.text_classifier import save_text_classifier

REPO = Path(__file__).resolve().parents[1]
TOY_CFG = REPO / "configs/toy/Base-ViLD-Toy-R18-FPN.yaml"
INSTANT = REPO / "configs/toy/quick_schedules/ViLD-Toy-text-instant_test.yaml"

# How much of a failed subprocess's stderr an assertion message shows: the traceback and the
# log lines before it, without flooding the pytest report.
STDERR_TAIL = 4000


def random_classifier(path, names, dim=64, seed=0, clip="name:test"):
    emb = np.random.default_rng(seed).normal(size=(len(names), dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return str(save_text_classifier(path, emb, names, {"clip": clip}))


def subprocess_env(datasets=None, threads=1):
    """This process's environment for a child that finds its datasets under ``datasets`` (when
    given) and runs ``threads`` OpenMP threads, so that children do not oversubscribe the CPUs."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if datasets is not None:
        env["DETECTRON2_DATASETS"] = str(datasets)
    return env


def run(args, env=None, cwd=REPO, expect_rc=0):
    """Run ``python *args`` (paths allowed) and return the CompletedProcess, with text output.
    Asserts the exit code is ``expect_rc`` and shows the stderr tail otherwise; ``expect_rc=None``
    leaves the exit code to the caller."""
    proc = subprocess.run([sys.executable, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, (
            f"exit code {proc.returncode}, expected {expect_rc}: python {' '.join(map(str, args))}\n"
            f"{proc.stderr[-STDERR_TAIL:]}")
    return proc


def run_log(args, env=None, cwd=REPO):
    """The log (stdout then stderr) of ``python *args``, which must succeed."""
    proc = run(args, env=env, cwd=cwd)
    return proc.stdout + proc.stderr


def start(args, env=None, cwd=REPO):
    """Start ``python *args`` with its output discarded, for a test that kills it."""
    return subprocess.Popen([sys.executable, *map(str, args)], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kill_when(proc, ready, timeout=300):
    """SIGKILL ``proc`` as soon as ``ready()`` holds (or ``timeout`` seconds have passed); False when
    it ended first."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def run_script(script, toy_env, *args):
    """Run a repository script on the tiny toy world with the random tiny CLIP; return its log."""
    return run_log([REPO / script, *args], env=subprocess_env(toy_env))


def train_net(toy_env, out, *extra):
    return run_script("train_net.py", toy_env, "--config-file", str(INSTANT), *extra,
                      "MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt"), "OUTPUT_DIR", str(out),
                      "MODEL.VILD.TEXT_CACHE_DIR", str(out / "text_classifiers"))


def checkpoint_weights(path):
    """The model state dict of a checkpoint file."""
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# The recipe rehearsals' overlay (after configs/overlays/CPU-rehearsal.yaml): small where the tests
# allow it (image size, M, proposals, a one-template vocabulary); the benchmarks run the real sizes.
SMALL_RECIPE = """DATASETS:
  VILD:
    LSJ_IMAGE_SIZE: 256
INPUT:
  MIN_SIZE_TEST: 256
  MAX_SIZE_TEST: 256
MODEL:
  RPN:
    POST_NMS_TOPK_TEST: 100
  VILD:
    NUM_CACHED_PROPOSALS: 8
    PROMPT_TEMPLATES: "{templates}"
TEST:
  DETECTIONS_PER_IMAGE: 100
VERSION: 2
"""


def rehearse_recipe(root: Path, configs: Path):
    """tools/run_recipe.py on the world under ``root`` (as $DETECTRON2_DATASETS) with the real
    ViLD-ensemble and proposal-network R50-FPN configs of ``configs``, the CPU overlay and
    :data:`SMALL_RECIPE`, and a random ViT-B/32-shaped CLIP: (output folder, environment, log)."""
    from vild_d2.kit.random_clip import save_random_clip

    clip = save_random_clip(root / "clip_vit_b32.pt", "ViT-B/32")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    small = root / "small.yaml"
    small.write_text(SMALL_RECIPE.format(templates=root / "templates.txt"))
    env = subprocess_env(root, threads=2)
    out = root / "recipe"
    log = run_log(["tools/run_recipe.py", "--config-file", configs / "vild_ensemble_R50_FPN.yaml",
                   "--proposal-config", configs / "rpn_R50_FPN.yaml",
                   "--overlay", REPO / "configs/overlays/CPU-rehearsal.yaml",
                   "--overlay", small, "--output", out, "MODEL.VILD.CLIP_MODEL", clip], env)
    return out, env, log
