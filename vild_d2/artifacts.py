"""Files the project writes and reads back, handled one way everywhere.

* :func:`atomic_path` / :func:`write_json` / :func:`write_text`: an artifact is written under a
  temporary name in its own folder and renamed into place, so a reader (or a rerun after
  ``kill -9``) sees the old file or the whole new one, never half of one.
* :func:`seal` / :func:`verify_file`: large binary artifacts (checkpoints, teachers) get a
  ``<name>.sha256`` sidecar written after their rename; the file is trusted only when its size
  and checksum match it.
* :func:`cache_key` names cached stages by a hash of their inputs; :func:`file_sha256` hashes files.
* :func:`restricted_unpickle`: reads Detectron2's pickle formats (weights, proposals) without
  running code: only arrays, numbers, strings and containers are rebuilt.
"""
import contextlib
import hashlib
import json
import logging
import os
import pickle
import socket
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Union

__all__ = ["atomic_path", "write_json", "write_text", "read_json", "json_errors_named", "file_sha256", "cached_file_sha256", "cache_key",
           "seal", "verify_file", "is_sealed", "restricted_unpickle", "CorruptArtifactError", "UnsafePickleError"]

PathLike = Union[str, os.PathLike]
logger = logging.getLogger(__name__)


class CorruptArtifactError(RuntimeError):
    """A file the project wrote is incomplete or altered (it fails its size, checksum or parse)."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asks to build something other than plain data (arrays, numbers, strings, containers)."""


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed to ``path`` when the block ends
    without error, removed otherwise. Writers that append a suffix (``np.save``) get a name that
    already ends with ``path``'s suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # host and pid: processes of several machines on a shared filesystem can have the same pid
    tmp = path.with_name(f".{path.stem}.tmp-{socket.gethostname()}-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: PathLike, data, indent: int = 1, sort_keys: bool = False) -> Path:
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys))


@contextlib.contextmanager
def json_errors_named(path: PathLike, what: str = "file") -> Iterator[None]:
    """Turn a JSON parse error inside the block (from any reader of ``path``) into one that names the file."""
    try:
        yield
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptArtifactError(f"{what} {path} is not valid JSON ({e}): it is truncated or not the file "
                                   "expected; restore or rebuild it") from e


def read_json(path: PathLike, what: str = "file"):
    """Parse a JSON file; a truncated or garbled one raises an error that names it."""
    with json_errors_named(path, what):
        return json.loads(Path(path).read_text())


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=16)
def _sha256_of_version(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def cached_file_sha256(path: PathLike) -> str:
    """:func:`file_sha256`, computed once per version (path, size, mtime) of the file per process."""
    st = os.stat(path)
    return _sha256_of_version(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def cache_key(*parts, length: int = 10) -> str:
    """A short stable hash of JSON-able parts (names of cached artifacts and stage folders)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:length]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def seal(path: PathLike) -> None:
    """Record the size and checksum of a finished file in ``<name>.sha256``."""
    path = Path(path)
    write_json(_sidecar(path), {"sha256": cached_file_sha256(path), "size": path.stat().st_size})


def is_sealed(path: PathLike) -> bool:
    return _sidecar(Path(path)).is_file()


def verify_file(path: PathLike, what: str = "file", recover: str = "delete it and rerun the command that made it") -> None:
    """Raise :class:`CorruptArtifactError` unless ``path`` exists and matches its sidecar (when it
    has one); JSON files must also parse."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    side = _sidecar(path)
    if side.is_file():
        want = read_json(side, "checksum file")
        size = path.stat().st_size
        # hashed once per version of the file in a process (a stage check, then its load)
        if size != want.get("size") or cached_file_sha256(path) != want.get("sha256"):
            raise CorruptArtifactError(f"{what} {path} is incomplete or altered ({size} bytes; its {side.name} "
                                       f"records {want.get('size')}): {recover}")
    if path.suffix == ".json":
        read_json(path, what)


_PLAIN_DATA = {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("detectron2.structures.boxes", "BoxMode"),  # an IntEnum: rebuilt from its int value
}


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PLAIN_DATA:
            raise UnsafePickleError(f"it asks to build {module}.{name}")
        return super().find_class(module, name)


def restricted_unpickle(path: PathLike, encoding: str = "latin1"):
    """Read a pickle of plain data (dicts, lists, numpy arrays, numbers, strings): Detectron2's
    weights and proposal files. Anything else (a class, a function call) is refused, so a crafted
    file cannot run code."""
    try:
        with open(path, "rb") as f:
            return _PlainDataUnpickler(f, encoding=encoding).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path} is not a plain-data pickle ({e}); it was not loaded, since loading it could "
                                "run code. Convert it to a safe format (.pth state dict, or .npz proposals)") from None
