"""The main job end to end at tiny sizes: every stage leaves its artifact, a rerun skips them all,
and a run killed (kill -9) in any of its stages resumes to the same results."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vild_d2.kit.toy import TOY_PREFIX

from .helpers import checkpoint_weights, kill_when, run, run_log, start, subprocess_env


def _args(out):
    return ["-m", "vild_d2.kit.pipeline", "--fast", "--output", str(out)]


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """(environment, output folder, log) of one uninterrupted ``python -m vild_d2.kit.pipeline --fast``."""
    base = tmp_path_factory.mktemp("pipeline")
    env = subprocess_env(base / "data", threads=2)
    return env, base / "demo", run_log(_args(base / "demo"), env)


def test_fast_pipeline_end_to_end_and_cached_rerun(fast_run):
    env, demo, log = fast_run
    for header in ("APr", "APc", "APf", "AR@300", "novel val objects"):
        assert header in log
    data = Path(env["DETECTRON2_DATASETS"])
    assert (data / TOY_PREFIX / "settings.json").is_file()
    assert list((data / TOY_PREFIX / "teacher").glob("toy_clip_*.pt.sha256"))
    assert len(list((demo / "text_classifiers").glob("*.npy"))) == 2
    assert list(demo.glob("rpn_*/model_final.pth.sha256")) and list(demo.glob(f"rpn_*/recall_{TOY_PREFIX}_val.json"))
    assert list(demo.glob("region_cache_*/manifest.json"))
    assert list(demo.glob("vild_*/eval_results.json"))
    assert len(list(demo.glob("vild_*/pictures/*.png"))) == 2
    assert (demo / "latest").resolve() == next(demo.glob("vild_*")).resolve()  # the README's output/demo/latest
    assert (demo / "latest" / "model_final.pth.sha256").is_file()
    log2 = run_log(_args(demo), env)
    assert log2.count("cached, skipped") == 8 and "running" not in log2


def test_pipeline_killed_in_three_stages_resumes_to_the_same_results(fast_run, tmp_path):
    env, reference, _ = fast_run  # same world and teacher: the stages of the recipe are what is killed
    out = tmp_path / "killed"
    for ready in (lambda: any(out.glob("rpn_*/config.yaml")),  # proposal network training
                  lambda: any(out.glob("region_cache_*/build.json")),  # region cache
                  lambda: any(out.glob("vild_*/config.yaml"))):  # ViLD training
        assert kill_when(start(_args(out), env), ready), "the pipeline ended before the kill"
    run(_args(out), env)
    runs = (reference, out)
    results = [json.loads(next(d.glob("vild_*/eval_results.json")).read_text()) for d in runs]
    assert results[0] == results[1]
    for pattern in ("rpn_*/model_final.pth", "vild_*/model_final.pth"):
        ref, got = (checkpoint_weights(next(d.glob(pattern))) for d in runs)
        assert all(torch.equal(ref[k], got[k]) for k in ref), pattern
    caches = [next(d.glob("region_cache_*")) for d in runs]
    np.testing.assert_array_equal(*(np.load(c / "shard_00000" / "embeds.npy") for c in caches))


def test_a_world_elsewhere_is_registered_through_the_configs(tmp_path):
    """The pipeline points both configs' DATASETS.VILD.REGISTER at its world, as a user would."""
    from vild_d2.kit.pipeline import FAST, Pipeline

    settings = Pipeline(str(tmp_path / "demo"), str(tmp_path / "elsewhere"), FAST).recipe_settings()
    for opts in (settings.opts, settings.proposal_opts):
        entries = eval(opts[opts.index("DATASETS.VILD.REGISTER") + 1])  # noqa: S307 (our own repr)
        assert [e[0] for e in entries] == ["toy_v4_train_base", "toy_v4_train_full", "toy_v4_val"]
        assert all(e[1].startswith(str(tmp_path / "elsewhere")) for e in entries)
