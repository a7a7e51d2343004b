"""The open-vocabulary COCO recipe rehearsed end to end: the real R50-FPN COCO-OV ViLD-ensemble and
proposal-network configs with only the CPU overlay (plus small images and M here), the 48 base /
17 novel split on a mini-COCO under Detectron2's ``coco/`` layout, a random CLIP of the exact
ViT-B/32 shape, one command (tools/run_recipe.py) ending in the novel / base / all AP50 table, then
train_net.py --eval-only."""
import json

import numpy as np
import pytest

from vild_d2.data.coco_ov import COCO_OV_BASE, COCO_OV_NOVEL
from vild_d2.kit.mini_coco import MiniCOCOSettings, build_mini_coco, coco_groups

from .helpers import REPO, rehearse_recipe, run

COCO = REPO / "configs/COCO-OV"
VAL = "coco_2017_val_ov_all"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_coco")
    build_mini_coco(root, MiniCOCOSettings(num_train=6, num_val=2, width=320, height=240, max_size=120, seed=1))
    out, env, log = rehearse_recipe(root, COCO)
    return root, out, env, log


def test_mini_coco_holds_every_group_and_the_coco_layout(rehearsal):
    root = rehearsal[0]
    groups = coco_groups()
    assert (len(groups["base"]), len(groups["novel"]), len(groups["other"])) == (48, 17, 15)
    train = json.loads((root / "coco/annotations/instances_train2017.json").read_text())
    assert len(train["categories"]) == 80 and len(train["images"]) == 6
    present = {a["category_id"] for a in train["annotations"]}
    assert present & set(groups["base"]) and present & set(groups["novel"])  # novel boxes are in the json
    for image in train["images"]:
        assert (root / "coco/train2017" / image["file_name"]).is_file()


def test_recipe_ends_in_the_novel_base_all_ap50_table(rehearsal):
    root, out, env, log = rehearsal
    for stage in ("text classifiers", "proposal network (base classes)", "region cache", "ViLD training + evaluation",
                  "proposal recall"):
        assert f"stage {stage}: running" in log
    shapes = {p.stem.rsplit("_", 1)[0]: np.load(p).shape for p in (out / "text_classifiers").glob("*.npy")}
    assert shapes == {"coco_2017_train_ov_base": (len(COCO_OV_BASE), 512),
                      VAL: (len(COCO_OV_BASE) + len(COCO_OV_NOVEL), 512)}
    manifest = json.loads(next(out.glob("region_cache_*/manifest.json")).read_text())
    assert (manifest["dim"], manifest["num_proposals"], manifest["num_images"]) == (512, 8, 6)
    # the proposal network trains on base boxes only; ViLD also on the novel-only image's cached regions
    assert "training images: 5 of 6 kept, 0 of them" in log
    assert "training images: 6 of 6 kept, 1 of them without a usable box but with cached CLIP regions" in log
    assert "AP50 novel |   AP50 base |   AP50 all" in log
    assert "Traceback" not in log


def test_eval_only_reproduces_the_ap50_table(rehearsal):
    root, out, env, _ = rehearsal
    vild = next(out.glob("vild_*"))
    first = json.loads((vild / "eval_results.json").read_text())[VAL]
    assert {"AP50_novel", "AP50_base", "AP50_all"} <= set(first["bbox"])
    run(["train_net.py", "--eval-only", "--config-file", vild / "config.yaml", "MODEL.WEIGHTS",
         vild / "model_final.pth", "OUTPUT_DIR", root / "eval"], env)
    again = json.loads((root / "eval/eval_results.json").read_text())[VAL]
    for key in ("AP50_novel", "AP50_base", "AP50_all"):
        assert again["bbox"][key] == pytest.approx(first["bbox"][key], abs=1e-6, nan_ok=True)
    detections = json.loads((root / f"eval/inference/{VAL}/coco_instances_results.json").read_text())
    assert len(detections) == 2 * 100  # 100 per image, as configured
    # only the 65 classes of the split are predicted, under their COCO ids
    assert {d["category_id"] for d in detections} <= set(coco_groups()["base"] + coco_groups()["novel"])
