"""CLIP models by name or local file: :func:`load_clip` and :func:`clip_identity` (what every
artifact built with a CLIP records, so that one built with another CLIP is refused). A path may use
``~`` and ``$DETECTRON2_DATASETS`` (:func:`vild_d2.config.expand_path`)."""
import contextlib
import os
import pickle

from .artifacts import cached_file_sha256
from .config import expand_path
from .locking import exclusive

__all__ = ["check_clip_spec", "clip_identity", "load_clip"]


def check_clip_spec(spec: str) -> None:
    import clip

    spec = expand_path(spec)
    if not os.path.isfile(spec) and spec not in clip.available_models():
        raise FileNotFoundError(
            f"MODEL.VILD.CLIP_MODEL {spec!r} is neither a file nor a known name {clip.available_models()}; put "
            "the checkpoint on disk and set the key to its path")


def clip_identity(spec: str) -> str:
    """``name:ViT-B/32`` for a model name (or a path that does not exist yet), ``sha256:...`` for a
    checkpoint file."""
    spec = expand_path(spec)
    if os.path.isfile(spec):
        return "sha256:" + cached_file_sha256(spec)
    return f"name:{spec}"


def load_clip(spec: str, device: str = "cpu"):
    """``clip.load`` of a model name or a local checkpoint (TorchScript or state_dict)."""
    import clip

    spec = expand_path(spec)
    check_clip_spec(spec)
    # A name downloads into ~/.cache/clip on first use, and clip.load writes there in place: the
    # processes of a job (several machines on a shared home too) take turns, so one downloads and
    # the others find the finished file instead of reading or rewriting a half-written one.
    # A cache folder this process cannot write (shared, read-only) can only hold finished files.
    root = os.path.expanduser("~/.cache/clip")
    readonly = os.path.isdir(root) and not os.access(root, os.W_OK)
    turns = contextlib.nullcontext() if os.path.isfile(spec) or readonly else \
        exclusive(root, "CLIP download", name=".vild_clip_download.lock", wait=True)
    try:
        with turns:
            model, _ = clip.load(spec, device=device, jit=False, download_root=root)
    except OSError as e:  # names download on first use
        raise RuntimeError(f"could not load CLIP {spec!r} ({e}); names need a network the first time: "
                           "download the checkpoint elsewhere and give its local path") from e
    except (RuntimeError, ValueError, KeyError, IndexError, AttributeError, pickle.UnpicklingError) as e:
        # clip.load falls back from TorchScript to a state_dict and then infers shapes from its keys
        raise RuntimeError(f"{spec} is not a CLIP checkpoint clip.load can read ({type(e).__name__}: {e}): give "
                           "an OpenAI CLIP .pt file or a state_dict of clip.model.CLIP") from e
    return model.eval()
