"""The LVIS recipe rehearsed end to end, so that it can never silently break: the real R50-FPN LVIS
ViLD-ensemble and proposal-network configs with only the CPU overlay (plus small images and M
here), all 1,203 LVIS categories on a mini-LVIS, a random CLIP of the exact ViT-B/32 shape, one
command (tools/run_recipe.py), then train_net.py --eval-only with the LVIS evaluator."""
import json

import numpy as np
import pytest

from vild_d2.kit.mini_lvis import MiniLVISSettings, build_mini_lvis

from .helpers import REPO, rehearse_recipe, run

LVIS = REPO / "configs/LVIS-OV"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_lvis")
    build_mini_lvis(root, MiniLVISSettings(num_train=6, num_val=2, width=320, height=240, max_size=120, seed=1))
    out, env, log = rehearse_recipe(root, LVIS)
    return root, out, env, log


def test_recipe_runs_every_stage_at_lvis_sizes(rehearsal):
    root, out, env, log = rehearsal
    for stage in ("text classifiers", "proposal network (base classes)", "region cache", "ViLD training + evaluation",
                  "proposal recall"):
        assert f"stage {stage}: running" in log
    shapes = {p.stem.split("_")[2]: np.load(p).shape for p in (out / "text_classifiers").glob("*.npy")}
    assert shapes == {"train": (866, 512), "val": (1203, 512)}
    manifest = json.loads(next(out.glob("region_cache_*/manifest.json")).read_text())
    assert (manifest["dim"], manifest["num_proposals"], manifest["num_images"]) == (512, 8, 6)
    # the mini-LVIS's rare-only training image is trained on, for its cached regions
    assert "6 of 6 kept, 1 of them without a usable box but with cached CLIP regions" in log
    assert "Traceback" not in log


def test_eval_only_reproduces_and_scores_make_sense(rehearsal):
    root, out, env, _ = rehearsal
    vild = next(out.glob("vild_*"))
    first = json.loads((vild / "eval_results.json").read_text())["lvis_v1_val"]
    assert {"AP", "APr", "APc", "APf"} <= set(first["segm"])
    run(["train_net.py", "--eval-only", "--config-file", vild / "config.yaml", "MODEL.WEIGHTS",
         vild / "model_final.pth", "OUTPUT_DIR", root / "eval"], env)
    again = json.loads((root / "eval/eval_results.json").read_text())["lvis_v1_val"]
    assert again["bbox"]["AP"] == pytest.approx(first["bbox"]["AP"], abs=1e-6)
    detections = json.loads((root / "eval/inference/lvis_v1_val/lvis_instances_results.json").read_text())
    scores = np.array([d["score"] for d in detections])
    assert len(detections) == 2 * 100  # 100 per image, as configured
    # Two iterations at the recipe's first learning rate leave the model near its initialisation:
    # each class scores about its share (the ensemble's geometric mean over 1,203 classes), not 1e-17.
    assert scores.min() > 1e-4 and scores.max() < 0.5
    assert {d["category_id"] for d in detections} <= set(range(1, 1204))
