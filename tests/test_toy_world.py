"""Toy world: determinism, LVIS format, base split, registration, settings guard."""
import hashlib
import json

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from lvis import LVIS

from vild_d2.artifacts import SettingsMismatchError
from vild_d2.kit.toy import SPLIT_FILES, TOY_PREFIX, ToyWorldSettings, build_toy_world, register_toy_world

TINY = ToyWorldSettings(num_train=12, num_val=4, seed=3)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / TOY_PREFIX
    build_toy_world(root, TINY, workers=1)
    return root


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    build_toy_world(tmp_path / "same", TINY, workers=2)  # parallel rendering, same bytes
    assert _digest(tmp_path / "same") == _digest(world)
    other = ToyWorldSettings(num_train=12, num_val=4, seed=4)
    build_toy_world(tmp_path / "other", other, workers=1)
    assert _digest(tmp_path / "other") != _digest(world)


def test_lvis_api_loads_every_split_and_base_hides_rare(world):
    splits = {s: LVIS(str(world / f)) for s, f in SPLIT_FILES.items()}
    cats = splits["val"].dataset["categories"]
    assert len(cats) == 24 and sum(c["frequency"] == "r" for c in cats) == 8
    rare = {c["id"] for c in cats if c["frequency"] == "r"}
    base_anns = splits["train_base"].dataset["annotations"]
    full_anns = splits["train_full"].dataset["annotations"]
    assert base_anns and not any(a["category_id"] in rare for a in base_anns)
    rare_in_pixels = [a for a in full_anns if a["category_id"] in rare]
    assert rare_in_pixels, "rare objects must be present in the training images"
    assert len(full_anns) == len(base_anns) + len(rare_in_pixels)
    assert splits["train_base"].dataset["images"] == [
        dict(im, neg_category_ids=[c for c in im["neg_category_ids"] if c not in rare])
        for im in splits["train_full"].dataset["images"]]
    for img in splits["val"].dataset["images"]:  # fully labelled: absent = verified negative
        present = {a["category_id"] for a in splits["val"].img_ann_map[img["id"]]}
        assert set(img["neg_category_ids"]) == set(range(1, 25)) - present


def test_boxes_match_masks_exactly(world):
    from pycocotools import mask as mask_utils

    data = json.loads((world / SPLIT_FILES["val"]).read_text())
    im = {i["id"]: i for i in data["images"]}
    for a in data["annotations"]:
        rle = mask_utils.frPyObjects(a["segmentation"], im[a["image_id"]]["height"], im[a["image_id"]]["width"])
        assert list(mask_utils.toBbox(mask_utils.merge(rle))) == a["bbox"]


def test_registration_vocabularies(world):
    register_toy_world(str(world), prefix="ttoy")
    base, val = MetadataCatalog.get("ttoy_train_base"), MetadataCatalog.get("ttoy_val")
    assert len(base.thing_classes) == 16 and base.novel_class_ids == []
    assert len(val.thing_classes) == 24 and len(val.novel_class_ids) == 8
    assert val.evaluator_type == "lvis"
    assert set(val.novel_class_ids) | set(val.base_class_ids) == set(range(24))
    assert [val.thing_classes[i] for i in val.base_class_ids] == base.thing_classes
    records = DatasetCatalog.get("ttoy_train_base")
    assert len(records) == TINY.num_train
    annos = [a for r in records for a in r["annotations"]]
    assert annos and all(0 <= a["category_id"] < 16 and a["segmentation"] for a in annos)
    assert len(DatasetCatalog.get("ttoy_val")) == TINY.num_val


def test_missing_world_names_the_config_entry(tmp_path):
    with pytest.raises(FileNotFoundError, match="DATASETS.VILD.REGISTER entry 'missing_toy_train_base'"):
        register_toy_world(str(tmp_path / "nowhere"), prefix="missing_toy")


def test_existing_world_is_reused_and_never_overwritten(world):
    assert build_toy_world(world, TINY) is False
    with pytest.raises(SettingsMismatchError, match=r"holds a toy world built with other settings \(seed: 3 there, "
                       r"9 asked\): use another folder, or delete \S+ to build it anew"):
        build_toy_world(world, ToyWorldSettings(num_train=12, num_val=4, seed=9))
    assert json.loads((world / "settings.json").read_text())["seed"] == TINY.seed


def test_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SettingsMismatchError, match=r"notes.txt is there, but not \S+settings.json"):
        build_toy_world(tmp_path, TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_names_are_opaque_words():
    """Novel names must not be spelled out of base words (else text alone transfers)."""
    import clip

    from vild_d2.kit.toy.scenes import COLOURS, SHAPES, toy_categories

    cats = toy_categories()
    names = [c.name for c in cats]
    assert len(set(names)) == 24 and [c.name for c in cats if c.frequency == "r"] == [
        "ruby", "clover", "sapphire", "sheriff", "medic", "cactus", "compass", "daisy"]
    assert not any(w in n for n in names for w in list(COLOURS) + list(SHAPES))
    tokens = {c.name: set(clip.tokenize([c.name], context_length=16)[0, 1:].tolist()) - {0, 49407} for c in cats}
    base_tokens = set().union(*(tokens[c.name] for c in cats if c.frequency != "r"))
    assert all(not (tokens[c.name] & base_tokens) for c in cats if c.frequency == "r")


def test_rare_kinds():
    """No base class is a star or a cross (concepts only the teacher knows); every colour is a
    base colour, so no colour gives a novel class away; half the base classes are frequent."""
    from vild_d2.kit.toy.scenes import COLOURS, NOVEL_SHAPES, SHAPES, toy_categories

    cats = toy_categories()
    base = [c for c in cats if c.frequency != "r"]
    assert len(base) == 16 and set(NOVEL_SHAPES) < set(SHAPES)
    assert {c.shape for c in base} == set(SHAPES) - set(NOVEL_SHAPES) and {c.colour for c in base} == set(COLOURS)
    assert {c.shape for c in cats if c.frequency == "r"} == set(NOVEL_SHAPES)
    assert sum(c.frequency == "f" for c in base) == 8
