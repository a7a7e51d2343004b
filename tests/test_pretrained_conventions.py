"""Every config's backbone init convention matches the weights it names (vild_d2/modeling/pretrained.py),
and a ViLD model started from the RPN's weights sees images the way the RPN did (check_same_backbone)."""
from pathlib import Path

import pytest
from detectron2 import model_zoo

from vild_d2.config import check_same_backbone
from vild_d2.engine import load_config
from vild_d2.modeling.pretrained import PRETRAINED_BACKBONES, check_backbone_init, find_convention

from .helpers import REPO

CPU_OVERLAY = REPO / "configs/overlays/CPU-rehearsal.yaml"
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "overlays" not in p.parts)
LVIS_BASE = REPO / "configs/LVIS-OV/Base-ViLD-LVIS-R50-FPN.yaml"
MSRA = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
TORCHVISION = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
# The LVIS / COCO bases before the fix: MSRA weights with torchvision's stride and BGR, std 1.
OLD_BASE = ["MODEL.WEIGHTS", MSRA, "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]",
            "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]", "INPUT.FORMAT", "BGR"]


def _name(path: Path) -> str:
    return str(path.relative_to(REPO / "configs"))


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_every_config_fits_its_weights(path):
    assert len(CONFIGS) >= 15
    check_backbone_init(load_config(path, register=False))
    check_backbone_init(load_config(path, overlays=[CPU_OVERLAY], register=False))


@pytest.mark.parametrize("base", ["LVIS-OV/Base-ViLD-LVIS-R50-FPN.yaml", "COCO-OV/Base-ViLD-COCO-R50-FPN.yaml"])
def test_recipe_bases_name_torchvision_weights_with_syncbn(base):
    cfg = load_config(REPO / "configs" / base, register=False)
    assert (cfg.MODEL.WEIGHTS, cfg.INPUT.FORMAT, cfg.MODEL.RESNETS.STRIDE_IN_1X1) == (TORCHVISION, "RGB", False)
    assert (cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD) == ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.DATASETS.VILD.LSJ_IMAGE_SIZE) == ("SyncBN", "SyncBN", 1024)


def test_old_lvis_base_is_refused_naming_the_stride():
    with pytest.raises(ValueError, match="MODEL.RESNETS.STRIDE_IN_1X1 is False; set True") as err:
        check_backbone_init(load_config(LVIS_BASE, opts=OLD_BASE, register=False))
    assert "FORMAT" not in str(err.value) and "PIXEL" not in str(err.value)  # only the stride was wrong
    # MSRA weights named in the new base: every convention that differs is named, with its value
    with pytest.raises(ValueError) as err:
        check_backbone_init(load_config(LVIS_BASE, opts=["MODEL.WEIGHTS", MSRA], register=False))
    for line in ("STRIDE_IN_1X1 is False; set True", "INPUT.FORMAT is 'RGB'; set 'BGR'",
                 "MODEL.PIXEL_MEAN is [123.675, 116.28, 103.53]; set [103.53, 116.28, 123.675]",
                 "MODEL.PIXEL_STD is [58.395, 57.12, 57.375]; set [1.0, 1.0, 1.0]"):
        assert line in str(err.value)
    # Detectron2's own MSRA pairing passes, with SyncBN too (its copy keeps BN statistics)
    check_backbone_init(load_config(LVIS_BASE, opts=[*OLD_BASE, "MODEL.RESNETS.STRIDE_IN_1X1", "True"], register=False))


def test_fused_bn_and_gn_weights_refuse_syncbn():
    msra_ok = [*OLD_BASE, "MODEL.RESNETS.STRIDE_IN_1X1", "True"]
    cfg = lambda *opts: load_config(LVIS_BASE, opts=[*msra_ok, *opts], register=False)  # noqa: E731
    # Detectron's copies (catalog://, or its download cache): BN fused into an affine, FrozenBN only
    for weights in ("catalog://ImageNetPretrained/MSRA/R-50", "/cache/detectron/ImageNetPretrained/MSRA/R-50.pkl"):
        with pytest.raises(ValueError, match=r"MODEL.RESNETS.NORM is 'SyncBN'; set one of \['FrozenBN'\]"):
            check_backbone_init(cfg("MODEL.WEIGHTS", weights))
        check_backbone_init(cfg("MODEL.WEIGHTS", weights, "MODEL.RESNETS.NORM", "FrozenBN"))
    with pytest.raises(ValueError, match=r"MODEL.RESNETS.NORM is 'SyncBN'; set one of \['GN'\]"):
        check_backbone_init(cfg("MODEL.WEIGHTS", "catalog://ImageNetPretrained/FAIR/R-50-GN",
                                "MODEL.RESNETS.STRIDE_IN_1X1", "False"))
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH is 50; set 101"):
        check_backbone_init(cfg("MODEL.WEIGHTS", "/w/ImageNetPretrained/MSRA/R-101.pkl"))


def test_weights_are_recognised_by_suffix_at_a_folder_boundary():
    name = lambda w: getattr(find_convention(w), "name", None)  # noqa: E731
    d2_msra = name(MSRA)
    assert d2_msra.startswith("MSRA ResNet-50 (Detectron2's")
    for copy in ("https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl",
                 "/data/weights/ImageNetPretrained/MSRA/R-50.pkl", "ImageNetPretrained/MSRA/R-50.pkl",
                 "/data/mydetectron/ImageNetPretrained/MSRA/R-50.pkl", "C:\\w\\ImageNetPretrained\\MSRA\\R-50.pkl"):
        assert name(copy) == d2_msra, copy
    assert "fused" in name("https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl")
    assert name("/w/ImageNetPretrained/torchvision/R-50.pkl").startswith("torchvision ResNet-50")
    for unknown in ("", "R-50.pkl", "output/rpn/model_final.pth", "/w/MSRA/R-50.pkl",
                    "/w/XImageNetPretrained/MSRA/R-50.pkl", "catalog://ImageNetPretrained/MSRA/R-999",
                    "detectron2://COCO-InstanceSegmentation/x/model_final.pkl"):
        assert find_convention(unknown) is None, unknown
    assert len({c.name for c in PRETRAINED_BACKBONES}) == len(PRETRAINED_BACKBONES) == 11


def test_detectron2_model_zoo_configs_agree_with_the_table():
    """Every model-zoo YAML of the installed Detectron2 that names known ImageNet weights passes."""
    root = Path(model_zoo.get_config_file("Base-RCNN-FPN.yaml")).parent
    checked = set()
    for path in sorted(root.rglob("*.yaml")):
        if "ImageNetPretrained" not in path.read_text():
            continue
        cfg = load_config(path, register=False)
        if find_convention(cfg.MODEL.WEIGHTS):
            check_backbone_init(cfg)
            checked.add(find_convention(cfg.MODEL.WEIGHTS).name)
    assert len(checked) == 6  # MSRA, FAIR X-101-32x8d (Detectron2), R-50-GN, R-101-GN, X-152


def test_check_same_backbone_compares_how_images_are_fed():
    rpn = load_config(REPO / "configs/LVIS-OV/rpn_R50_FPN.yaml", register=False)
    vild = load_config(REPO / "configs/LVIS-OV/vild_ensemble_R50_FPN.yaml", register=False)
    check_same_backbone(rpn, vild)
    for key, value in (("MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]"), ("MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"),
                       ("INPUT.FORMAT", "BGR")):
        other = vild.clone()
        other.merge_from_list([key, value])
        with pytest.raises(ValueError, match=key):
            check_same_backbone(rpn, other)
