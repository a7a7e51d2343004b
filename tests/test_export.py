"""Exported models (vild_d2.export, tools/export_model.py): TorchScript and ONNX Runtime give the
eager model's detections in every mode, for two vocabularies of different sizes through one file;
the manifest refuses what does not fit; the loader returns demo.py's JSON."""
import json
import warnings

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from torchvision.ops import boxes as box_ops

from vild_d2.clip_model import clip_identity
from vild_d2.export import (
    ExportedModel,
    ExportedPredictor,
    ExportMismatchError,
    build_inference_model,
    compare_detections,
    detect,
    eager_predictor,
    export_model,
    read_manifest,
)
from vild_d2.export.tracing import _batched_nms, check_exportable
from vild_d2.kit.toy import TOY_PREFIX
from vild_d2.modeling import MODES
from vild_d2.text_classifier import ClassifierMismatchError
from vild_d2.visualize import detections_to_json

from .helpers import REPO, TOY_CFG, random_classifier, run, subprocess_env

BOX_TOLERANCE = 1e-2  # pixels; ONNX Runtime's kernels differ from torch's in the last float bits
MASK_PROBABILITY = 1e-3  # M x M mask probabilities before pasting
# Random weights score every class alike: no threshold, and room for every box that survives NMS.
TEST_OPTS = {"SCORE_THRESH_TEST": 0.01, "DETECTIONS_PER_IMAGE": 100}


def val_images(toy_env):
    paths = sorted((toy_env / TOY_PREFIX / "images" / "val").glob("*.png"))
    images = [read_image(str(p), format="RGB") for p in paths]
    # one larger than any toy image, so that the graph runs at sizes it was not traced at
    big = np.kron(images[0], np.ones((2, 2, 1), dtype=np.uint8))[:200, :170]
    return paths, images + [big]


def vocabularies(tmp_path, cfg):
    """The 24-class test vocabulary and a 7-class one of other names and order, 3 of them unknown."""
    ident = clip_identity(cfg.MODEL.VILD.CLIP_MODEL)
    names = MetadataCatalog.get(f"{TOY_PREFIX}_train_base").thing_classes
    other = ["zebra", names[3], "kettle", names[0], names[7], "violin", names[12]]
    return [cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS, random_classifier(tmp_path / "other.npy", other, seed=7, clip=ident)]


def exported(cfg, tmp_path, mode, formats=("torchscript", "onnx")):
    cfg = cfg.clone()
    cfg.MODEL.VILD.MODE = mode
    for key, value in TEST_OPTS.items():
        node = cfg.TEST if key == "DETECTIONS_PER_IMAGE" else cfg.MODEL.ROI_HEADS
        setattr(node, key, value)
    torch.manual_seed(0)
    model = build_inference_model(cfg, 64, weights=False)
    sample = torch.rand(3, 128, 144) * 255
    folder = tmp_path / f"export_{mode}"
    export_model(cfg, model, folder, formats, sample, torch.nn.functional.normalize(torch.randn(16, 64), dim=1))
    return cfg, model, folder


@pytest.mark.parametrize("mode", MODES)
def test_exported_model_gives_the_eager_detections(toy_cfg, toy_env, tmp_path, mode):
    cfg, model, folder = exported(toy_cfg, tmp_path, mode)
    _, images = val_images(toy_env)
    for vocabulary in vocabularies(tmp_path, cfg):
        runners = {fmt: ExportedPredictor(folder, vocabulary, fmt) for fmt in ("torchscript", "onnx")}
        emb, novel = runners["onnx"].embeddings, runners["onnx"].novel_mask
        reference = eager_predictor(cfg, model, emb, runners["onnx"].class_names, runners["onnx"].novel_ids)
        for image in images:
            tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
            with torch.no_grad():
                raw_ref = detect(model, tensor, emb, novel)
            ref = reference(image)
            assert len(ref) > 0
            for fmt, runner in runners.items():
                raw = compare_detections(raw_ref, runner.model(tensor, emb, novel))
                r = compare_detections(ref, runner(image))
                assert raw["classes_equal"] and r["classes_equal"], (mode, fmt, vocabulary, raw, r)
                assert raw["max_box_diff"] < BOX_TOLERANCE and raw["max_mask_diff"] < MASK_PROBABILITY, raw
                # random weights put mask probabilities near the 0.5 threshold, where a last-bit
                # difference flips a pixel: the pasted masks agree less than a trained model's
                assert r["max_box_diff"] < BOX_TOLERANCE and r["min_mask_iou"] > 0.95, (mode, fmt, r)
                if fmt == "torchscript":  # the same kernels: the same numbers
                    assert r["max_box_diff"] == 0 and r["max_score_diff"] == 0 and r["same_order"], r
                    assert r["min_mask_iou"] == 1 and raw["max_mask_diff"] == 0, r


def test_graph_is_the_eager_inference_and_leaves_the_model_as_it_was(toy_cfg, toy_env):
    cfg = toy_cfg.clone()
    cfg.MODEL.VILD.MODE = "ensemble"
    torch.manual_seed(0)
    model = build_inference_model(cfg, 64, weights=False)
    predictor = model.roi_heads.box_predictor
    emb = torch.nn.functional.normalize(torch.randn(24, 64), dim=1)
    novel = torch.zeros(24, dtype=torch.bool)
    novel[16:] = True
    image = torch.as_tensor(val_images(toy_env)[1][0].astype("float32").transpose(2, 0, 1))
    predictor.set_vocabulary(emb, None, list(range(16, 24)))
    vocabulary = predictor.test_embeddings, predictor.novel_mask
    with torch.no_grad():
        before = model.inference([{"image": image}], do_postprocess=False)[0]
        functional = detect(model, image, emb, novel)
        detect(model, image, emb[:5], novel[:5])  # another vocabulary, then the set one again
        after = model.inference([{"image": image}], do_postprocess=False)[0]
    for a in (functional, after):
        assert torch.equal(a.scores, before.scores) and torch.equal(a.pred_boxes.tensor, before.pred_boxes.tensor)
        assert torch.equal(a.pred_masks, before.pred_masks)
    assert predictor.test_embeddings is vocabulary[0] and predictor.novel_mask is vocabulary[1]


def test_no_detection_is_an_empty_result(toy_cfg, toy_env, tmp_path):
    cfg = toy_cfg.clone()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 1.0  # no score passes
    torch.manual_seed(0)
    model = build_inference_model(cfg, 64, weights=False)
    export_model(cfg, model, tmp_path / "ex", ["torchscript", "onnx"], torch.rand(3, 128, 144) * 255,
                 torch.randn(16, 64))
    image = val_images(toy_env)[1][0]
    for fmt in ("torchscript", "onnx"):
        inst = ExportedPredictor(tmp_path / "ex", cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS, fmt)(image)
        assert len(inst) == 0 and inst.pred_masks.shape[1:] == image.shape[:2]


def test_manifest_refuses_what_does_not_fit(toy_cfg, tmp_path):
    cfg, _, folder = exported(toy_cfg, tmp_path, "text", formats=("torchscript",))
    manifest = read_manifest(folder)
    assert manifest["embedding_dim"] == 64 and manifest["clip"] == clip_identity(cfg.MODEL.VILD.CLIP_MODEL)
    assert manifest["input"]["format"] == "RGB" and manifest["weights"] is None
    assert (folder / "config.yaml").is_file() and manifest["outputs"]["fields"][0] == "pred_boxes"
    names = ["a", "b"]
    with pytest.raises(ClassifierMismatchError, match="CLIP"):
        ExportedPredictor(folder, random_classifier(tmp_path / "clip.npy", names, clip="name:ViT-B/32"))
    with pytest.raises(ClassifierMismatchError, match="D=32"):
        ExportedPredictor(folder, random_classifier(tmp_path / "dim.npy", names, dim=32, clip=manifest["clip"]))
    model = ExportedModel(folder)
    with pytest.raises(ExportMismatchError, match="K x 64"):
        model(torch.zeros(3, 64, 64), torch.zeros(2, 32), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ExportMismatchError, match="no onnx model"):
        ExportedModel(folder, "onnx")
    with open(folder / "model.ts", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportMismatchError, match="altered"):
        ExportedModel(folder)


def test_traced_nms_makes_eagers_choice_at_run_time():
    """Few candidates: torchvision's coordinate trick; many (LVIS): one NMS per class, as in eager
    mode. Traced, torchvision would bake the quadratic coordinate trick in."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3000, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(3000, 2, generator=g) * 30], 1)
    scores, classes = torch.rand(3000, generator=g), torch.randint(0, 40, (3000,), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(lambda b, s, c: _batched_nms(b, s, c, 0.5), (boxes[:100], scores[:100], classes[:100]))
    for n in (100, 3000):
        assert torch.equal(traced(boxes[:n], scores[:n], classes[:n]),
                           box_ops.batched_nms(boxes[:n], scores[:n], classes[:n], 0.5))
    assert "prim::CallFunction" in str(traced.graph)  # scripted: its branch stays in the graph


def test_crop_scores_cannot_be_exported(toy_cfg):
    toy_cfg.MODEL.VILD.TEST_SCORES = "clip"
    with pytest.raises(ValueError, match="TEST_SCORES model"):
        check_exportable(toy_cfg)


def test_tool_exports_verifies_and_the_loader_writes_demo_json(toy_cfg, toy_env, tmp_path):
    """tools/export_model.py on a checkpoint, with --verify-images; then ExportedPredictor's JSON
    equals demo.py's (the eager model through DefaultPredictor, detections_to_json)."""
    torch.manual_seed(0)
    clip = str(toy_env / "clip.pt")
    cfg = toy_cfg.clone()
    cfg.MODEL.VILD.MODE = "ensemble"
    cfg.MODEL.VILD.CLIP_MODEL = clip
    model = build_inference_model(cfg, 64, weights=False)
    torch.save({"model": model.state_dict()}, tmp_path / "model_final.pth")
    names = list(MetadataCatalog.get(f"{TOY_PREFIX}_val").thing_classes)
    vocab = random_classifier(tmp_path / "vocab.npy", names[::-1], seed=3, clip=clip_identity(clip))
    paths, images = val_images(toy_env)
    out = tmp_path / "export"
    run([REPO / "tools/export_model.py", "--config-file", TOY_CFG, "--output", out, "--vocabulary", vocab,
         "--verify-images", paths[0].parent, "--verify-vocabulary", vocab,
         "MODEL.WEIGHTS", tmp_path / "model_final.pth",
         "MODEL.VILD.CLIP_MODEL", clip, "MODEL.VILD.MODE", "ensemble", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"],
        env=subprocess_env(toy_env))
    manifest = read_manifest(out)
    assert set(manifest["files"]) == {"torchscript", "onnx"} and manifest["weights_sha256"]
    results = json.loads((out / "verification.json").read_text())["results"][vocab]
    assert all(r["classes_equal"] and r["detections"] > 0 for r in results.values()), results
    loader = ExportedPredictor(out, vocab, "torchscript")
    reference = eager_predictor(cfg, model, loader.embeddings, loader.class_names, loader.novel_ids)
    for entry, path, image in zip(loader.detections_json([str(p) for p in paths], 0.05), paths, images):
        inst = reference(image)
        expected = detections_to_json(inst[inst.scores >= 0.05], names[::-1])
        assert entry == {"image": str(path), "detections": expected} and expected
