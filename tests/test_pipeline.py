"""The main job end to end at tiny sizes: every stage leaves its artifact; a rerun skips them all."""
import os
import subprocess
import sys

import pytest

from vild_d2.toy import TOY_PREFIX

from .conftest import REPO


def test_fast_pipeline_end_to_end_and_cached_rerun(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"), OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "vild_d2.pipeline", "--fast", "--output", str(tmp_path / "demo")]
    # two processes (gloo) for every stage of the recipe: the multi-GPU path on CPU
    first = subprocess.run(cmd + ["--num-gpus", "2"], env=env, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    for header in ("APr", "APc", "APf", "AR@300", "novel val objects"):
        assert header in log
    demo = tmp_path / "demo"
    assert (tmp_path / "data" / TOY_PREFIX / "settings.json").is_file()
    assert list((tmp_path / "data" / TOY_PREFIX / "teacher").glob("toy_clip_*.pt"))
    assert len(list((demo / "text_classifiers").glob("*.npy"))) == 2
    assert list(demo.glob("rpn_*/model_final.pth")) and list(demo.glob(f"rpn_*/recall_{TOY_PREFIX}_val.json"))
    assert list(demo.glob("region_cache_*/manifest.json"))
    assert list(demo.glob("vild_*/eval_results.json"))
    assert len(list(demo.glob("vild_*/pictures/*.png"))) == 2
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    log2 = second.stdout + second.stderr
    assert log2.count("cached, skipped") == 8 and "running" not in log2


def test_world_folder_must_be_the_registered_one(tmp_path):
    from vild_d2.pipeline import FAST, Pipeline

    with pytest.raises(ValueError, match="DETECTRON2_DATASETS"):
        Pipeline(str(tmp_path / "demo"), str(tmp_path / "elsewhere"), FAST)
