"""On-disk format of the CLIP region-embedding cache: sharded, memory-mapped, sealed.

Layout of a cache folder (format :data:`FORMAT_VERSION`)::

    build.json                    the build's settings (vild_d2.artifacts.check_settings)
    manifest.json                 CLIP identity, M, scales, D, dataset, image count, shards + their seals
    verified.json                 stamp of the last complete verification (sizes and mtimes of its files)
    shard_00000/                  one folder per shard, renamed into place when complete
        index.npy                 S x 3 int64: image_id, offset, count
        boxes.npy                 P x 4 float32, XYXY_ABS in original image coordinates
        embeds.npy                P x D float16, L2-normalised CLIP embeddings
        scores.npy                P float32 objectness
        seals.json                seal records {"sha256", "size"} of the four arrays

Shapes: S images in a shard, P regions in a shard (sum of per-image counts <= M), D dim.
Every write goes to a temporary name and is renamed, so a reader never sees half a shard. Seals
are checked by :mod:`vild_d2.artifacts` (:func:`~vild_d2.artifacts.folder_problems`), as every
sealed file of the project.

:func:`verify_region_cache` checks a whole cache once (every shard's files, checksums and shapes,
shared out among the ranks of a distributed job) and stamps it; readers opened with
``verify=False`` then trust the files without hashing them again.
"""
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.utils import comm

from ..artifacts import (
    CorruptArtifactError,
    SettingsMismatchError,
    folder_problems,
    read_json,
    seal_folder,
    seal_problem,
    write_json,
)

ARRAYS = ("index", "boxes", "embeds", "scores")
STAMP = "verified.json"
# Bumped when the files' layout changes; a cache of another format is refused (rebuild it).
FORMAT_VERSION = 2

__all__ = ["FORMAT_VERSION", "shard_name", "write_shard", "RegionCache", "CorruptCacheError", "write_manifest",
           "read_manifest", "shard_problems", "stamp_matches", "verify_region_cache"]

logger = logging.getLogger(__name__)


class CorruptCacheError(CorruptArtifactError):
    """A shard's file fails its seal, or a shard is missing or inconsistent."""


def shard_name(k: int) -> str:
    return f"shard_{k:05d}"


def repair_hint(folders: Sequence[Path]) -> str:
    """What to do about damaged or missing shard folders."""
    named = ", ".join(str(f) for f in folders[:5]) + (f" (and {len(folders) - 5} more)" if len(folders) > 5 else "")
    return (f"delete {named} and rerun tools/build_region_cache.py (or tools/run_recipe.py), which rebuilds "
            "missing shards")


def write_shard(root, k: int, image_ids: Sequence[int], boxes: List[np.ndarray], embeds: List[np.ndarray],
                scores: List[np.ndarray]) -> Dict[str, dict]:
    """Write shard ``k`` atomically (temporary folder + rename; a damaged folder there is moved
    aside only once the new one is complete); return its seal records ({file name: record})."""
    root = Path(root)
    counts = np.array([len(b) for b in boxes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    dim = embeds[0].shape[1] if embeds else 0
    arrays = {
        "index": np.stack([np.asarray(image_ids, dtype=np.int64), offsets, counts], axis=1).reshape(-1, 3),
        "boxes": np.concatenate(boxes).astype(np.float32).reshape(-1, 4) if boxes else np.zeros((0, 4), np.float32),
        "embeds": (np.concatenate(embeds).astype(np.float16).reshape(-1, dim) if embeds
                   else np.zeros((0, 0), np.float16)),
        "scores": np.concatenate(scores).astype(np.float32).reshape(-1) if scores else np.zeros(0, np.float32),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{shard_name(k)}.tmp-", dir=root))
    old = root / f".{shard_name(k)}.old-{os.getpid()}"
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        seals = seal_folder(tmp, [f"{name}.npy" for name in ARRAYS])
        os.chmod(tmp, 0o755)
        if (root / shard_name(k)).exists():  # a damaged shard being replaced
            os.replace(root / shard_name(k), old)
        os.replace(tmp, root / shard_name(k))
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
    return seals


def write_manifest(root, manifest: Dict) -> None:
    """Write the manifest (its ``shards``: [{"name", "seals"}]), stamped with this :data:`FORMAT_VERSION`."""
    write_json(Path(root) / "manifest.json", dict(manifest, version=FORMAT_VERSION), sort_keys=True)


def read_manifest(root, expected: Optional[Dict] = None) -> Dict:
    """The manifest of the cache in ``root``; its format must be this :data:`FORMAT_VERSION`, and
    ``expected`` keys (``clip``, ``dim``, ``num_proposals``, ``scales``, ``dataset``; None: any)
    must match it, else :class:`~vild_d2.artifacts.SettingsMismatchError` names both values."""
    root = Path(root)
    if not (root / "manifest.json").is_file():
        raise FileNotFoundError(f"no region cache at {root} (manifest.json missing): build it with "
                                "tools/build_region_cache.py, or finish an interrupted build by rerunning it")
    manifest = read_json(root / "manifest.json", "region cache manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise SettingsMismatchError.between(
            root, "a region cache", {"version": manifest.get("version")}, {"version": FORMAT_VERSION},
            f"this vild_d2 reads region caches of format {FORMAT_VERSION} only: delete {root} and rebuild it "
            "(tools/build_region_cache.py, or tools/run_recipe.py)")
    wanted = {k: v for k, v in (expected or {}).items() if v is not None}
    found = {k: manifest.get(k) for k in wanted}
    if found != wanted:
        raise SettingsMismatchError.between(root, "a region cache", found, wanted, "rebuild the cache with these "
                                            "settings, or point MODEL.VILD.REGION_CACHE_DIR to a matching one")
    return manifest


def _shape_problems(folder: Path, dim: Optional[int]) -> List[str]:
    """Shape disagreements between a shard's arrays, its index and the manifest's D."""
    try:
        index, boxes, embeds, scores = (np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS)
    except (OSError, ValueError) as e:
        return [f"arrays unreadable ({e})"]
    out = []
    if index.ndim != 2 or index.shape[1:] != (3,) or index.dtype.kind not in "iu":
        out.append(f"index.npy is {index.dtype} {index.shape}, not S x 3 integers")
    if boxes.ndim != 2 or boxes.shape[1:] != (4,):
        out.append(f"boxes.npy is {boxes.shape}, not P x 4")
    if embeds.ndim != 2 or (len(embeds) and dim is not None and embeds.shape[1] != dim):
        out.append(f"embeds.npy is {embeds.shape}, not P x {dim} (the manifest's dim)")
    lengths = [len(a) if a.ndim else -1 for a in (boxes, embeds, scores)]
    if scores.ndim != 1 or len(set(lengths)) != 1:
        out.append(f"boxes/embeds/scores hold {lengths} regions (scores {scores.shape}): they must agree")
    if not out:
        offsets, counts = np.asarray(index[:, 1]), np.asarray(index[:, 2])
        bad = np.flatnonzero((offsets < 0) | (counts < 0) | (offsets + counts > len(boxes)))
        if len(bad):
            out.append(f"index.npy rows {bad[:3].tolist()} point outside the {len(boxes)} regions")
    return out


def shard_problems(folder, seals: Optional[Dict[str, dict]] = None, dim: Optional[int] = None) -> List[str]:
    """What is wrong with one shard folder, [] when it is whole: the folder or an array missing, an
    array that fails its seal (``seals``: the manifest's records; by default the shard's own
    seals.json), or shapes that disagree (index rows, offsets + counts within P, D equal to ``dim``,
    boxes P x 4). Never raises: the ranks of a job gather every rank's problems."""
    folder = Path(folder)
    names = {f"{name}.npy" for name in ARRAYS}
    if seals is not None and set(seals) != names:
        return [f"the manifest seals {sorted(seals)}, not the arrays {sorted(names)}"]
    problems = folder_problems(folder, seals)
    return problems or _shape_problems(folder, dim)


def _files(root: Path, shards: Sequence[int]) -> Dict[str, List[int]]:
    """{shard/array.npy: [size, mtime_ns]} of the arrays of ``shards`` that exist."""
    out = {}
    for k in shards:
        for name in ARRAYS:
            rel = f"{shard_name(k)}/{name}.npy"
            try:
                st = os.stat(root / rel)
            except FileNotFoundError:
                continue
            out[rel] = [st.st_size, st.st_mtime_ns]
    return out


def _manifest_sha256(root: Path) -> str:
    return hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()


def stamp_matches(root) -> bool:
    """The stamp of a complete verification is there, for this manifest and these very files
    (sizes and mtimes): the cache need not be hashed again."""
    root = Path(root)
    try:
        stamp = read_json(root / STAMP, "region cache verification stamp")
        manifest = read_json(root / "manifest.json", "region cache manifest")
        return (stamp.get("manifest_sha256") == _manifest_sha256(root)
                and stamp.get("files") == _files(root, range(len(manifest["shards"]))))
    except (OSError, CorruptArtifactError, KeyError, TypeError, AttributeError):
        return False


def verify_region_cache(root, rank: Optional[int] = None, world_size: Optional[int] = None,
                        expected: Optional[Dict] = None, accept: Optional[Callable[[], None]] = None) -> List[int]:
    """Verify the whole cache in ``root`` (every shard the manifest lists: :func:`shard_problems`
    against the manifest's checksums), unless a stamp says these files passed already.

    Rank ``rank`` of ``world_size`` (default: this process in the process group) checks shards
    ``k % world_size == rank``; the results are gathered, so every rank raises the same
    :class:`CorruptCacheError` naming each damaged shard, file and fault, and the fix. ``accept``,
    a further check of the verified cache (e.g. that it covers a dataset), runs next; when it
    passes and all shards were checked, rank 0 writes the stamp. Returns the shards this rank
    hashed ([] when the stamp vouched for them)."""
    root = Path(root)
    manifest = read_manifest(root, expected)
    manifest_sha256 = _manifest_sha256(root)  # the stamp names the manifest the files were checked against
    rank = comm.get_rank() if rank is None else rank
    world = comm.get_world_size() if world_size is None else world_size
    num = len(manifest["shards"])
    # world 1 (one process, or one rank asked to check everything alone): no collective call
    gather = (lambda x: [x]) if world == 1 else comm.all_gather
    stamped = all(gather(stamp_matches(root)))  # every rank takes the same branch
    mine: List[int] = []
    gathered: List = []
    if not stamped:
        mine = list(range(rank, num, world))
        files = _files(root, mine)  # before hashing: a file changed meanwhile invalidates the stamp
        problems = [(k, p) for k in mine for p in shard_problems(root / shard_name(k), manifest["shards"][k]
                                                                 .get("seals", {}), manifest.get("dim"))]
        gathered = gather((mine, problems, files))
        problems = sorted(p for _, ps, _ in gathered for p in ps)
        if problems:
            bad = sorted({k for k, _ in problems})
            listed = "; ".join(f"{shard_name(k)}: {p}" for k, p in problems[:10])
            more = f"; ... {len(problems) - 10} more" if len(problems) > 10 else ""
            raise CorruptCacheError(f"region cache {root} fails verification, {len(bad)} of {num} shards damaged: "
                                    f"{listed}{more}. Fix: {repair_hint([root / shard_name(k) for k in bad])}")
    if accept is not None:
        accept()
    if not stamped and rank == 0 and sorted(k for m, _, _ in gathered for k in m) == list(range(num)):
        try:
            write_json(root / STAMP, {"manifest_sha256": manifest_sha256,
                                      "files": {f: s for _, _, fs in gathered for f, s in fs.items()}}, sort_keys=True)
        except OSError as e:
            logger.warning("region cache %s verified, but the stamp could not be written (%s): the next run "
                           "verifies it again", root, e)
    return mine


class RegionCache:
    """Read-only view of a region cache; arrays are memory-mapped. With ``verify`` each shard's
    arrays are checked against their seals on first use (per process); without, the files are
    trusted, as after :func:`verify_region_cache`. A missing or unreadable file raises
    :class:`CorruptCacheError`.

    ``expected``: see :func:`read_manifest`.
    """

    def __init__(self, root, expected: Optional[Dict] = None, verify: bool = True):
        self.root = Path(root)
        self.manifest = read_manifest(self.root, expected)
        self.verify = verify
        self._shards: Dict[int, Dict[str, np.ndarray]] = {}
        self._where: Dict[int, Tuple[int, int, int]] = {}
        for k in range(len(self.manifest["shards"])):
            for image_id, offset, count in self._load(k, "index"):
                self._where[int(image_id)] = (k, int(offset), int(count))

    def __getstate__(self) -> Dict:
        return dict(self.__dict__, _shards={})  # memory maps are opened again in each process

    def _load(self, k: int, name: str, mmap_mode: Optional[str] = None) -> np.ndarray:
        folder = self.root / shard_name(k)
        path = folder / f"{name}.npy"
        if self.verify:
            problem = seal_problem(path, self.manifest["shards"][k]["seals"].get(path.name))
        else:
            problem = None if path.is_file() else "is missing"
        if problem:
            raise CorruptCacheError(f"{path} {problem}: {repair_hint([folder])}")
        try:
            return np.load(path, mmap_mode=mmap_mode)
        except (OSError, ValueError) as e:
            raise CorruptCacheError(f"{path} cannot be read ({e}): {repair_hint([folder])}") from e

    def _shard(self, k: int) -> Dict[str, np.ndarray]:
        """Memory-mapped arrays of shard ``k``, checked against their seals on first use (per process)
        with ``verify``."""
        if k not in self._shards:
            self._shards[k] = {name: self._load(k, name, "r") for name in ("boxes", "embeds", "scores")}
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
