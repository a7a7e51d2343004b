"""On-disk format of the CLIP region-embedding cache: sharded, memory-mapped, checksummed.

Layout of a cache folder::

    manifest.json                 CLIP identity, M, scales, D, dataset, image count, shards + checksums
    shard_00000/                  one folder per shard, renamed into place when complete
        index.npy                 S x 3 int64: image_id, offset, count
        boxes.npy                 P x 4 float32, XYXY_ABS in original image coordinates
        embeds.npy                P x D float16, L2-normalised CLIP embeddings
        scores.npy                P float32 objectness
        checksums.json            sha256 of the four arrays

Shapes: S images in a shard, P regions in a shard (sum of per-image counts <= M), D dim.
Every write goes to a temporary name and is renamed, so a reader never sees half a shard.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils import file_sha256, read_json, write_json

ARRAYS = ("index", "boxes", "embeds", "scores")

__all__ = ["shard_name", "write_shard", "RegionCache", "CorruptCacheError", "CacheMismatchError",
           "write_manifest"]


class CorruptCacheError(RuntimeError):
    """A shard's bytes do not match its checksum, or a shard is missing."""


class CacheMismatchError(ValueError):
    """The cache was built with other settings than the ones asked for."""


def shard_name(k: int) -> str:
    return f"shard_{k:05d}"


def write_shard(root, k: int, image_ids: Sequence[int], boxes: List[np.ndarray], embeds: List[np.ndarray],
                scores: List[np.ndarray]) -> Dict[str, str]:
    """Write shard ``k`` atomically (temporary folder + rename); return its checksums."""
    root = Path(root)
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    dim = embeds[0].shape[1] if embeds else 0
    arrays = {
        "index": np.stack([np.asarray(image_ids, dtype=np.int64), offsets, counts], axis=1).reshape(-1, 3),
        "boxes": np.concatenate(boxes).astype(np.float32).reshape(-1, 4) if boxes else np.zeros((0, 4), np.float32),
        "embeds": np.concatenate(embeds).astype(np.float16).reshape(-1, dim) if embeds else np.zeros((0, 0), np.float16),
        "scores": np.concatenate(scores).astype(np.float32).reshape(-1) if scores else np.zeros(0, np.float32),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{shard_name(k)}.tmp-", dir=root))
    try:
        sums = {}
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
            sums[name] = file_sha256(tmp / f"{name}.npy")
        (tmp / "checksums.json").write_text(json.dumps(sums, sort_keys=True))
        os.chmod(tmp, 0o755)
        os.replace(tmp, root / shard_name(k))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return sums


def write_manifest(root, manifest: Dict) -> None:
    write_json(Path(root) / "manifest.json", manifest, sort_keys=True)


class RegionCache:
    """Read-only view of a region cache; arrays are memory-mapped, shards checked on first use.

    ``expected`` keys (``clip``, ``dim``, ``num_proposals``, ``scales``, ``dataset``) are compared
    with the manifest; a difference raises :class:`CacheMismatchError` naming both values.
    """

    def __init__(self, root, expected: Optional[Dict] = None, verify: bool = True):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"no region cache at {self.root} (manifest.json missing): build it with "
                                    "tools/build_region_cache.py, or finish an interrupted build by rerunning it")
        self.manifest = read_json(path, "region cache manifest")
        for key, want in (expected or {}).items():
            have = self.manifest.get(key)
            if want is not None and have != want:
                raise CacheMismatchError(f"region cache {self.root} has {key}={have!r} but {want!r} is expected: "
                                         "rebuild the cache or point MODEL.VILD.REGION_CACHE_DIR to a matching one")
        self.verify = verify
        self._shards: Dict[int, Dict[str, np.ndarray]] = {}
        self._where: Dict[int, Tuple[int, int, int]] = {}
        for k in range(len(self.manifest["shards"])):
            for image_id, offset, count in self._load_index(k):
                self._where[int(image_id)] = (k, int(offset), int(count))

    def _checked(self, k: int, name: str) -> Path:
        folder = self.root / shard_name(k)
        if not folder.is_dir():
            raise CorruptCacheError(f"{folder} is missing: rerun tools/build_region_cache.py to resume the build")
        path = folder / f"{name}.npy"
        if self.verify and file_sha256(path) != self.manifest["shards"][k]["checksums"][name]:
            raise CorruptCacheError(f"{path} fails its checksum: delete {folder} and rerun "
                                    "tools/build_region_cache.py to rebuild that shard")
        return path

    def _load_index(self, k: int) -> np.ndarray:
        return np.load(self._checked(k, "index"))

    def _shard(self, k: int) -> Dict[str, np.ndarray]:
        """Memory-mapped arrays of shard ``k``, checksummed on first use (per process)."""
        if k not in self._shards:
            self._shards[k] = {name: np.load(self._checked(k, name), mmap_mode="r")
                               for name in ("boxes", "embeds", "scores")}
        return self._shards[k]

    def __len__(self) -> int:
        return len(self._where)

    def image_ids(self) -> set:
        return set(self._where)

    def __contains__(self, image_id: int) -> bool:
        return int(image_id) in self._where

    def get(self, image_id: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes M' x 4 float32, embeds M' x D float16, scores M' float32) of one image."""
        if int(image_id) not in self._where:
            raise KeyError(f"image {image_id} has no entry in region cache {self.root}")
        k, offset, count = self._where[int(image_id)]
        shard = self._shard(k)
        sl = slice(offset, offset + count)
        return shard["boxes"][sl], shard["embeds"][sl], shard["scores"][sl]
