"""Random-weight CLIP checkpoints of the real architectures, for rehearsals only.

``save_random_clip`` writes a state_dict that the unmodified ``clip.load(path, jit=False)``
rebuilds as e.g. a ViT-B/32 CLIP, so the LVIS recipe (text classifiers, region cache, ViLD
training) runs on CPU with every tensor at its real size. The weights are random
(``torch.manual_seed(seed)`` then CLIP's own initialisation): this is NOT a real CLIP, and
nothing it names or scores means anything.
"""
import logging
from pathlib import Path
from typing import Dict

import clip
import torch
from clip.model import CLIP

from vild_d2.artifacts import (
    CorruptArtifactError,
    atomic_path,
    check_settings,
    is_sealed,
    seal,
    verify_file,
    write_settings,
)

logger = logging.getLogger(__name__)

__all__ = ["CLIP_ARCHS", "save_random_clip"]

# Constructor arguments of clip.model.CLIP, as clip.model.build_model infers them back from a
# state_dict (it sets text heads = transformer_width // 64 and ViT heads = vision_width // 64).
_TEXT = dict(context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
CLIP_ARCHS: Dict[str, dict] = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                     **_TEXT),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                     **_TEXT),
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, **_TEXT),
}


def _check_loads(path: Path, arch: str, num_params: int) -> None:
    """Raise unless ``clip.load`` rebuilds ``arch`` from ``path``."""
    model, _ = clip.load(str(path), device="cpu", jit=False)
    a = CLIP_ARCHS[arch]
    got = (model.text_projection.shape[1], model.visual.input_resolution, model.context_length,
           sum(p.numel() for p in model.parameters()))
    want = (a["embed_dim"], a["image_resolution"], a["context_length"], num_params)
    if got != want:
        raise RuntimeError(f"clip.load rebuilt {path} as (embed dim, resolution, context length, parameters) "
                           f"{got}, not {arch}'s {want}: CLIP_ARCHS[{arch!r}] disagrees with clip.model.build_model")


def save_random_clip(path, arch: str = "ViT-B/32", seed: int = 0) -> Path:
    """Save a random-weight CLIP of architecture ``arch`` (a key of ``CLIP_ARCHS``) to ``path``.

    The state_dict is stored in float16 (``clip.load`` converts to fp16 and back anyway) under a
    temporary name, checked with ``clip.load``, renamed and sealed (``<name>.sha256``). Its settings
    record ``path.with_suffix(".json")`` holds {"arch", "seed"}. An existing file of these settings
    that matches its seal is kept; one of other settings, or one without a record (a real CLIP?), is
    refused with :class:`~vild_d2.artifacts.SettingsMismatchError`. The same arch and seed give
    byte-identical files (under one torch version), wherever they are written.
    """
    if arch not in CLIP_ARCHS:
        raise ValueError(f"unknown CLIP architecture {arch!r}; choose one of {sorted(CLIP_ARCHS)}")
    path = Path(path)
    record = path.with_suffix(".json")
    if record == path:
        raise ValueError(f"{path}: name the checkpoint with a suffix other than .json (e.g. .pt)")
    settings = {"arch": arch, "seed": seed}
    fix = f"delete {path} and {record.name}, or choose another path"
    if check_settings(record, settings, "a random CLIP", fix, others=[path]) and path.is_file() and is_sealed(path):
        try:
            verify_file(path, "random CLIP")
            logger.info("random %s CLIP already in %s, keeping it", arch, path)
            return path
        except CorruptArtifactError as e:
            logger.warning("%s; writing it again", e)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # CLIP's constructor runs its own initialize_parameters
    model = CLIP(**CLIP_ARCHS[arch])
    num_params = sum(p.numel() for p in model.parameters())
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    del model
    write_settings(record, settings)  # before the file: a file without a record is never one of ours
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: the archive's inner folder is not named after tmp
            torch.save(state, f)
        del state
        _check_loads(tmp, arch, num_params)
    seal(path)
    logger.info("wrote a random %s CLIP (%d parameters, seed %d) to %s", arch, num_params, seed, path)
    return path
