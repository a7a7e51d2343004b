"""CLIP text classifiers: prompt-ensembled class embeddings for any vocabulary, cached and checked.

Embedding of class k = normalise(mean over its (synonym, template) texts of normalise(CLIP
text embedding)). Files: ``NAME.npy`` (K x D float32) plus ``NAME.json`` (class names in
order, CLIP identity, template hash, D, creation time). Shapes: K classes, T texts, D dim.
"""
import datetime
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .artifacts import atomic_path, cache_key, read_json, write_json
from .clip_model import check_clip_spec, clip_identity, load_clip
from .locking import exclusive
from .progress import progress
from .vocabularies import load_vocabulary

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATES = Path(__file__).with_name("data") / "prompt_templates.txt"

__all__ = ["clean_class_name", "read_templates", "encode_classes", "save_text_classifier", "load_text_classifier",
           "cached_text_classifier", "text_classifier_path", "ClassifierMismatchError"]


class ClassifierMismatchError(ValueError):
    """A text-classifier file does not match the dataset or model it is used with."""


def clean_class_name(name: str) -> str:
    """LVIS-style name to prompt text: ``"bow_(weapon)"`` -> ``"bow, a type of weapon"``."""
    name = name.replace("_", " ").strip()
    m = re.fullmatch(r"(.*?)\s*\((.+)\)", name)
    if m:
        name = f"{m.group(1)}, a type of {m.group(2)}"
    return " ".join(name.split())


def read_templates(path=None) -> List[str]:
    lines = Path(path or DEFAULT_TEMPLATES).read_text().splitlines()
    templates = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise ValueError(f"{path or DEFAULT_TEMPLATES}: every template needs exactly one '{{}}'; bad: {bad[:3]}")
    return templates


@torch.no_grad()
def encode_classes(model, synonyms: Sequence[Sequence[str]], templates: Sequence[str],
                   batch_size: Optional[int] = None, use_synonyms: bool = True, trim: bool = True) -> np.ndarray:
    """K x D float32 prompt-ensembled embeddings (fp16 on GPU, fp32 on CPU).

    With ``trim``, texts are sorted by token length and each batch is cut after its longest
    end-of-text token: CLIP's text transformer is causal and reads the EOT position, so the
    padding after it never changes the result and need not be computed.
    """
    import clip

    texts, owner = [], []
    for k, syns in enumerate(synonyms):
        for syn in (syns if use_synonyms else syns[:1]):
            texts += [t.format(clean_class_name(syn)) for t in templates]
            owner += [k] * len(templates)
    device = next(model.parameters()).device
    # batch sizes from benchmarks/bench_text_classifier.py (benchmarks/README.md)
    batch_size = batch_size or (256 if device.type == "cuda" else 64)
    tokens = clip.tokenize(texts, context_length=model.context_length, truncate=True)  # T x L
    eot = tokens.argmax(-1)  # the EOT token has the largest id
    order = torch.argsort(eot, stable=True) if trim else torch.arange(len(texts))
    owner_t = torch.tensor(owner)[order].to(device)
    sums = torch.zeros(len(synonyms), model.text_projection.shape[1], device=device)
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for start in progress(range(0, len(texts), batch_size), desc="text embeddings", unit="batch"):
        idx = order[start:start + batch_size]
        length = int(eot[idx].max()) + 1 if trim else tokens.shape[1]
        with amp:
            emb = F.normalize(model.encode_text(tokens[idx, :length].to(device)).float(), dim=-1)  # B x D
        sums.index_add_(0, owner_t[start:start + batch_size], emb)
    return F.normalize(sums, dim=-1).cpu().numpy().astype(np.float32)


def _templates_hash(templates: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(templates).encode()).hexdigest()[:16]


def save_text_classifier(path, embeddings: np.ndarray, names: Sequence[str], meta: Dict) -> Path:
    """Write ``path`` (.npy) and its JSON sidecar atomically."""
    path = Path(path).with_suffix(".npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = dict(meta, class_names=list(names), num_classes=len(names), dim=int(embeddings.shape[1]),
                   created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    write_json(path.with_suffix(".json"), sidecar)
    with atomic_path(path) as tmp:
        np.save(tmp, embeddings.astype(np.float32))
    return path


def load_text_classifier(path, expected_names: Optional[Sequence[str]] = None, expected_dim: Optional[int] = None,
                         expected_clip: Optional[str] = None, config_key: str = "the classifier file",
                         allow_without_sidecar: bool = False):
    """Load (K x D tensor, class names) and check it against the dataset / model it serves.

    Every mismatch raises :class:`ClassifierMismatchError` naming both sides. A file without its
    JSON sidecar (class names, CLIP) cannot be checked and is refused unless ``allow_without_sidecar``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{config_key}: text classifier {path} not found "
                                "(build it with tools/build_text_classifier.py)")
    where = f"{config_key} ({path})"
    try:
        emb = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ClassifierMismatchError(f"{where} is not a readable .npy array ({e}): rebuild it with "
                                      "tools/build_text_classifier.py") from e
    side = path.with_suffix(".json")
    if not side.is_file() and not allow_without_sidecar:
        raise ClassifierMismatchError(
            f"{where} has no {side.name} sidecar, so its class order and CLIP cannot be checked: build it with "
            "tools/build_text_classifier.py, or set MODEL.VILD.ALLOW_CLASSIFIER_WITHOUT_SIDECAR True if you "
            "are sure its rows follow the dataset's class order")
    meta = read_json(side, "text classifier sidecar") if side.is_file() else {}
    names = meta.get("class_names")
    if emb.ndim != 2:
        raise ClassifierMismatchError(f"{where}: expected a K x D array, got shape {emb.shape}")
    if names is not None and len(names) != len(emb):
        raise ClassifierMismatchError(f"{where}: sidecar lists {len(names)} classes, array has {len(emb)}")
    if expected_names is not None:
        if len(expected_names) != len(emb):
            raise ClassifierMismatchError(
                f"{where} has {len(emb)} classes but the dataset has {len(expected_names)}: rebuild it for "
                "this dataset's vocabulary")
        if names is not None and list(names) != list(expected_names):
            diff = next(i for i, (a, b) in enumerate(zip(names, expected_names)) if a != b)
            raise ClassifierMismatchError(
                f"{where}: class {diff} is {names[diff]!r} in the file but {expected_names[diff]!r} in the "
                "dataset: rebuild it for this dataset's vocabulary")
    if expected_dim is not None and emb.shape[1] != expected_dim:
        raise ClassifierMismatchError(f"{where} has D={emb.shape[1]} but the model expects D={expected_dim}")
    if expected_clip is not None and meta.get("clip") not in (None, expected_clip):
        if expected_clip.startswith("name:") and meta["clip"].startswith("sha256:"):
            check_clip_spec(expected_clip[len("name:"):])  # a checkpoint path that is missing: say so
        raise ClassifierMismatchError(f"{where} was built with CLIP {meta['clip']} but the config uses "
                                      f"{expected_clip}: rebuild it with MODEL.VILD.CLIP_MODEL")
    if not meta:
        logger.warning("%s has no JSON sidecar: class order cannot be checked", where)
    return torch.from_numpy(emb), (list(names) if names is not None else None)


def _request(cache_dir, vocabulary: str, clip_spec: str, templates_file=None, use_synonyms: bool = True):
    """The classifier file of a vocabulary under a CLIP and templates, and what building it needs."""
    names, synonyms = load_vocabulary(vocabulary)
    templates = read_templates(templates_file)
    ident = clip_identity(clip_spec)
    meta = {"clip": ident, "clip_model": clip_spec, "templates_hash": _templates_hash(templates),
            "num_templates": len(templates), "use_synonyms": use_synonyms}
    key = cache_key(names, synonyms if use_synonyms else None, ident, meta["templates_hash"], length=12)
    label = Path(vocabulary).stem if os.path.isfile(vocabulary) else vocabulary
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:40]
    path = Path(cache_dir) / f"{stem}_{key}.npy"
    return path, names, synonyms, templates, meta


def text_classifier_path(cache_dir, vocabulary: str, clip_spec: str, templates_file=None,
                         use_synonyms: bool = True) -> Path:
    """Where :func:`cached_text_classifier` keeps the classifier of ``vocabulary`` (built or not)."""
    return _request(cache_dir, vocabulary, clip_spec, templates_file, use_synonyms)[0]


def cached_text_classifier(cache_dir, vocabulary: str, clip_spec: str, templates_file=None,
                           use_synonyms: bool = True, batch_size: Optional[int] = None, device: str = "cpu") -> Path:
    """Path of the classifier of ``vocabulary`` under ``clip_spec``; built only when missing."""
    path, names, synonyms, templates, meta = _request(cache_dir, vocabulary, clip_spec, templates_file, use_synonyms)
    # one builder per file; a second job waits for it and then reuses its result
    with exclusive(path.parent, "text classifier build", name=f".{path.stem}.lock", wait=True):
        if path.is_file() and path.with_suffix(".json").is_file():
            logger.info("text classifier cached: %s", path)
            return path
        logger.info("building text classifier for %d classes x %d templates with CLIP %s", len(names),
                    len(templates), clip_spec)
        # CLIP's constructor draws its (then overwritten) initial weights: keep the caller's random
        # state, so that a training that builds its classifiers equals one that finds them cached
        with torch.random.fork_rng(devices=[]):
            model = load_clip(clip_spec, device)
        emb = encode_classes(model, synonyms, templates, batch_size=batch_size, use_synonyms=use_synonyms)
        return save_text_classifier(path, emb, names, meta)
