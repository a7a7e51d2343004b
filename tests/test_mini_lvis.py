"""Mini-LVIS (synthetic LVIS v1 layout and format, exact masks, settings guard) and random CLIP."""
import hashlib
import json
import os
import time

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.datasets.builtin import _PREDEFINED_SPLITS_LVIS
from detectron2.data.datasets.lvis import load_lvis_json
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import Boxes, BoxMode, Instances
from lvis import LVIS
from PIL import Image
from pycocotools import mask as mask_utils

from vild_d2.artifacts import SettingsMismatchError
from vild_d2.data import register_ov_lvis_instances
from vild_d2.kit.mini_lvis import MiniLVISSettings, build_mini_lvis, category_appearance

TINY = MiniLVISSettings(num_train=6, num_val=3, width=160, height=120, max_size=100, seed=3)
SPLITS = ("train", "val")


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _polygon_rle(ann, h, w):
    return mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_lvis")
    assert build_mini_lvis(root, TINY)
    return root


@pytest.fixture(scope="module")
def gts(world):
    return {split: LVIS(str(world / f"lvis/lvis_v1_{split}.json")) for split in SPLITS}


def test_lvis_api_loads_real_categories_and_every_frequency_group(gts):
    for split, gt in gts.items():
        assert len(gt.cats) == 1203 and gt.dataset["info"]["description"].startswith("vild_d2 mini-LVIS")
        freqs = {gt.cats[a["category_id"]]["frequency"] for a in gt.anns.values()}
        assert freqs == {"r", "c", "f"}, split
        counts = sum(c["instance_count"] for c in gt.cats.values())
        assert counts == len(gt.anns) and len(gt.imgs) == (TINY.num_train if split == "train" else TINY.num_val)
    assert not set(gts["train"].imgs) & set(gts["val"].imgs)  # image ids unique across splits
    assert not set(gts["train"].anns) & set(gts["val"].anns)
    train = gts["train"]
    rare_only = [i for i in train.imgs if train.img_ann_map[i]
                 and all(train.cats[a["category_id"]]["frequency"] == "r" for a in train.img_ann_map[i])]
    assert rare_only == [6]  # every 6th training image holds only rare objects


def test_negative_and_not_exhaustive_lists(gts):
    for gt in gts.values():
        for image_id, img in gt.imgs.items():
            present = {a["category_id"] for a in gt.img_ann_map[image_id]}
            assert len(img["neg_category_ids"]) == TINY.num_negatives
            assert not present & set(img["neg_category_ids"])
            assert set(img["not_exhaustive_category_ids"]) <= present
    flagged = {i: img["not_exhaustive_category_ids"] for i, img in gts["train"].imgs.items()}
    assert [i for i, ids in flagged.items() if ids] == [4] and len(flagged[4]) == 1  # every 4th image


def test_boxes_areas_and_pixels_agree_with_polygons(world, gts):
    for split, gt in gts.items():
        for image_id, img in gt.imgs.items():
            pixels = np.asarray(Image.open(world / f"coco/{split}2017/{image_id:012d}.jpg"), dtype=float)
            union = np.zeros(pixels.shape[:2], int)
            for ann in gt.img_ann_map[image_id]:
                rle = _polygon_rle(ann, img["height"], img["width"])
                assert ann["bbox"] == pytest.approx(list(mask_utils.toBbox(rle)))
                assert ann["area"] == float(mask_utils.area(rle)) > 0
                mask = mask_utils.decode(rle).astype(bool)
                union += mask
                colour, _, _, period = category_appearance(ann["category_id"])
                if period == 0:  # solid objects: the JPEG shows their colour (up to compression)
                    inner = np.median(np.abs(pixels[mask] - colour.astype(float)), axis=0)
                    assert inner.max() < 12, (split, image_id, ann["category_id"], inner)
            assert union.max() <= 1  # masks never overlap: nothing is occluded


def test_detectron2_builtin_lvis_paths_find_every_image(world):
    for split in SPLITS:
        image_root, json_file = _PREDEFINED_SPLITS_LVIS["lvis_v1"][f"lvis_v1_{split}"]
        records = load_lvis_json(str(world / json_file), os.path.join(str(world), image_root))
        assert len(records) == (TINY.num_train if split == "train" else TINY.num_val)
        for r in records:
            assert f"/coco/{split}2017/" in r["file_name"]
            with Image.open(r["file_name"]) as im:
                assert im.size == (r["width"], r["height"]) == (TINY.width, TINY.height)


def test_second_call_keeps_files_other_settings_refused(world):
    before = _hashes(world)
    mtimes = {p: p.stat().st_mtime_ns for p in world.rglob("*") if p.is_file()}
    assert build_mini_lvis(world, TINY) is False
    assert _hashes(world) == before and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    with pytest.raises(SettingsMismatchError, match=r"mini_lvis_settings.json holds a mini-LVIS world built with "
                       r"other settings \(seed: 3 there, 4 asked\): choose another output folder"):
        build_mini_lvis(world, MiniLVISSettings(num_train=6, num_val=3, width=160, height=120, max_size=100, seed=4))


def test_same_settings_elsewhere_same_bytes_killed_build_redone(world, tmp_path):
    other = tmp_path / "again"
    assert build_mini_lvis(other, TINY)
    ref = _hashes(world)
    assert _hashes(other) == ref
    (other / "lvis/mini_lvis_settings.json").unlink()  # as if killed before the marker
    (other / "lvis/.mini_lvis_building.json").write_text("{}")
    assert build_mini_lvis(other, TINY) and _hashes(other) == ref


def test_foreign_lvis_files_are_not_overwritten(tmp_path):
    (tmp_path / "lvis").mkdir()
    (tmp_path / "lvis/lvis_v1_val.json").write_text('{"real": "LVIS"}')
    with pytest.raises(SettingsMismatchError, match="lvis_v1_val.json is there, .* not written by a build of a "
                       "mini-LVIS world; refusing to overwrite it"):
        build_mini_lvis(tmp_path, TINY)
    assert (tmp_path / "lvis/lvis_v1_val.json").read_text() == '{"real": "LVIS"}'


def _outputs_from_ground_truth(records):
    """Score-1 predictions equal to the annotations (boxes, and masks decoded from the polygons)."""
    outputs = []
    for r in records:
        h, w, annos = r["height"], r["width"], r["annotations"]
        xyxy = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
        masks = [mask_utils.decode(_polygon_rle(a, h, w)) for a in annos]
        outputs.append({"instances": Instances(
            (h, w), pred_boxes=Boxes(torch.tensor(xyxy, dtype=torch.float32)), scores=torch.ones(len(annos)),
            pred_classes=torch.tensor([a["category_id"] for a in annos]),
            pred_masks=torch.from_numpy(np.stack(masks)).bool())})
    return outputs


@pytest.mark.parametrize("split", SPLITS)
def test_lvis_evaluator_perfect_predictions_score_100(world, tmp_path, split):
    name = f"mini_lvis_test_{split}_{os.getpid()}"
    register_ov_lvis_instances(name, str(world / f"lvis/lvis_v1_{split}.json"), str(world / "coco") + "/",
                               vocabulary="all")
    records = DatasetCatalog.get(name)
    ev = LVISEvaluator(name, output_dir=str(tmp_path), max_dets_per_image=300)
    ev.reset()
    ev.process([{"image_id": r["image_id"]} for r in records], _outputs_from_ground_truth(records))
    res = ev.evaluate()
    for task in ("bbox", "segm"):
        for key in ("AP", "APr", "APc", "APf"):
            assert res[task][key] == pytest.approx(100.0), (task, key)


def test_random_vit_b32_clip_loads_with_real_shapes(tmp_path):
    import clip

    from vild_d2.kit.random_clip import save_random_clip

    start = time.time()
    path = save_random_clip(tmp_path / "clip.pt", "ViT-B/32", seed=0)
    model, _ = clip.load(str(path), device="cpu", jit=False)
    assert sum(p.numel() for p in model.parameters()) == 151_277_313  # as OpenAI's ViT-B/32
    assert model.visual.input_resolution == 224 and model.context_length == 77
    assert tuple(model.text_projection.shape) == (512, 512)
    assert json.loads(path.with_suffix(".json").read_text())["arch"] == "ViT-B/32"
    del model
    mtime = path.stat().st_mtime_ns
    assert save_random_clip(path, "ViT-B/32", seed=0) == path and path.stat().st_mtime_ns == mtime
    with pytest.raises(SettingsMismatchError, match=r"clip.json holds a random CLIP built with other settings "
                       r"\(seed: 0 there, 1 asked\): delete \S+clip.pt and clip.json, or choose another path"):
        save_random_clip(path, "ViT-B/32", seed=1)
    sealed = path.read_bytes()
    path.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 1]))  # altered: fails its seal, so it is written again
    assert save_random_clip(path, "ViT-B/32", seed=0) == path and path.read_bytes() == sealed
    foreign = tmp_path / "real.pt"
    foreign.write_bytes(b"a CLIP from elsewhere")
    with pytest.raises(SettingsMismatchError, match="real.pt is there, but not .*real.json"):
        save_random_clip(foreign, "ViT-B/32", seed=0)
    assert foreign.read_bytes() == b"a CLIP from elsewhere"
    assert time.time() - start < 120
