"""Files the project writes and reads back, handled one way everywhere.

* :func:`atomic_path` / :func:`write_json` / :func:`write_text`: an artifact is written under a
  temporary name in its own folder and renamed into place, so a reader (or a rerun after
  ``kill -9``) sees the old file or the whole new one, never half of one.
* Seals: a file is trusted only when its size and sha256 match its seal record
  ``{"sha256", "size"}``, written after the file is complete. :func:`seal` / :func:`verify_file`
  keep one file's record in a ``<name>.sha256`` sidecar (checkpoints, teachers, random CLIPs);
  :func:`seal_folder` / :func:`folder_problems` / :func:`verify_folder` keep the records of many
  files of a folder in one ``seals.json`` (region cache shards). Both check with
  :func:`seal_problem` and raise :class:`CorruptArtifactError` (or a subclass).
* :func:`check_settings` / :func:`write_settings`: an artifact built from settings records them;
  a folder or file recorded with other settings (or holding data of no record) is refused with
  :class:`SettingsMismatchError`, never overwritten or mixed.
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
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

__all__ = ["atomic_path", "write_json", "write_text", "read_json", "json_errors_named", "file_sha256",
           "cached_file_sha256", "cache_key", "seal_record", "seal_problem", "seal", "verify_file", "is_sealed",
           "SEALS", "seal_folder", "read_seals", "folder_problems", "verify_folder", "SETTINGS", "check_settings",
           "write_settings", "point_link",
           "restricted_unpickle", "CorruptArtifactError", "SettingsMismatchError", "UnsafePickleError"]

PathLike = Union[str, os.PathLike]
logger = logging.getLogger(__name__)


class CorruptArtifactError(RuntimeError):
    """A file the project wrote is incomplete or altered (it fails its size, checksum or parse)."""


class SettingsMismatchError(ValueError):
    """An artifact (a dataset folder, a cache, a model file) was built with other settings than the
    ones asked for, or a folder holds data no build of these settings wrote: it is refused, never
    overwritten or mixed with the new one."""

    @classmethod
    def between(cls, where: PathLike, what: str, found: dict, wanted: dict, fix: str) -> "SettingsMismatchError":
        """The error naming each setting that differs, as recorded in ``where`` vs as asked now."""
        diff = "; ".join(f"{k}: {found.get(k, '(unset)')!r} there, {v!r} asked"
                         for k, v in wanted.items() if found.get(k) != v)
        extra = sorted(set(found) - set(wanted))
        if extra:
            diff += ("; " if diff else "") + f"recorded but not asked: {extra}"
        return cls(f"{where} holds {what} built with other settings ({diff}): {fix}")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asks to build something other than plain data (arrays, numbers, strings, containers)."""


def point_link(link: PathLike, target: PathLike) -> None:
    """Make ``link`` a relative symlink to ``target`` (a sibling), replacing an older one atomically."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


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


SEALS = "seals.json"  # a folder's seal records, one per file
SETTINGS = "settings.json"  # the settings record of a folder


def seal_record(path: PathLike, hasher: Optional[Callable[[PathLike], str]] = None) -> dict:
    """The seal record ``{"sha256", "size"}`` of a finished file."""
    return {"sha256": (hasher or file_sha256)(path), "size": os.stat(path).st_size}


def seal_problem(path: PathLike, record, hasher: Optional[Callable[[PathLike], str]] = None) -> Optional[str]:
    """What is wrong with ``path`` against its seal record (e.g. "is missing"), None when it matches.
    Never raises: the ranks of a job gather each other's problems. The size is compared first, so a
    truncated file is found without reading it."""
    try:
        size = os.stat(path).st_size
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            return f"has no valid seal record ({record!r})"
        if size != record.get("size"):
            return f"is incomplete or altered ({size} bytes, sealed at {record.get('size')})"
        if (hasher or file_sha256)(path) != record["sha256"]:
            return f"is altered (its sha256 differs from its seal; {size} bytes)"
    except FileNotFoundError:
        return "is missing"
    except OSError as e:
        return f"is unreadable ({e})"
    return None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def seal(path: PathLike) -> None:
    """Record the seal of a finished file in its sidecar ``<name>.sha256``."""
    path = Path(path)
    write_json(_sidecar(path), seal_record(path, cached_file_sha256))


def is_sealed(path: PathLike) -> bool:
    return _sidecar(Path(path)).is_file()


def verify_file(path: PathLike, what: str = "file",
                recover: str = "delete it and rerun the command that made it") -> None:
    """Raise :class:`CorruptArtifactError` unless ``path`` exists and matches its sidecar (when it
    has one); JSON files must also parse."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    side = _sidecar(path)
    if side.is_file():
        # hashed once per version of the file in a process (a stage check, then its load)
        problem = seal_problem(path, read_json(side, "seal"), cached_file_sha256)
        if problem:
            raise CorruptArtifactError(f"{what} {path} {problem} (its seal: {side.name}): {recover}")
    if path.suffix == ".json":
        read_json(path, what)


def seal_folder(folder: PathLike, names: Sequence[str]) -> Dict[str, dict]:
    """Seal the files ``names`` of ``folder`` in one ``seals.json``; return the records ({name: record})."""
    folder = Path(folder)
    records = {name: seal_record(folder / name) for name in names}
    write_json(folder / SEALS, records, sort_keys=True)
    return records


def read_seals(folder: PathLike) -> Dict[str, dict]:
    return read_json(Path(folder) / SEALS, "seals")


def folder_problems(folder: PathLike, records: Optional[Dict[str, dict]] = None) -> List[str]:
    """What is wrong with the sealed files of ``folder`` (``records``: a copy kept elsewhere, e.g. in a
    manifest; by default the folder's own ``seals.json``), each as "<name> <problem>"; [] when all
    match. Never raises."""
    folder = Path(folder)
    if not folder.is_dir():
        return ["folder missing"]
    if records is None:
        try:
            records = read_seals(folder)
        except (OSError, CorruptArtifactError) as e:
            return [f"{SEALS} unreadable ({e})"]
    if not isinstance(records, dict):
        return [f"no valid seal records ({records!r})"]
    return [f"{name} {problem}" for name, record in records.items()
            if (problem := seal_problem(folder / name, record)) is not None]


def verify_folder(folder: PathLike, what: str = "folder", recover: str = "delete it and rerun the command that "
                  "made it", records: Optional[Dict[str, dict]] = None) -> None:
    """Raise :class:`CorruptArtifactError` naming every file of ``folder`` that fails its seal."""
    problems = folder_problems(folder, records)
    if problems:
        raise CorruptArtifactError(f"{what} {folder} fails verification: {'; '.join(problems)}. Fix: {recover}")


def _settings_path(path: PathLike) -> Path:
    path = Path(path)
    return path if path.suffix == ".json" else path / SETTINGS


def _plain(settings: dict) -> dict:
    """``settings`` as read back from JSON (tuples become lists), so records and requests compare."""
    return json.loads(json.dumps(settings))


def write_settings(folder_or_file: PathLike, settings: dict) -> Path:
    """Record the settings an artifact is built with (a folder's ``settings.json``, or a ``.json`` file)."""
    return write_json(_settings_path(folder_or_file), _plain(settings), sort_keys=True)


def check_settings(folder_or_file: PathLike, expected: dict, what: str, fix: str = "",
                   others: Iterable[PathLike] = ()) -> bool:
    """Whether the settings record of an artifact (a folder's ``settings.json``, or a ``.json``
    file) holds ``expected``: True when it does (the artifact is there, built with these settings),
    False when there is no record and none of ``others`` (files only a build leaves) exists: build
    it, recording ``expected`` with :func:`write_settings`. Otherwise raise
    :class:`SettingsMismatchError` naming each differing setting and ``fix`` (by default: use
    another folder, or delete this one)."""
    path = _settings_path(folder_or_file)
    where = path.parent if path.name == SETTINGS else path
    fix = fix or f"use another folder, or delete {where} to build it anew"
    wanted = _plain(expected)
    if path.is_file():
        found = read_json(path, "settings record")
        if found == wanted:
            return True
        raise SettingsMismatchError.between(where, what, found if isinstance(found, dict) else {}, wanted, fix)
    present = [Path(p) for p in others if os.path.lexists(p)]
    if present:
        raise SettingsMismatchError(f"{present[0]} is there, but not {path}, the settings record of {what}: it was "
                                    f"not written by a build of {what}; refusing to overwrite it: {fix}")
    return False


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
