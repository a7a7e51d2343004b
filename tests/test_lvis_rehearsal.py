"""The LVIS recipe rehearsed end to end, so that it can never silently break: the real R50-FPN LVIS
ViLD-ensemble and proposal-network configs with only the CPU overlay (plus small images and M
here), all 1,203 LVIS categories on a mini-LVIS, a random CLIP of the exact ViT-B/32 shape, one
command (tools/run_recipe.py), then train_net.py --eval-only with the LVIS evaluator."""
import json

import numpy as np
import pytest

from vild_d2.kit.mini_lvis import MiniLVISSettings, build_mini_lvis
from vild_d2.kit.random_clip import save_random_clip

from .helpers import REPO, run, run_log, subprocess_env

LVIS = REPO / "configs/LVIS-OV"
# Small where the test allows it (image size, M, proposals, a one-template vocabulary); the
# benchmark (benchmarks/bench_lvis_recipe.py) runs the real sizes.
SMALL = """DATASETS:
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


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_lvis")
    build_mini_lvis(root, MiniLVISSettings(num_train=6, num_val=2, width=320, height=240, max_size=120, seed=1))
    clip = save_random_clip(root / "clip_vit_b32.pt", "ViT-B/32")
    (root / "templates.txt").write_text("a photo of a {}.\n")
    small = root / "small.yaml"
    small.write_text(SMALL.format(templates=root / "templates.txt"))
    env = subprocess_env(root, threads=2)
    out = root / "recipe"
    log = run_log(["tools/run_recipe.py", "--config-file", LVIS / "vild_ensemble_R50_FPN.yaml",
                   "--proposal-config", LVIS / "rpn_R50_FPN.yaml",
                   "--overlay", REPO / "configs/overlays/CPU-rehearsal.yaml",
                   "--overlay", small, "--output", out, "MODEL.VILD.CLIP_MODEL", clip], env)
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
