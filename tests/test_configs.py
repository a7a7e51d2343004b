"""Every YAML under configs/ loads through vild_d2.config.load_config (get_cfg + add_vild_config + the file)."""
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from vild_d2 import add_vild_config
from vild_d2.engine import load_config
from vild_d2.kit.toy import TOY_PREFIX

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
OVERLAYS = sorted((CONFIG_DIR / "overlays").glob("*.yaml"))  # merged on top of a config, no _BASE_
CONFIGS = sorted(set(CONFIG_DIR.rglob("*.yaml")) - set(OVERLAYS))


def test_configs_exist():
    assert any(p.name == "Base-ViLD-RCNN-FPN.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_config_loads(path):
    cfg = load_config(path, register=False)
    assert cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
    assert cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
@pytest.mark.parametrize("config", ["LVIS-OV/vild_ensemble_R50_FPN.yaml", "LVIS-OV/rpn_R50_FPN.yaml",
                                    "COCO-OV/vild_R50_FPN.yaml"])
def test_overlay_applies_to_the_recipe_configs(config, overlay):
    cfg = load_config(CONFIG_DIR / config, overlays=[overlay])
    assert "_BASE_:" not in overlay.read_text()
    assert cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.RESNETS.NORM == cfg.MODEL.FPN.NORM == "GN"
    assert cfg.MODEL.WEIGHTS == ""


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "toy").rglob("*.yaml")), ids=lambda p: p.name)
def test_toy_configs_name_the_current_toy_world(path):
    # A new toy world changes TOY_PREFIX and these DATASETS together.
    cfg = load_config(path, register=False)
    for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        assert name.startswith(f"{TOY_PREFIX}_"), f"{path.name}: {name} is not a {TOY_PREFIX} dataset"


def test_vild_defaults():
    cfg = get_cfg()
    add_vild_config(cfg)
    v = cfg.MODEL.VILD
    assert (v.TEMPERATURE, v.IMAGE_LOSS_WEIGHT, v.NUM_CACHED_PROPOSALS, v.MODE) == (0.01, 0.5, 300, "vild")
    assert v.ENSEMBLE_WEIGHT == pytest.approx(2 / 3)


def test_stale_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{CONFIG_DIR / "Base-ViLD-RCNN-FPN.yaml"}"\nMODEL:\n  VILD:\n    NO_SUCH_KEY: 1\n')
    cfg = get_cfg()
    add_vild_config(cfg)
    with pytest.raises(KeyError, match="NO_SUCH_KEY"):
        cfg.merge_from_file(str(bad))


def test_odd_overrides_name_the_unquoted_glob():
    opts = ["a/1.png", "a/2.png", "a/3.png", "MODEL.WEIGHTS", "w.pth"]  # what `--verify-images a/*.png` leaves
    with pytest.raises(ValueError, match=r"KEY VALUE pairs, got 5 words.*quote it"):
        load_config(str(CONFIG_DIR / "Base-ViLD-RCNN-FPN.yaml"), opts, register=False)
