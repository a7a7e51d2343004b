"""Bad inputs through the user-facing entry points: each is refused with an error that names the
file or key and the fix, and leaves every file already there unchanged."""
import hashlib
import json
import os
import pickle
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from PIL import Image

from vild_d2.artifacts import CorruptArtifactError, SettingsMismatchError, UnsafePickleError, seal
from vild_d2.clip_model import clip_identity, load_clip
from vild_d2.data import ViLDDatasetMapper, register_ov_lvis_instances
from vild_d2.data.images import ImageReadError
from vild_d2.engine import load_config
from vild_d2.engine.checkpoint import VerifiedCheckpointer
from vild_d2.kit.toy import SPLIT_FILES, TOY_PREFIX
from vild_d2.locking import BusyError, exclusive
from vild_d2.recipe import RecipeSettings, Stage, run_recipe
from vild_d2.region_cache import CorruptCacheError
from vild_d2.region_cache.builder import RegionCacheSettings, build_region_cache
from vild_d2.region_cache.cli import build_from_args, make_parser
from vild_d2.region_cache.proposals import save_proposals
from vild_d2.text_classifier import ClassifierMismatchError

from .helpers import INSTANT, REPO, random_classifier

TRAIN, VAL = "tiny_toy_train_base", "tiny_toy_val"  # the test session's toy world (conftest.toy_env)


def _digest(*folders):
    """sha256 of every file under ``folders`` (lock files aside): what a refusal must not change."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file() and not p.name.endswith(".lock"):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refused(fn, exc, pattern, *watched):
    """``fn()`` raises ``exc`` matching ``pattern``; nothing under ``watched`` changes."""
    before = _digest(*watched)
    with pytest.raises(exc, match=pattern):
        fn()
    assert _digest(*watched) == before


def train_net(*argv):
    main = runpy.run_path(str(REPO / "train_net.py"), run_name="vild_d2_tests")["main"]
    return main(default_argument_parser().parse_args(list(argv)))


def demo(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["demo.py", *argv])
    return runpy.run_path(str(REPO / "demo.py"), run_name="vild_d2_tests")["main"]()


def build_classifier_tool(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["build_text_classifier.py", *argv])
    runpy.run_path(str(REPO / "tools/build_text_classifier.py"), run_name="vild_d2_tests")["main"]()


@pytest.fixture
def env(toy_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(toy_env))
    return toy_env


def _classifier(folder, dataset, toy_env, names=None, clip=None):
    names = names or MetadataCatalog.get(dataset).thing_classes
    clip = clip or clip_identity(str(toy_env / "clip.pt"))
    return random_classifier(Path(folder) / f"{dataset}.npy", names, clip=clip)


@pytest.fixture(scope="module")
def classifiers(toy_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifiers")
    return _classifier(folder, TRAIN, toy_env), _classifier(folder, VAL, toy_env)


def _opts(toy_env, tmp_path, *extra, classifiers=("", "")):
    """Config overrides: the test session's toy world, CLIP and (random) classifiers; ``extra`` last."""
    return ["DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", f"('{VAL}',)", "MODEL.VILD.CLIP_MODEL",
            str(toy_env / "clip.pt"), "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.VILD.TEXT_CACHE_DIR",
            str(tmp_path / "text"), "MODEL.VILD.TEXT_EMBEDDINGS", classifiers[0],
            "MODEL.VILD.TEST_TEXT_EMBEDDINGS", classifiers[1], *extra]


# --- text classifiers and CLIP ----------------------------------------------------------------


def test_classifier_without_sidecar_is_refused(env, tmp_path):
    path = _classifier(tmp_path, TRAIN, env)
    Path(path).with_suffix(".json").unlink()
    cfg = load_config(INSTANT, _opts(env, tmp_path, "MODEL.VILD.TEXT_EMBEDDINGS", path))
    refused(lambda: build_model(cfg), ClassifierMismatchError, "no .*json sidecar.*ALLOW_CLASSIFIER_WITHOUT_SIDECAR",
            tmp_path)
    cfg.MODEL.VILD.ALLOW_CLASSIFIER_WITHOUT_SIDECAR = True  # the explicit opt-in
    cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS = _classifier(tmp_path, VAL, env)
    assert build_model(cfg) is not None


def test_classifier_in_another_class_order_is_refused(env, tmp_path):
    names = list(reversed(MetadataCatalog.get(TRAIN).thing_classes))
    path = _classifier(tmp_path, TRAIN, env, names=names)
    cfg = load_config(INSTANT, _opts(env, tmp_path, "MODEL.VILD.TEXT_EMBEDDINGS", path))
    refused(lambda: build_model(cfg), ClassifierMismatchError, "MODEL.VILD.TEXT_EMBEDDINGS.*class 0 is.*rebuild",
            tmp_path)


def test_classifier_of_another_size_is_refused(env, tmp_path):
    path = _classifier(tmp_path, TRAIN, env, names=["a", "b", "c"])
    cfg = load_config(INSTANT, _opts(env, tmp_path, "MODEL.VILD.TEXT_EMBEDDINGS", path))
    refused(lambda: build_model(cfg), ClassifierMismatchError, "has 3 classes but the dataset has", tmp_path)


def test_classifier_of_another_clip_is_refused(env, tmp_path):
    path = _classifier(tmp_path, TRAIN, env, clip="sha256:feed")
    cfg = load_config(INSTANT, _opts(env, tmp_path, "MODEL.VILD.TEXT_EMBEDDINGS", path))
    refused(lambda: build_model(cfg), ClassifierMismatchError, "built with CLIP sha256:feed.*MODEL.VILD.CLIP_MODEL",
            tmp_path)


def test_garbage_classifier_file_is_refused(env, tmp_path):
    path = Path(_classifier(tmp_path, TRAIN, env))
    path.write_bytes(b"\x93NUMPY garbage")
    cfg = load_config(INSTANT, _opts(env, tmp_path, "MODEL.VILD.TEXT_EMBEDDINGS", str(path)))
    refused(lambda: build_model(cfg), ClassifierMismatchError, "not a readable .npy.*build_text_classifier", tmp_path)


def test_truncated_classifier_sidecar_is_named(env, tmp_path):
    path = Path(_classifier(tmp_path, TRAIN, env))
    side = path.with_suffix(".json")
    side.write_text(side.read_text()[:40])
    cfg = load_config(INSTANT, _opts(env, tmp_path, "MODEL.VILD.TEXT_EMBEDDINGS", str(path)))
    refused(lambda: build_model(cfg), CorruptArtifactError, f"sidecar {side}.*not valid JSON", tmp_path)


def test_missing_clip_file_names_the_key(env, tmp_path, monkeypatch):
    refused(lambda: build_classifier_tool(monkeypatch, "--config-file", str(INSTANT), "--opts",
                                          *_opts(env, tmp_path, "MODEL.VILD.CLIP_MODEL", str(tmp_path / "nope.pt"))),
            FileNotFoundError, "MODEL.VILD.CLIP_MODEL .*nope.pt.*neither a file nor a known name", tmp_path)


def test_missing_clip_file_is_not_called_a_classifier_mismatch(env, tmp_path):
    path = _classifier(tmp_path, TRAIN, env)  # built with the session's CLIP file
    cfg = load_config(INSTANT, _opts(env, tmp_path, "MODEL.VILD.TEXT_EMBEDDINGS", path, "MODEL.VILD.CLIP_MODEL",
                                     str(tmp_path / "moved_away.pt")))
    refused(lambda: build_model(cfg), FileNotFoundError, "MODEL.VILD.CLIP_MODEL .*moved_away.pt.*neither a file",
            tmp_path)


def test_clip_file_of_random_bytes(env, tmp_path, monkeypatch):
    bad = tmp_path / "clip.pt"
    bad.write_bytes(os.urandom(4096))
    refused(lambda: build_classifier_tool(monkeypatch, "--config-file", str(INSTANT), "--opts",
                                          *_opts(env, tmp_path, "MODEL.VILD.CLIP_MODEL", str(bad))),
            RuntimeError, "clip.pt is not a CLIP checkpoint clip.load can read", tmp_path)


# --- region caches and proposals ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(toy_env, tmp_path_factory):
    """A region cache of the toy training images (ground-truth boxes as proposals)."""
    root = tmp_path_factory.mktemp("cache")
    records = DatasetCatalog.get(TRAIN)
    boxes = [np.array([a["bbox"] for a in r["annotations"]] or np.zeros((0, 4)), np.float32).reshape(-1, 4)
             for r in records]
    for b in boxes:
        b[:, 2:] += b[:, :2]
    save_proposals(root / "proposals.npz", [r["image_id"] for r in records], boxes, [np.ones(len(b)) for b in boxes])
    spec = str(toy_env / "clip.pt")

    def source(record, image):
        b = boxes[records.index(record)]
        return b, np.ones(len(b), np.float32)

    build_region_cache(root / "cache", records, source, load_clip(spec), spec,
                       RegionCacheSettings(num_proposals=4, shard_size=4), dataset_name=TRAIN, num_workers=0)
    return root


def _vild_cfg(toy_env, tmp_path, cache_dir, *extra):
    return load_config(INSTANT, _opts(toy_env, tmp_path, "MODEL.VILD.MODE", "vild", "MODEL.VILD.REGION_CACHE_DIR",
                                      str(cache_dir), "MODEL.VILD.NUM_CACHED_PROPOSALS", "4", *extra))


def _train_loader(cfg):
    from vild_d2.engine import ViLDTrainer

    return ViLDTrainer.build_train_loader(cfg)


def test_cache_of_another_dataset_is_refused(env, tmp_path, cache):
    copy = tmp_path / "c"
    shutil.copytree(cache / "cache", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(dict(manifest, dataset="someone_else")))
    cfg = _vild_cfg(env, tmp_path, copy)
    refused(lambda: _train_loader(cfg), SettingsMismatchError, "dataset: 'someone_else' there, .* asked.*"
            "REGION_CACHE_DIR", copy)


def test_cache_with_foreign_image_ids_is_refused(env, tmp_path, cache):
    # the cache of another world whose ids overlap: named as the cache's dataset, ids not all ours
    cfg = _vild_cfg(env, tmp_path, cache / "cache", "MODEL.VILD.REGION_CACHE_DATASET", TRAIN,
                    "DATASETS.TRAIN", f"('{VAL}',)")
    refused(lambda: _train_loader(cfg), SettingsMismatchError, "image ids the training set does not have.*rebuild",
            cache)


def test_cache_missing_training_images_is_refused(env, tmp_path, cache):
    copy = tmp_path / "c"
    shutil.copytree(cache / "cache", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:1]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    cfg = _vild_cfg(env, tmp_path, copy)
    refused(lambda: _train_loader(cfg), SettingsMismatchError, "lacks .* training images.*SKIP_MISSING_REGIONS",
            copy)


def test_more_proposals_asked_than_cached_is_refused(env, tmp_path, cache):
    cfg = _vild_cfg(env, tmp_path, cache / "cache", "MODEL.VILD.NUM_CACHED_PROPOSALS", "300")
    refused(lambda: _train_loader(cfg), SettingsMismatchError, "holds 4 proposals per image but "
            "MODEL.VILD.NUM_CACHED_PROPOSALS is 300", cache)


def test_cache_of_another_clip_is_refused(env, tmp_path, cache):
    other = tmp_path / "other_clip.pt"
    shutil.copy(env / "clip.pt", other)
    with open(other, "ab") as f:
        f.write(b"\0")  # another file: another identity
    cfg = _vild_cfg(env, tmp_path, cache / "cache", "MODEL.VILD.CLIP_MODEL", str(other))
    refused(lambda: ViLDDatasetMapper(cfg, is_train=True).cache, SettingsMismatchError,
            "clip: 'sha256:.* there, 'sha256:.* asked", cache)


def test_altered_cache_shard_is_refused(env, tmp_path, cache):
    copy = tmp_path / "c"
    shutil.copytree(cache / "cache", copy)
    emb = copy / "shard_00000" / "embeds.npy"
    emb.write_bytes(emb.read_bytes()[:-1] + b"\1")
    cfg = _vild_cfg(env, tmp_path, copy)
    mapper = ViLDDatasetMapper(cfg, is_train=True)
    refused(lambda: mapper(DatasetCatalog.get(TRAIN)[0]), CorruptCacheError, "shard_00000/embeds.npy is altered "
            r"\(its sha256 differs from its seal; \d+ bytes\): delete .* and rerun", copy)


def test_truncated_cache_manifest_is_named(env, tmp_path, cache):
    copy = tmp_path / "c"
    shutil.copytree(cache / "cache", copy)
    (copy / "manifest.json").write_text((copy / "manifest.json").read_text()[:50])
    cfg = _vild_cfg(env, tmp_path, copy)
    refused(lambda: _train_loader(cfg), CorruptArtifactError, "region cache manifest .*manifest.json is not valid JSON",
            copy)


def _cache_cli(env, tmp_path, out, *extra, dataset=TRAIN):
    return make_parser().parse_args(["--config-file", str(INSTANT), "--output", str(out), "--num-workers", "0",
                                     "--dataset", dataset, *extra, "MODEL.VILD.CLIP_MODEL", str(env / "clip.pt"),
                                     "MODEL.VILD.NUM_CACHED_PROPOSALS", "4"])


def test_second_cache_build_into_one_folder_is_refused(env, tmp_path, cache):
    out = tmp_path / "c"
    with exclusive(out, "region cache build"):  # a first build, still running
        refused(lambda: build_from_args(_cache_cli(env, tmp_path, out, "--proposals", str(cache / "proposals.npz"))),
                BusyError, f"another region cache build \\(pid {os.getpid()} on .*\\) is writing .*c: wait", out)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_proposals_need_the_flag_and_never_run_code(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "proposals.pkl"
    evil.write_bytes(pickle.dumps({"ids": [1], "boxes": [_RunsCode()], "objectness_logits": [[1.0]]}))
    out = tmp_path / "c"
    refused(lambda: build_from_args(_cache_cli(env, tmp_path, out, "--proposals", str(evil))), ValueError,
            "tools/convert_proposals.py, or pass --allow-pickle", tmp_path)
    refused(lambda: build_from_args(_cache_cli(env, tmp_path, out, "--proposals", str(evil), "--allow-pickle")),
            UnsafePickleError, "asks to build .*system.*Convert it", tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_inconsistent_npz_proposals_are_refused(env, tmp_path):
    bad = tmp_path / "p.npz"
    np.savez(bad, ids=np.arange(3), counts=np.array([2, 2, 2]), boxes=np.zeros((5, 4)), objectness_logits=np.zeros(5))
    refused(lambda: build_from_args(_cache_cli(env, tmp_path, tmp_path / "c", "--proposals", str(bad))), ValueError,
            "counts sum to 6 but it holds 5 boxes", tmp_path)


def test_unregistered_dataset_for_the_cache_names_the_key(env, tmp_path):
    refused(lambda: build_from_args(_cache_cli(env, tmp_path, tmp_path / "c", "--proposals", "p.npz",
                                               dataset="nobody")), KeyError, "DATASETS.VILD.REGISTER", tmp_path)


# --- weights and checkpoints --------------------------------------------------------------------


@pytest.fixture
def eval_only(env, tmp_path, classifiers):
    def run(weights):
        return lambda: train_net("--config-file", str(INSTANT), "--eval-only",
                                 *_opts(env, tmp_path, "MODEL.WEIGHTS", str(weights), classifiers=classifiers))
    return run


def test_eval_only_with_weights_of_another_architecture(eval_only, tmp_path):
    rpn = build_model(load_config(REPO / "configs/toy/RPN-Toy-R18-FPN.yaml", ["MODEL.DEVICE", "cpu"]))
    weights = tmp_path / "w" / "rpn.pth"
    weights.parent.mkdir()
    torch.save({"model": rpn.state_dict()}, weights)
    refused(eval_only(weights), ValueError, "rpn.pth does not fit this model: .* parameters missing or of another "
            "shape.*model_final.pth trained with this config", weights.parent)
    assert not (tmp_path / "out" / "eval_results.json").exists()


def test_eval_only_with_missing_weights(eval_only, tmp_path):
    refused(eval_only(tmp_path / "nope.pth"), FileNotFoundError, "MODEL.WEIGHTS .*nope.pth not found",
            tmp_path / "text")


def test_pickled_weights_that_run_code_are_refused(eval_only, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "w" / "model.pkl"
    weights.parent.mkdir()
    weights.write_bytes(pickle.dumps({"model": {"w": _RunsCode()}, "__author__": "x"}))
    refused(eval_only(weights), UnsafePickleError, "model.pkl is not a plain-data pickle", weights.parent)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_plain_data_pkl_weights_still_load(tmp_path, protocol):
    """Detectron2 model-zoo weights (.pkl of numpy arrays, e.g. ImageNet R-50.pkl) load as before."""
    model = torch.nn.Linear(3, 2)
    weights = {"weight": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.array([1.0, -1.0], np.float32)}
    path = tmp_path / "zoo.pkl"
    path.write_bytes(pickle.dumps({"model": weights, "__author__": "zoo", "matching_heuristics": False},
                                  protocol=protocol))
    VerifiedCheckpointer(model).load(str(path))
    assert torch.equal(model.weight.data, torch.from_numpy(weights["weight"]))
    assert torch.equal(model.bias.data, torch.from_numpy(weights["bias"]))


def test_altered_checkpoint_fails_its_seal(eval_only, tmp_path, instant_run):
    run, _ = instant_run
    weights = tmp_path / "w" / "model_final.pth"
    weights.parent.mkdir()
    shutil.copy(run / "model_final.pth.sha256", weights.parent)
    weights.write_bytes((run / "model_final.pth").read_bytes()[:100_000])  # a copy cut short
    refused(eval_only(weights), CorruptArtifactError, r"checkpoint .*model_final.pth is incomplete or altered "
            r"\(100000 bytes, sealed at \d+\) \(its seal: model_final.pth.sha256\): delete it", weights.parent)


def test_recipe_stage_does_not_trust_an_unsealed_or_altered_checkpoint(tmp_path):
    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"")  # a 0-byte file, as a write killed before sealing leaves
    stage = Stage("training", (weights,), lambda: None)
    assert not stage.done
    torch.save({"model": {}}, weights)
    seal(weights)
    assert stage.done
    weights.write_bytes(weights.read_bytes()[:10])
    assert not stage.done


# --- datasets, images, the demo, concurrent jobs ------------------------------------------------


def test_truncated_dataset_json_is_named(env, tmp_path):
    bad = tmp_path / "mine.json"
    bad.write_text((env / TOY_PREFIX / SPLIT_FILES["val"]).read_text()[:100])
    refused(lambda: load_config(INSTANT, ["DATASETS.VILD.REGISTER", f"[['mine_bad', '{bad}', '{tmp_path}']]"]),
            CorruptArtifactError, "dataset json .*mine.json is not valid JSON", tmp_path)


def test_garbage_training_image_is_named(env, tmp_path, toy_cfg):
    record = dict(DatasetCatalog.get(TRAIN)[0])
    record["file_name"] = str(tmp_path / "broken.png")
    Path(record["file_name"]).write_bytes(b"not an image")
    toy_cfg.MODEL.VILD.MODE = "text"
    refused(lambda: ViLDDatasetMapper(toy_cfg, is_train=True)(record), ImageReadError,
            "cannot read image .*broken.png .*Restore the file, or remove the image", tmp_path)


def _demo_args(env, tmp_path, run, inputs, vocabulary):
    """No classifier of the training or test datasets: the custom vocabulary is all demo.py needs."""
    return ["--config-file", str(INSTANT), "--input", *inputs, "--output", str(tmp_path / "out"), "--vocabulary",
            "custom", "--custom-vocabulary", vocabulary, "--opts", *_opts(env, tmp_path, "MODEL.WEIGHTS",
                                                                           str(run / "model_final.pth"))]


def test_demo_without_readable_inputs_fails(env, tmp_path, instant_run, monkeypatch):
    run, _ = instant_run
    (tmp_path / "broken.png").write_bytes(b"nope")
    assert demo(monkeypatch, *_demo_args(env, tmp_path, run, [str(tmp_path / "broken.png")], "ruby")) == 1
    assert demo(monkeypatch, *_demo_args(env, tmp_path, run, [str(tmp_path / "empty_dir*")], "ruby")) == 1
    assert not list(tmp_path.rglob("*.png"))[1:]  # broken.png only


@pytest.mark.parametrize("vocabulary,pattern", [(" , ", "empty vocabulary"), ("FILE", "empty vocabulary"),
                                                ("ruby,medic,ruby", "names \\['ruby'\\] more than once")])
def test_demo_refuses_empty_and_duplicated_vocabularies(env, tmp_path, instant_run, monkeypatch, vocabulary, pattern):
    run, _ = instant_run
    if vocabulary == "FILE":  # a vocabulary file of blank lines
        vocabulary = str(tmp_path / "classes.txt")
        Path(vocabulary).write_text("\n \n")
    refused(lambda: demo(monkeypatch, *_demo_args(env, tmp_path, run, ["x.png"], vocabulary)), ValueError, pattern,
            tmp_path)


def test_demo_same_stem_in_two_folders_keeps_both(env, tmp_path, instant_run, monkeypatch):
    run, _ = instant_run
    src = sorted((env / TOY_PREFIX / "images" / "val").glob("*.png"))
    for folder, image in (("a", src[0]), ("b", src[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / "x.png")
    assert demo(monkeypatch, *_demo_args(env, tmp_path, run, [str(tmp_path / "a/x.png"), str(tmp_path / "b/x.png")],
                                         "ruby,medic")) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    assert len(list((tmp_path / "text").glob("*.npy"))) == 1  # the custom vocabulary's classifier alone
    assert min(Image.open(tmp_path / "out" / "a_x.png").size) >= 480  # a 128 px image is drawn upscaled
    written = [json.loads((tmp_path / "out" / f"{name}_x.json").read_text()) for name in "ab"]
    assert [w["image"] for w in written] == [str(tmp_path / "a/x.png"), str(tmp_path / "b/x.png")]


def test_second_recipe_run_into_one_folder_is_refused(env, tmp_path):
    settings = RecipeSettings(str(INSTANT), str(REPO / "configs/toy/RPN-Toy-R18-FPN.yaml"),
                              opts=tuple(_opts(env, tmp_path)), proposal_opts=("MODEL.DEVICE", "cpu"))
    with exclusive(tmp_path / "recipe", "recipe run"):
        refused(lambda: run_recipe(tmp_path / "recipe", settings), BusyError, "another recipe run .*is writing",
                tmp_path)


def test_second_training_into_one_output_dir_is_refused(env, tmp_path, classifiers):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.yaml").write_text("the first job's")
    with exclusive(tmp_path / "out", "training"):
        refused(lambda: train_net("--config-file", str(INSTANT), *_opts(env, tmp_path, classifiers=classifiers)),
                BusyError, "another training .*is writing .*out", tmp_path)


def test_checkpoint_write_killed_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    ckpt = VerifiedCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001")
    before = _digest(tmp_path)

    def dies_midway(obj, f, *a, **k):
        f.write(b"PK\3\4 half a checkpoint")
        raise KeyboardInterrupt  # stands for the kill: the rename never happens

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_final")
    assert _digest(tmp_path) == before and not (tmp_path / "model_final.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def test_lvis_json_without_coco_url_names_the_fix(tmp_path):
    """An LVIS-format json whose images carry only 'file_name' (COCO style): a message, not KeyError."""
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8, "not_exhaustive_category_ids": [],
                        "neg_category_ids": []}],
            "annotations": [], "categories": [{"id": 1, "name": "lemon", "synonyms": ["lemon"], "frequency": "f"}]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    register_ov_lvis_instances("no_coco_url_lvis", str(tmp_path / "d.json"), str(tmp_path))
    with pytest.raises(ValueError, match="needs a 'coco_url'.*format 'coco'"):
        DatasetCatalog.get("no_coco_url_lvis")
