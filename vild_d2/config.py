"""Configuration namespace of vild_d2: every new key lives under ``MODEL.VILD`` or
``DATASETS.VILD``.

Core Detectron2 keys are reused where they exist: ViLD's class-agnostic box and mask
branches are ``MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG`` and
``MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK``.
"""
import os
from typing import Dict, Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_vild_config", "datasets_root", "expand_path", "vild_defaults", "settings_read", "check_same_backbone",
           "TRAINER_KEYS"]

# MODEL.VILD keys that every model trained by ViLDTrainer reads, a proposal network too; the
# other MODEL.VILD keys configure the ViLD heads, their vocabulary and their teacher only.
TRAINER_KEYS = ("MODEL.VILD.OPTIMIZER", "MODEL.VILD.LVIS_EVALUATOR")


def add_vild_config(cfg: CN) -> None:
    """Add the ViLD keys, with their defaults, to a Detectron2 config (in place)."""
    _C = cfg
    _C.MODEL.VILD = CN()
    # CLIP teacher: a name `clip.load` knows ("ViT-B/32", needs a network the first
    # time) or a local checkpoint file (TorchScript or state_dict).
    _C.MODEL.VILD.CLIP_MODEL = "ViT-B/32"
    # Text embeddings (K x D .npy with JSON sidecar) of the training vocabulary;
    # empty = build from CLIP_MODEL and the training dataset's class names, cached.
    _C.MODEL.VILD.TEXT_EMBEDDINGS = ""
    # Text embeddings of the test vocabulary; empty = build from the test dataset.
    _C.MODEL.VILD.TEST_TEXT_EMBEDDINGS = ""
    # Accept text-embedding files without their JSON sidecar (class names, CLIP identity): their
    # class order cannot be checked against the dataset, so this is off by default.
    _C.MODEL.VILD.ALLOW_CLASSIFIER_WITHOUT_SIDECAR = False
    # Prompt templates of automatically built text classifiers: a file with one "{}" per line;
    # empty = the package's set (vild_d2/data/prompt_templates.txt).
    _C.MODEL.VILD.PROMPT_TEMPLATES = ""
    # Directory where automatically built text classifiers are cached.
    _C.MODEL.VILD.TEXT_CACHE_DIR = "output/text_classifiers"
    # Temperature tau of the cosine-similarity logits (paper: 0.01).
    _C.MODEL.VILD.TEMPERATURE = 0.01
    # Weight of the ViLD-text cross-entropy loss.
    _C.MODEL.VILD.TEXT_LOSS_WEIGHT = 1.0
    # Weight w of the ViLD-image L1 distillation loss (paper: 0.5).
    _C.MODEL.VILD.IMAGE_LOSS_WEIGHT = 0.5
    # lambda of ViLD-ensemble: base classes p_text^l * p_image^(1-l), novel the reverse.
    _C.MODEL.VILD.ENSEMBLE_WEIGHT = 2.0 / 3.0
    # "text" (ViLD-text), "image" (ViLD-image), "vild" (one head, both losses) or
    # "ensemble" (separate text and image heads, geometric-mean scores).
    _C.MODEL.VILD.MODE = "vild"
    # Inference scores: "model" (the MODE's heads); "clip" (CLIP on each proposal's CROP_SCALES
    # crops, geometric mean with the proposal's objectness); "text+clip" (the text head's scores
    # ensembled with CLIP's on the crops by ENSEMBLE_WEIGHT, as ViLD-ensemble). The crop modes run
    # CLIP_MODEL's image tower on every proposal at inference: the paper's analysis rows.
    _C.MODEL.VILD.TEST_SCORES = "model"
    # ViLD-ensemble's image embeddings come from their own box head (the paper); False: one box
    # head with separate text and image projections (a one-branch simplification).
    _C.MODEL.VILD.ENSEMBLE_IMAGE_BOX_HEAD = True
    # Number M of cached CLIP proposals per training image used by ViLD-image.
    _C.MODEL.VILD.NUM_CACHED_PROPOSALS = 300
    # Directory of the offline CLIP region-embedding cache (ViLD-image modes).
    _C.MODEL.VILD.REGION_CACHE_DIR = ""
    # Registered dataset the region cache was built for; empty = DATASETS.TRAIN[0]. Set it when a
    # cache of one dataset serves another with the same images (lvis_v1_train for lvis_v1_train_base).
    _C.MODEL.VILD.REGION_CACHE_DATASET = ""
    # Scales (relative to the proposal box) whose CLIP crop embeddings are combined.
    _C.MODEL.VILD.CROP_SCALES = [1.0, 1.5]
    # Optimizer of the whole detector: "SGD" (Detectron2's, SOLVER.MOMENTUM) or "AdamW"
    # (SOLVER.BASE_LR, SOLVER.WEIGHT_DECAY; for short from-scratch schedules such as the toy world).
    _C.MODEL.VILD.OPTIMIZER = "SGD"
    # Evaluator of LVIS-format datasets: "faster-coco-eval" (its C++ LVIS mode: minutes for the
    # 19,809 LVIS val images, equal to the lvis API to 0.1 AP) or "lvis" (the lvis API itself, the
    # metric of record, pure Python: hours on the full val set).
    _C.MODEL.VILD.LVIS_EVALUATOR = "faster-coco-eval"

    _C.DATASETS.VILD = CN()
    # Contiguous ids (in the test dataset's class order) treated as novel at
    # inference; empty = take them from the dataset metadata (LVIS: rare classes).
    _C.DATASETS.VILD.NOVEL_CLASS_IDS = []
    # Train images missing from the region cache without ViLD-image (counted warning)
    # instead of stopping with an error.
    _C.DATASETS.VILD.SKIP_MISSING_REGIONS = False
    # Keep training images without a usable box but with cached CLIP regions (all their objects
    # novel) when DATALOADER.FILTER_EMPTY_ANNOTATIONS drops empty images: they give ViLD-image loss.
    _C.DATASETS.VILD.KEEP_IMAGES_WITH_REGIONS = True
    # Extra datasets registered by train_net.py: entries [name, json_file, image_root,
    # vocabulary ("all" or "base"), format ("lvis" or "coco")]; the last two optional.
    _C.DATASETS.VILD.REGISTER = []
    # Class names treated as novel in DATASETS.VILD.REGISTER jsons without LVIS frequencies.
    _C.DATASETS.VILD.NOVEL_CLASSES = []
    # Large-scale jitter: output side of the square training crop (0 = off, use INPUT.*).
    _C.DATASETS.VILD.LSJ_IMAGE_SIZE = 0
    # Large-scale jitter: range of the random rescale factor.
    _C.DATASETS.VILD.LSJ_SCALE_RANGE = [0.1, 2.0]


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS``, default ``datasets``: where the built-in datasets are read from."""
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


def expand_path(path: str) -> str:
    """A path of a config (``DATASETS.VILD.REGISTER``, ``MODEL.VILD.CLIP_MODEL``) with ``~`` and
    environment variables expanded;
    ``$DETECTRON2_DATASETS`` stands for :func:`datasets_root` even where the variable is unset."""
    for var in ("${DETECTRON2_DATASETS}", "$DETECTRON2_DATASETS"):
        path = path.replace(var, datasets_root())
    return os.path.expanduser(os.path.expandvars(path))


def vild_defaults() -> CN:
    """Detectron2's default config with the ViLD keys at their defaults."""
    cfg = get_cfg()
    add_vild_config(cfg)
    return cfg


def settings_read(cfg: CN, ignore: Sequence[str] = ()) -> Dict[str, object]:
    """The settings a job on ``cfg`` reads, as a cache key of its output folder: every key whose
    value differs from :func:`vild_defaults`, except ``OUTPUT_DIR`` (the folder itself) and keys
    under the ``ignore`` prefixes (sections the job does not read). A key added to the defaults
    later leaves the settings of existing configs as they were, so their folders are kept; so does a
    default whose value changes in the code: a new version of vild_d2 wants a new output folder."""
    defaults = _flatten(vild_defaults(), "")
    values = _flatten(cfg, "")
    return {k[1:]: v for k, v in sorted(values.items())
            if defaults.get(k, object()) != v and k != ".OUTPUT_DIR" and not k[1:].startswith(tuple(ignore))}


def _flatten(node: CN, prefix: str) -> Dict[str, object]:
    """Every leaf of a config node as ``{"PREFIX.KEY": value}``."""
    out = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}.{key}") if isinstance(value, CN) else {f"{prefix}.{key}": value})
    return out


def check_same_backbone(rpn_cfg, vild_cfg) -> None:
    """The ViLD detector starts from the RPN's weights: a backbone of another shape would load
    only in part (Detectron2 skips mismatched tensors with a warning), and images normalised or
    ordered another way would load silently into a backbone that sees them differently, so refuse
    both up front. Compared: ``MODEL.BACKBONE.NAME``, every key under ``MODEL.RESNETS`` and
    ``MODEL.FPN``, and ``MODEL.PIXEL_MEAN``, ``MODEL.PIXEL_STD``, ``INPUT.FORMAT``."""
    def backbone(cfg):
        return {"MODEL.BACKBONE.NAME": cfg.MODEL.BACKBONE.NAME, **_flatten(cfg.MODEL.RESNETS, "MODEL.RESNETS"),
                **_flatten(cfg.MODEL.FPN, "MODEL.FPN"), "MODEL.PIXEL_MEAN": list(cfg.MODEL.PIXEL_MEAN),
                "MODEL.PIXEL_STD": list(cfg.MODEL.PIXEL_STD), "INPUT.FORMAT": cfg.INPUT.FORMAT}

    rpn, vild = backbone(rpn_cfg), backbone(vild_cfg)
    differ = {k: (rpn.get(k), vild.get(k)) for k in sorted(rpn.keys() | vild.keys()) if rpn.get(k) != vild.get(k)}
    if differ:
        raise ValueError(f"the ViLD config starts from the RPN's weights but their backbones or input conventions "
                         f"differ (RPN, ViLD): {differ}; give both configs the same values for these keys, or set "
                         f"MODEL.WEIGHTS in the ViLD config")
