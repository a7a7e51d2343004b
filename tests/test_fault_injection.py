"""kill -9 at several points of the long jobs; each resumed run ends where an uninterrupted one does.
(The pipeline's kill test is in test_pipeline.py, the region-cache builder's in test_region_cache.py.)"""
import json

import torch

from .helpers import INSTANT, checkpoint_weights, kill_when, run, start, subprocess_env


def _train_args(toy_env, out, *flags):
    return ["train_net.py", "--config-file", str(INSTANT), *flags, "MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt"),
            "MODEL.VILD.TEXT_CACHE_DIR", str(toy_env / "text_classifiers"), "OUTPUT_DIR", str(out),
            "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0",
            # batches of consecutive images (the toy images come in two orientations): see README, resuming
            "DATALOADER.ASPECT_RATIO_GROUPING", "False"]


def test_training_killed_then_resumed_equals_uninterrupted(toy_env, tmp_path):
    """Killed after its second checkpoint (iteration 4 of 6), resumed with --resume: the final
    weights equal an uninterrupted run's bit for bit (random states and data position restored)."""
    env = subprocess_env(toy_env)
    reference, out = tmp_path / "uninterrupted", tmp_path / "killed"
    run(_train_args(toy_env, reference), env)
    proc = start(_train_args(toy_env, out), env)
    assert kill_when(proc, lambda: (out / "model_0000003.pth.sha256").is_file()), "training ended before the kill"
    assert not (out / "model_final.pth").exists()
    run(_train_args(toy_env, out, "--resume"), env)
    ref, got = checkpoint_weights(reference / "model_final.pth"), checkpoint_weights(out / "model_final.pth")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_classifier_build_killed_then_rerun_is_identical(toy_env, tmp_path):
    env = subprocess_env(toy_env)
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\na drawing of a {}.\n")

    def args(out):
        # the toy world's 24 classes (a dataset its config registers), then COCO's 80
        return ["tools/build_text_classifier.py", "--config-file", str(INSTANT), "--vocabulary", "toy_v4_val", "coco",
                "--clip-model", str(toy_env / "clip.pt"), "--output-dir", str(out), "--templates", str(templates)]

    run(args(tmp_path / "reference"), env)
    out = tmp_path / "killed"
    for name in ("toy_v4_val", "coco"):  # while building the first, then the second classifier
        assert kill_when(start(args(out), env), lambda name=name: any(out.glob(f".{name}_*.lock"))), "it ended first"
        assert not list(out.glob(f"{name}_*.npy")) or name == "coco", "killed while building, yet its file is there"
    run(args(out), env)
    ref = sorted((tmp_path / "reference").glob("*.npy"))
    assert [p.name for p in ref] == sorted(p.name for p in out.glob("*.npy")) and len(ref) == 2
    for p in ref:
        assert (out / p.name).read_bytes() == p.read_bytes()
        a, b = (json.loads(q.with_suffix(".json").read_text()) for q in (p, out / p.name))
        assert {k: v for k, v in a.items() if k != "created"} == {k: v for k, v in b.items() if k != "created"}
