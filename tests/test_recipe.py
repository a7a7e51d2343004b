"""The recipe on a user's own LVIS-format dataset, registered only through the config; every tool
sees that dataset; training keeps images whose objects are all novel for their cached regions."""
import json
from types import SimpleNamespace

import pytest
from detectron2.data import DatasetCatalog

from vild_d2.engine import load_config
from vild_d2.engine.trainer import training_records
from vild_d2.kit.toy import SPLIT_FILES, TOY_PREFIX

from .helpers import REPO, TOY_CFG, run, run_log, subprocess_env

TINY = """SOLVER:
  IMS_PER_BATCH: 2
  MAX_ITER: 2
  WARMUP_ITERS: 1
  STEPS: ()
MODEL:
  VILD:
    NUM_CACHED_PROPOSALS: 8
TEST:
  DETECTIONS_PER_IMAGE: 20
VERSION: 2
"""


def _user_configs(toy_env, tmp_path):
    """A ViLD and a proposal config of 'my_train' / 'my_val', known only through DATASETS.VILD.REGISTER."""
    world = toy_env / TOY_PREFIX
    register = [["my_train", str(world / SPLIT_FILES["train_full"]), str(world / "images"), "base"],
                ["my_val", str(world / SPLIT_FILES["val"]), str(world / "images"), "all"]]
    datasets = ("DATASETS:\n  TRAIN: ('my_train',)\n  TEST: ('my_val',)\n"
                f"  VILD:\n    REGISTER: {json.dumps(register)}\n")
    paths = []
    for name, base, test in (("vild", "ViLD-Toy-ensemble.yaml", True), ("rpn", "RPN-Toy-Lite-FPN.yaml", False)):
        path = tmp_path / f"my_{name}.yaml"
        text = f"_BASE_: \"{REPO / 'configs/toy' / base}\"\n" + datasets
        path.write_text(text if test else text.replace("TEST: ('my_val',)", "TEST: ()"))
        paths.append(path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    return paths + [tmp_path / "tiny.yaml"]


def test_recipe_on_a_dataset_registered_only_in_the_config(toy_env, tmp_path):
    vild, rpn, tiny = _user_configs(toy_env, tmp_path)
    env = subprocess_env(threads=2)
    cmd = ["tools/run_recipe.py", "--config-file", vild, "--proposal-config", rpn, "--overlay", tiny,
           "--output", tmp_path / "out", "MODEL.VILD.CLIP_MODEL", toy_env / "clip.pt"]
    log = run_log(cmd[:-2] + ["--num-gpus", "2"] + cmd[-2:], env)  # every stage in two processes (gloo)
    assert "my_val" in log and "APr" in log
    out = tmp_path / "out"
    results = json.loads(next(out.glob("vild_*/eval_results.json")).read_text())
    assert {"AP", "APr", "APc", "APf"} <= set(results["my_val"]["segm"])
    recall = json.loads(next(out.glob("rpn_*/recall_my_val.json")).read_text())
    assert recall["objects"]["novel"] + recall["objects"]["base"] > 0
    rerun = run_log(cmd, env)
    assert rerun.count("cached, skipped") == 5 and ": running" not in rerun

    # the tools a user runs by hand see the same dataset through the same config
    run(["tools/build_text_classifier.py", "--config-file", vild, "--opts", "MODEL.VILD.CLIP_MODEL",
         toy_env / "clip.pt", "MODEL.VILD.TEXT_CACHE_DIR", tmp_path / "cls"], env)
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "cls").glob("*.json")]
    assert sorted(s["num_classes"] for s in sidecars) == [16, 24]
    run(["tools/build_region_cache.py", "--config-file", vild, "--detector-config", rpn, "--detector-weights",
         next(out.glob("rpn_*/model_final.pth")), "--output", tmp_path / "cache", "--num-workers", "0",
         "MODEL.VILD.CLIP_MODEL", toy_env / "clip.pt", "MODEL.VILD.NUM_CACHED_PROPOSALS", "4"], env)
    assert json.loads((tmp_path / "cache/manifest.json").read_text())["dataset"] == "my_train"


def test_unregistered_dataset_error_names_the_fix(toy_env, tmp_path):
    proc = run(["tools/build_region_cache.py", "--config-file", TOY_CFG, "--dataset", "nobody_registered_me",
                "--proposals", tmp_path / "p.pkl", "--output", tmp_path / "c"], subprocess_env(), expect_rc=None)
    assert proc.returncode != 0 and "DATASETS.VILD.REGISTER" in proc.stderr


@pytest.mark.parametrize("keep, cached, expected", [(True, {2}, [1, 2]), (True, set(), [1]), (False, {2}, [1])])
def test_images_without_boxes_are_kept_for_their_cached_regions(keep, cached, expected):
    records = [{"image_id": 1, "annotations": [{"iscrowd": 0, "category_id": 0}]},
               {"image_id": 2, "annotations": []},  # every object novel: its labels removed
               {"image_id": 3, "annotations": [{"iscrowd": 1, "category_id": 0}]}]
    name = f"keep_test_{keep}_{len(cached)}"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    cfg = load_config(TOY_CFG, ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.VILD.KEEP_IMAGES_WITH_REGIONS", keep])
    mapper = SimpleNamespace(region_cache_dir="cache", cache=cached, check_cache_covers=lambda ids: None)
    assert [r["image_id"] for r in training_records(cfg, mapper)] == expected
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    assert [r["image_id"] for r in training_records(cfg, mapper)] == [1, 2, 3]
