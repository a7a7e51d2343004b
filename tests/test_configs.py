"""Every YAML under configs/ loads through get_cfg() + add_vild_config()."""
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from vild_d2 import add_vild_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def test_configs_exist():
    assert any(p.name == "Base-ViLD-RCNN-FPN.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_config_loads(path):
    cfg = get_cfg()
    add_vild_config(cfg)
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
    assert cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK


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
