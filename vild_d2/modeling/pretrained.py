"""Conventions of Detectron2's known ImageNet backbone weights, and a check that a config fits them.

A ResNet checkpoint loads by tensor name and shape only, so weights trained with the stride in the
other convolution, on images in the other channel order or scale, or with a normalisation the
config does not build, load without a warning into a network that computes something else.
:func:`check_backbone_init` refuses such a config before training; weights it does not know (a
trained ``.pth``, an empty ``MODEL.WEIGHTS``) pass.

A weight file is recognised by a known path suffix, matched at a folder boundary, after
``detectron2://`` and ``catalog://`` names are resolved to their download address: the URL, the
iopath download cache and a local copy under ``.../ImageNetPretrained/...`` are all recognised.
Two files are both named ``ImageNetPretrained/MSRA/R-50.pkl``: Detectron2's conversion (under
``detectron2/``, BN statistics kept) and Detectron's (under ``detectron/``, reached through
``catalog://``, BN fused into a per-channel affine). A copy under neither folder is taken for
Detectron2's, the file that ``detectron2://`` names.

Evidence, in the installed detectron2 wheel unless a repository file is named:

* ``config/defaults.py:42-46``: ``PIXEL_MEAN`` is BGR [103.530, 116.280, 123.675]; "When using
  pre-trained models in Detectron1 or any MSRA models, std has been absorbed into its conv1
  weights, so the std needs to be set 1"; ``:84`` ``INPUT.FORMAT`` "BGR"; ``:499``
  ``STRIDE_IN_1X1`` True (the MSRA convention).
* ``checkpoint/catalog.py:14-20`` (the ``catalog://`` models): "MSRA models have STRIDE_IN_1X1=True.
  False otherwise"; "all BN models here have fused BN into an affine layer ... you should only load
  them to a model with FrozenBN. Loading them to a model with regular BN or SyncBN is wrong";
  "all models here uses PIXEL_STD=[1,1,1]". ``:24-30``: their file names.
* facebookresearch/detectron2 ``MODEL_ZOO.md``, "ImageNet Pretrained Models": the ``detectron2://``
  R-50, R-101 (MSRA) and X-101-32x8d (FAIR) copies "have different format from those provided in
  Detectron: we do not fuse BatchNorm into an affine layer" (loading logs show
  ``norm.running_mean loaded from res2_0_branch2a_bn_running_mean``; ``c2_model_loading.py:31-34``).
  ``model_zoo/configs/Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml:3-10``: that MSRA R-50 with SyncBN
  and STRIDE_IN_1X1 True.
* ``model_zoo/configs/COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml:4-10``: FAIR
  X-101-32x8d: PIXEL_STD [57.375, 57.120, 58.395], STRIDE_IN_1X1 False, 32 groups x 8.
* facebookresearch/detectron2 ``tools/convert-torchvision-to-d2.py`` docstring: converted
  torchvision ResNets need PIXEL_MEAN [123.675, 116.280, 103.530], PIXEL_STD [58.395, 57.120,
  57.375], STRIDE_IN_1X1 False, INPUT.FORMAT "RGB"; ``model_zoo/configs/common/data/constants.py:2-3``
  gives the same RGB mean/std. Torchvision's ResNets are BatchNorm networks: statistics kept.
* ``model_zoo/configs/Misc/mask_rcnn_R_50_FPN_3x_gn.yaml:3-10`` and
  ``Misc/panoptic_fpn_R_101_dconv_cascade_gn_3x.yaml:6-13``: FAIR R-50-GN / R-101-GN with NORM GN,
  STRIDE_IN_1X1 False, the default BGR mean and std 1;
  ``Misc/cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.yaml:4-9``: X-152-32x8d-IN5k with
  STRIDE_IN_1X1 False and std 1.
"""
import functools
import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from detectron2.checkpoint.catalog import ModelCatalog
from detectron2.utils.file_io import Detectron2Handler

__all__ = ["PretrainedConvention", "PRETRAINED_BACKBONES", "find_convention", "check_backbone_init"]

BGR_MEAN = (103.530, 116.280, 123.675)
RGB_MEAN = (123.675, 116.280, 103.530)
BGR_STD = (57.375, 57.120, 58.395)
RGB_STD = (58.395, 57.120, 57.375)
UNIT_STD = (1.0, 1.0, 1.0)
# Every BatchNorm flavour of detectron2.layers.get_norm: weights with running statistics fit them all
# (FrozenBN computes eval-mode BN from the same tensors).
BN_STATISTICS = ("FrozenBN", "BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N")
FUSED_AFFINE = ("FrozenBN",)  # BN folded into scale and bias: nothing to normalise a batch with
GROUP_NORM = ("GN",)


@dataclass(frozen=True)
class PretrainedConvention:
    """How a known weight file expects the network to be built and fed. ``norms``: the values of
    ``MODEL.RESNETS.NORM`` its normalisation layers fit."""
    name: str
    suffixes: Tuple[str, ...]  # path endings that identify the file (the longest match wins)
    stride_in_1x1: bool
    input_format: str
    pixel_mean: Tuple[float, float, float]
    pixel_std: Tuple[float, float, float]
    norms: Tuple[str, ...]
    depth: int
    num_groups: int = 1
    width_per_group: int = 64

    def expected(self) -> Dict[str, object]:
        """Config key -> value the weights need (``MODEL.RESNETS.NORM``: the tuple of values that fit)."""
        return {"MODEL.RESNETS.DEPTH": self.depth, "MODEL.RESNETS.NUM_GROUPS": self.num_groups,
                "MODEL.RESNETS.WIDTH_PER_GROUP": self.width_per_group,
                "MODEL.RESNETS.STRIDE_IN_1X1": self.stride_in_1x1, "MODEL.RESNETS.NORM": self.norms,
                "INPUT.FORMAT": self.input_format, "MODEL.PIXEL_MEAN": list(self.pixel_mean),
                "MODEL.PIXEL_STD": list(self.pixel_std)}


def _detectron2_copy(name: str, file: str, **conventions) -> PretrainedConvention:
    """A file of Detectron2's model zoo (``detectron2://ImageNetPretrained/<file>``), also
    recognised as a bare ``ImageNetPretrained/<file>`` under any folder."""
    return PretrainedConvention(name, (f"detectron2/ImageNetPretrained/{file}", f"ImageNetPretrained/{file}"),
                                **conventions)


def _detectron_copy(name: str, file: str, **conventions) -> PretrainedConvention:
    """A file of Detectron's model zoo, reached through ``catalog://`` (checkpoint/catalog.py)."""
    suffixes = (f"detectron/ImageNetPretrained/{file}",)
    if not file.startswith("MSRA/"):  # a bare MSRA/R-50.pkl is taken for Detectron2's copy
        suffixes += (f"ImageNetPretrained/{file}",)
    return PretrainedConvention(name, suffixes, **conventions)


_MSRA = dict(stride_in_1x1=True, input_format="BGR", pixel_mean=BGR_MEAN, pixel_std=UNIT_STD)
_C2 = dict(stride_in_1x1=False, input_format="BGR", pixel_mean=BGR_MEAN, pixel_std=UNIT_STD)

PRETRAINED_BACKBONES: Tuple[PretrainedConvention, ...] = (
    _detectron2_copy("MSRA ResNet-50 (Detectron2's conversion, BN statistics kept)", "MSRA/R-50.pkl",
                     norms=BN_STATISTICS, depth=50, **_MSRA),
    _detectron2_copy("MSRA ResNet-101 (Detectron2's conversion, BN statistics kept)", "MSRA/R-101.pkl",
                     norms=BN_STATISTICS, depth=101, **_MSRA),
    _detectron2_copy("FAIR ResNeXt-101-32x8d (Detectron2's conversion, BN statistics kept)", "FAIR/X-101-32x8d.pkl",
                     stride_in_1x1=False, input_format="BGR", pixel_mean=BGR_MEAN, pixel_std=BGR_STD,
                     norms=BN_STATISTICS, depth=101, num_groups=32, width_per_group=8),
    _detectron2_copy("torchvision ResNet-50 (tools/convert-torchvision-to-d2.py)", "torchvision/R-50.pkl",
                     stride_in_1x1=False, input_format="RGB", pixel_mean=RGB_MEAN, pixel_std=RGB_STD,
                     norms=BN_STATISTICS, depth=50),
    _detectron_copy("MSRA ResNet-50 (Detectron's copy, BN fused into an affine)", "MSRA/R-50.pkl",
                    norms=FUSED_AFFINE, depth=50, **_MSRA),
    _detectron_copy("MSRA ResNet-101 (Detectron's copy, BN fused into an affine)", "MSRA/R-101.pkl",
                    norms=FUSED_AFFINE, depth=101, **_MSRA),
    _detectron_copy("FAIR ResNet-50-GN", "47261647/R-50-GN.pkl", norms=GROUP_NORM, depth=50, **_C2),
    _detectron_copy("FAIR ResNet-101-GN", "47592356/R-101-GN.pkl", norms=GROUP_NORM, depth=101, **_C2),
    _detectron_copy("FAIR ResNeXt-101-32x8d (Detectron's copy, BN fused into an affine)", "20171220/X-101-32x8d.pkl",
                    norms=FUSED_AFFINE, depth=101, num_groups=32, width_per_group=8, **_C2),
    _detectron_copy("FAIR ResNeXt-101-64x4d (BN fused into an affine)", "FBResNeXt/X-101-64x4d.pkl",
                    norms=FUSED_AFFINE, depth=101, num_groups=64, width_per_group=4, **_C2),
    _detectron_copy("FAIR ResNeXt-152-32x8d ImageNet-5k (BN fused into an affine)", "25093814/X-152-32x8d-IN5k.pkl",
                    norms=FUSED_AFFINE, depth=152, num_groups=32, width_per_group=8, **_C2),
)


def _resolve(weights: str) -> str:
    """``weights`` with Detectron2's name prefixes replaced by the address they download from."""
    path = weights.strip().replace("\\", "/")
    if path.startswith(Detectron2Handler.PREFIX):
        return Detectron2Handler.S3_DETECTRON2_PREFIX + path[len(Detectron2Handler.PREFIX):]
    if path.startswith("catalog://"):
        try:
            return ModelCatalog.get(path[len("catalog://"):])
        except (KeyError, RuntimeError):  # not a catalog name: Detectron2 refuses it when loading
            return path
    return path


def find_convention(weights: str) -> Optional[PretrainedConvention]:
    """The table entry of ``weights`` (a ``MODEL.WEIGHTS`` value), or None for an unknown file.
    The longest suffix that ends the path at a folder boundary decides."""
    path = _resolve(weights)
    best, best_len = None, 0
    for convention in PRETRAINED_BACKBONES:
        for suffix in convention.suffixes:
            if (path == suffix or path.endswith("/" + suffix)) and len(suffix) > best_len:
                best, best_len = convention, len(suffix)
    return best


def _differs(key: str, have: object, need: object) -> bool:
    if key == "MODEL.RESNETS.NORM":
        return have not in need
    if isinstance(need, list):
        return len(have) != len(need) or not all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(have, need))
    return have != need


def _value(cfg, key: str) -> object:
    value = functools.reduce(getattr, key.split("."), cfg)
    return list(value) if isinstance(value, (list, tuple)) else value


def check_backbone_init(cfg) -> None:
    """Raise ValueError when ``MODEL.WEIGHTS`` is a known ImageNet backbone (:data:`PRETRAINED_BACKBONES`)
    and the config builds or feeds the network another way; name each key and the value to set."""
    convention = find_convention(cfg.MODEL.WEIGHTS or "")
    if convention is None:
        return
    wrong: Sequence[Tuple[str, object, object]] = [
        (key, _value(cfg, key), need) for key, need in convention.expected().items()
        if _differs(key, _value(cfg, key), need)]
    if not wrong:
        return
    lines = [f"{key} is {have!r}; set " + (f"one of {list(need)}" if key == "MODEL.RESNETS.NORM" else f"{need!r}")
             for key, have, need in wrong]
    raise ValueError(
        f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r} is {convention.name}, which the config does not fit "
        f"(the weights would load without a warning into a network that computes something else):\n  "
        + "\n  ".join(lines) + "\nSet these keys, or name weights made for this config "
        "(vild_d2/modeling/pretrained.py lists the known files and their conventions).")
