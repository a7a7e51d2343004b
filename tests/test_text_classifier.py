"""CLIP text-classifier builder: exact values, cache, checks, vocabularies."""
import json

import clip
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vild_d2.clip_model import load_clip
from vild_d2.kit.toy import toy_categories
from vild_d2.kit.toy.teacher import TeacherSettings, build_toy_clip
from vild_d2.text_classifier import (
    ClassifierMismatchError,
    cached_text_classifier,
    clean_class_name,
    encode_classes,
    load_text_classifier,
    read_templates,
)
from vild_d2.vocabularies import load_vocabulary

TEMPLATES = ["a photo of a {}.", "a {} in the scene.", "art of the {}."]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(build_toy_clip(TeacherSettings()).state_dict(), path)
    return str(path)


@pytest.fixture
def templates_file(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("# test templates\n" + "\n".join(TEMPLATES) + "\n")
    return str(path)


def test_matches_direct_encode_text(tiny_clip):
    model = load_clip(tiny_clip)  # through clip.load, as users do
    synonyms = [["red_circle"], ["bow_(weapon)", "archery bow"]]
    got = encode_classes(model, synonyms, TEMPLATES, batch_size=2)
    with torch.no_grad():
        expected = []
        for syns in synonyms:
            texts = [t.format(clean_class_name(s)) for s in syns for t in TEMPLATES]
            emb = F.normalize(model.encode_text(clip.tokenize(texts, context_length=model.context_length)), dim=-1)
            expected.append(F.normalize(emb.mean(0), dim=0))
    expected = torch.stack(expected).numpy()
    assert got.shape == (2, model.text_projection.shape[1]) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(encode_classes(model, synonyms, TEMPLATES, trim=False), expected, atol=2e-6)


def test_clean_class_name():
    assert clean_class_name("bow_(weapon)") == "bow, a type of weapon"
    assert clean_class_name("red_circle") == "red circle"
    assert clean_class_name("  soda_(drink) ") == "soda, a type of drink"


def test_second_build_runs_no_text_forward(tiny_clip, templates_file, tmp_path, monkeypatch):
    calls = []
    original = clip.model.CLIP.encode_text
    monkeypatch.setattr(clip.model.CLIP, "encode_text", lambda self, t: calls.append(len(t)) or original(self, t))
    first = cached_text_classifier(tmp_path, "red circle,blue star", tiny_clip, templates_file)
    assert sum(calls) == 2 * len(TEMPLATES)
    second = cached_text_classifier(tmp_path, "red circle,blue star", tiny_clip, templates_file)
    assert second == first and sum(calls) == 2 * len(TEMPLATES)
    meta = json.loads(first.with_suffix(".json").read_text())
    assert meta["class_names"] == ["red circle", "blue star"] and meta["clip"].startswith("sha256:")
    assert meta["dim"] == 64 and meta["num_templates"] == len(TEMPLATES)
    other = cached_text_classifier(tmp_path, "red circle,blue star", tiny_clip)  # default templates
    assert other != first and sum(calls) > 2 * len(TEMPLATES)


def test_sidecar_mismatches_raise_naming_both_sides(tiny_clip, templates_file, tmp_path):
    path = cached_text_classifier(tmp_path, "red circle,blue star", tiny_clip, templates_file)
    emb, names = load_text_classifier(path, expected_names=["red circle", "blue star"], expected_dim=64)
    assert emb.shape == (2, 64) and names == ["red circle", "blue star"]
    with pytest.raises(ClassifierMismatchError, match="'blue star' in the file but 'green star'"):
        load_text_classifier(path, expected_names=["red circle", "green star"])
    with pytest.raises(ClassifierMismatchError, match="2 classes but the dataset has 3"):
        load_text_classifier(path, expected_names=["a", "b", "c"])
    with pytest.raises(ClassifierMismatchError, match="D=64 but the model expects D=512"):
        load_text_classifier(path, expected_dim=512)
    with pytest.raises(ClassifierMismatchError, match="built with CLIP sha256:.*config uses name:ViT-B/32"):
        load_text_classifier(path, expected_clip="name:ViT-B/32")
    with pytest.raises(FileNotFoundError, match="build_text_classifier.py"):
        load_text_classifier(tmp_path / "missing.npy")


def test_vocabulary_sources(tmp_path, toy_env):
    assert load_vocabulary("red circle, blue star") == (["red circle", "blue star"], [["red circle"], ["blue star"]])
    f = tmp_path / "vocab.txt"
    f.write_text("red circle\nmug, coffee cup\n\n")
    assert load_vocabulary(str(f)) == (["red circle", "mug"], [["red circle"], ["mug", "coffee cup"]])
    names, syns = load_vocabulary("lvis")
    assert len(names) == 1203 and names[0] == "aerosol_can" and syns[0] == ["aerosol_can", "spray_can"]
    assert load_vocabulary("lvis_v1_val")[1] == syns  # detectron2's registered LVIS gets the synonyms
    assert len(load_vocabulary("coco")[0]) == 80
    toy_names, _ = load_vocabulary("tiny_toy_val")  # a registered dataset's classes
    assert len(toy_names) == 24 and toy_names == [c.name for c in toy_categories()]
    with pytest.raises(ValueError, match="empty vocabulary"):
        load_vocabulary(" , ")


def test_default_templates():
    templates = read_templates()
    assert len(templates) >= 40 and all(t.count("{}") == 1 for t in templates)


def test_unknown_clip_model_says_what_to_do():
    with pytest.raises(FileNotFoundError, match="MODEL.VILD.CLIP_MODEL"):
        load_clip("no/such/checkpoint.pt")
