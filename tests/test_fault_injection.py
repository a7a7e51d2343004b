"""kill -9 at several points of the long jobs; each resumed run ends where an uninterrupted one does.
(The pipeline's kill test is in test_pipeline.py, the region-cache builder's in test_region_cache.py.)"""
import json
import os
import subprocess
import sys

import torch

from .conftest import INSTANT, REPO, checkpoint_weights, kill_when


def _start(args, env):
    return subprocess.Popen([sys.executable, *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _run(args, env):
    proc = subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _train_args(toy_env, out, *flags):
    return ["train_net.py", "--config-file", str(INSTANT), *flags, "MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt"),
            "MODEL.VILD.TEXT_CACHE_DIR", str(toy_env / "text_classifiers"), "OUTPUT_DIR", str(out),
            "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0",
            # batches of consecutive images (the toy images come in two orientations): see README, resuming
            "DATALOADER.ASPECT_RATIO_GROUPING", "False"]


def test_training_killed_then_resumed_equals_uninterrupted(toy_env, tmp_path):
    """Killed after its second checkpoint (iteration 4 of 6), resumed with --resume: the final
    weights equal an uninterrupted run's bit for bit (random states and data position restored)."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(toy_env), OMP_NUM_THREADS="1")
    reference, out = tmp_path / "uninterrupted", tmp_path / "killed"
    _run(_train_args(toy_env, reference), env)
    proc = _start(_train_args(toy_env, out), env)
    assert kill_when(proc, lambda: (out / "model_0000003.pth.sha256").is_file()), "training ended before the kill"
    assert not (out / "model_final.pth").exists()
    _run(_train_args(toy_env, out, "--resume"), env)
    ref, got = checkpoint_weights(reference / "model_final.pth"), checkpoint_weights(out / "model_final.pth")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_classifier_build_killed_then_rerun_is_identical(toy_env, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(toy_env), OMP_NUM_THREADS="1")
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\na drawing of a {}.\n")

    def args(out):
        return ["tools/build_text_classifier.py", "--vocabulary", "toy", "coco", "--clip-model",
                str(toy_env / "clip.pt"), "--output-dir", str(out), "--templates", str(templates)]

    _run(args(tmp_path / "reference"), env)
    out = tmp_path / "killed"
    for name in ("toy", "coco"):  # while building the first, then the second classifier
        assert kill_when(_start(args(out), env), lambda: any(out.glob(f".{name}_*.lock"))), "it ended first"
        assert not list(out.glob(f"{name}_*.npy")) or name == "coco", "killed while building, yet its file is there"
    _run(args(out), env)
    ref = sorted((tmp_path / "reference").glob("*.npy"))
    assert [p.name for p in ref] == sorted(p.name for p in out.glob("*.npy")) and len(ref) == 2
    for p in ref:
        assert (out / p.name).read_bytes() == p.read_bytes()
        a, b = (json.loads(p.with_suffix(".json").read_text()), json.loads((out / p.name).with_suffix(".json").read_text()))
        assert {k: v for k, v in a.items() if k != "created"} == {k: v for k, v in b.items() if k != "created"}
