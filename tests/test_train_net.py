"""Datasets, evaluators and train_net.py: LVIS/COCO open-vocabulary splits, instant train + eval."""
import json
import math

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import LVISEvaluator
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks

from vild_d2.data import register_ov_lvis_instances
from vild_d2.engine import ViLDTrainer
from vild_d2.evaluation import LVISFastEvaluator, OVCOCOEvaluator
from vild_d2.kit.toy import SPLIT_FILES, TOY_PREFIX

from .helpers import train_net


def test_lvis_v1_open_vocabulary_split():
    val = MetadataCatalog.get("lvis_v1_val")
    freqs = val.class_frequencies
    assert (freqs.count("f"), freqs.count("c"), freqs.count("r")) == (405, 461, 337)
    assert len(val.novel_class_ids) == 337 and len(val.thing_classes) == 1203
    base = MetadataCatalog.get("lvis_v1_train_base")
    assert len(base.thing_classes) == 866 and base.evaluator_type == "lvis"
    assert [val.thing_classes[i] for i in val.base_class_ids] == base.thing_classes
    coco = MetadataCatalog.get("coco_2017_val_ov_all")
    assert len(coco.thing_classes) == 65 and len(coco.novel_class_ids) == 17
    assert len(MetadataCatalog.get("coco_2017_train_ov_base").thing_classes) == 48


def test_missing_lvis_json_names_the_path():
    with pytest.raises(FileNotFoundError, match="lvis_v1_train.json.*datasets/README.md"):
        DatasetCatalog.get("lvis_v1_train_base")


def test_base_split_drops_exactly_rare_annotations(toy_env):
    full = DatasetCatalog.get("tiny_toy_train_full")
    base = DatasetCatalog.get("tiny_toy_train_base")
    assert [r["image_id"] for r in base] == [r["image_id"] for r in full]  # every image kept
    names_full = MetadataCatalog.get("tiny_toy_train_full").thing_classes
    names_base = MetadataCatalog.get("tiny_toy_train_base").thing_classes
    rare = set(MetadataCatalog.get("tiny_toy_train_full").novel_class_ids)
    for rb, rf in zip(base, full):
        kept = [names_full[a["category_id"]] for a in rf["annotations"] if a["category_id"] not in rare]
        assert [names_base[a["category_id"]] for a in rb["annotations"]] == kept
    # A json without LVIS frequencies: novel classes by name; the same path a user takes.
    json_file = toy_env / TOY_PREFIX / SPLIT_FILES["val"]
    data = json.loads(json_file.read_text())
    for c in data["categories"]:
        c.pop("frequency")
    plain = toy_env / "plain.json"
    plain.write_text(json.dumps(data))
    register_ov_lvis_instances("plain_base", str(plain), str(toy_env / TOY_PREFIX / "images"), vocabulary="base",
                               novel_classes=["cherry", "sapphire"])
    assert len(MetadataCatalog.get("plain_base").thing_classes) == 22
    with pytest.raises(ValueError, match="purple_moon"):
        register_ov_lvis_instances("bad", str(plain), "x", novel_classes=["purple_moon"])


def _perfect_outputs(records):
    outputs = []
    for r in records:
        inst = Instances((r["height"], r["width"]))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in r["annotations"]]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in r["annotations"]], dtype=torch.long)
        polys = PolygonMasks([a["segmentation"] for a in r["annotations"]])
        inst.pred_masks = BitMasks.from_polygon_masks(polys, r["height"], r["width"]).tensor
        outputs.append({"instances": inst})
    return outputs


def test_lvis_evaluator_perfect_predictions(toy_env, tmp_path):
    records = DatasetCatalog.get("tiny_toy_val")
    ev = LVISEvaluator("tiny_toy_val", output_dir=str(tmp_path), max_dets_per_image=300)
    ev.reset()
    ev.process([{"image_id": r["image_id"]} for r in records], _perfect_outputs(records))
    res = ev.evaluate()
    for task in ("bbox", "segm"):
        assert res[task]["AP"] == pytest.approx(100.0)
        assert {"APr", "APc", "APf"} <= set(res[task])


def test_coco_ov_evaluator_reports_novel_base_all(toy_env, tmp_path):
    data = json.loads((toy_env / TOY_PREFIX / SPLIT_FILES["val"]).read_text())
    for a in data["annotations"]:
        a["iscrowd"] = 0  # COCO format
    coco_json = tmp_path / "coco.json"
    coco_json.write_text(json.dumps(data))
    register_ov_lvis_instances("tiny_toy_val_coco", str(coco_json), str(toy_env / TOY_PREFIX / "images"), fmt="coco")
    records = DatasetCatalog.get("tiny_toy_val_coco")
    ev = ViLDTrainer.build_evaluator(_cfg_stub(tmp_path), "tiny_toy_val_coco")
    assert isinstance(ev, OVCOCOEvaluator)
    ev.reset()
    ev.process([{"image_id": r["image_id"]} for r in records], _perfect_outputs(records))
    res = ev.evaluate()["bbox"]
    assert res["AP50_novel"] == pytest.approx(100.0) and res["AP50_base"] == pytest.approx(100.0)
    assert res["AP50_all"] == pytest.approx(100.0)


def _cfg_stub(tmp_path):
    from detectron2.config import get_cfg

    from vild_d2 import add_vild_config

    cfg = get_cfg()
    add_vild_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    return cfg


def test_instant_train_eval_then_eval_only_reproduces(toy_env, instant_run, tmp_path):
    run, log = instant_run
    assert "ViLD evaluation summary" in log and "APr" in log
    results = json.loads((run / "eval_results.json").read_text())
    assert {"AP", "APr", "APc", "APf"} <= set(results[f"{TOY_PREFIX}_val"]["segm"])
    train_net(toy_env, tmp_path / "eval", "--eval-only", "MODEL.WEIGHTS", str(run / "model_final.pth"))
    again = json.loads((tmp_path / "eval/eval_results.json").read_text())
    # four iterations may detect nothing on some CPUs: then both runs report NaN
    split = f"{TOY_PREFIX}_val"
    assert again[split]["bbox"]["AP"] == pytest.approx(results[split]["bbox"]["AP"], abs=1e-6, nan_ok=True)


def test_model_that_detects_nothing_keeps_mask_rows(toy_env, tmp_path):
    cfg = _cfg_stub(tmp_path)
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.VILD.LVIS_EVALUATOR = "lvis"  # the metric of record; the default is faster-coco-eval's LVIS mode
    assert type(ViLDTrainer.build_evaluator(cfg, "tiny_toy_val")) is LVISEvaluator
    cfg.MODEL.VILD.LVIS_EVALUATOR = "faster-coco-eval"
    ev = ViLDTrainer.build_evaluator(cfg, "tiny_toy_val")
    assert isinstance(ev, LVISFastEvaluator)
    records = DatasetCatalog.get("tiny_toy_val")
    ev.reset()
    empty = [{"instances": Instances((r["height"], r["width"]), pred_boxes=Boxes(torch.zeros(0, 4)),
                                     scores=torch.zeros(0), pred_classes=torch.zeros(0, dtype=torch.long),
                                     pred_masks=torch.zeros(0, r["height"], r["width"]))} for r in records]
    ev.process([{"image_id": r["image_id"]} for r in records], empty)
    res = ev.evaluate()
    assert set(res) == {"bbox", "segm"} and math.isnan(res["segm"]["APr"])


def test_two_process_gloo_train_net(toy_env, tmp_path):
    log = train_net(toy_env, tmp_path / "ddp", "--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "2")
    assert "ViLD evaluation summary" in log
    assert (tmp_path / "ddp/eval_results.json").is_file() and (tmp_path / "ddp/model_final.pth").is_file()


def test_prepare_lvis_base_split_file(toy_env, tmp_path):
    from vild_d2.data.lvis_ov import write_base_split

    src = toy_env / TOY_PREFIX / SPLIT_FILES["train_full"]
    stats = write_base_split(str(src), str(tmp_path / "base.json"))
    full, base = json.loads(src.read_text()), json.loads((tmp_path / "base.json").read_text())
    rare = {c["id"] for c in full["categories"] if c["frequency"] == "r"}
    assert base["images"] == full["images"] and base["categories"] == full["categories"]
    assert base["annotations"] == [a for a in full["annotations"] if a["category_id"] not in rare]
    assert stats["dropped"] == len(full["annotations"]) - len(base["annotations"]) > 0


def test_optimizer_choice():
    from detectron2.config import get_cfg

    from vild_d2 import add_vild_config

    cfg = get_cfg()
    add_vild_config(cfg)
    model = torch.nn.Linear(3, 2)
    assert isinstance(ViLDTrainer.build_optimizer(cfg, model), torch.optim.SGD)
    cfg.MODEL.VILD.OPTIMIZER = "AdamW"
    opt = ViLDTrainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == cfg.SOLVER.BASE_LR
    assert opt.defaults["fused"]  # one kernel over all tensors (benchmarks/README.md: step time)
    cfg.MODEL.VILD.OPTIMIZER = "adam"
    with pytest.raises(ValueError, match="MODEL.VILD.OPTIMIZER"):
        ViLDTrainer.build_optimizer(cfg, model)
