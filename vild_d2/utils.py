"""Files the project writes and reads back, handled one way everywhere.

* :func:`atomic_path` / :func:`write_json` / :func:`write_text`: an artifact is written under a
  temporary name in its own folder and renamed into place, so a reader (or a rerun after
  ``kill -9``) sees the old file or the whole new one, never half of one.
* :func:`seal` / :func:`verify_file`: large binary artifacts (checkpoints, teachers) get a
  ``<name>.sha256`` sidecar written after their rename; the file is trusted only when its size
  and checksum match it.
* :func:`cache_key` names cached stages by a hash of their inputs; :func:`file_sha256` hashes files.
* :func:`exclusive`: one job at a time writes a folder; a second one stops with a clear error.
* :func:`restricted_unpickle`: reads Detectron2's pickle formats (weights, proposals) without
  running code: only arrays, numbers, strings and containers are rebuilt.
"""
import contextlib
import errno
import fcntl
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
           "seal", "verify_file", "is_sealed", "exclusive", "restricted_unpickle", "CorruptArtifactError",
           "BusyError", "UnsafePickleError"]

PathLike = Union[str, os.PathLike]
logger = logging.getLogger(__name__)


class CorruptArtifactError(RuntimeError):
    """A file the project wrote is incomplete or altered (it fails its size, checksum or parse)."""


class BusyError(RuntimeError):
    """Another job is writing the same folder."""


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


# errno values of filesystems that do not implement flock
_NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
_warned_no_flock = set()


def _warn_no_flock(folder: Path, what: str, error: OSError) -> None:
    """Once per folder and process: the filesystem cannot lock, so nothing stops a second job."""
    if folder in _warned_no_flock:
        return
    _warned_no_flock.add(folder)
    logger.warning("the filesystem of %s does not support file locks (%s): the %s runs without the guard against "
                   "a second job writing the same folder; make sure only one job writes there", folder,
                   os.strerror(error.errno), what)


@contextlib.contextmanager
def exclusive(folder: PathLike, what: str = "job", name: str = ".lock", wait: bool = False) -> Iterator[None]:
    """Hold the lock file ``<folder>/<name>`` while writing what it guards. A second job stops with
    :class:`BusyError`, or with ``wait`` blocks until the first is done (and then finds its result).

    The lock is the kernel's (``flock``): it goes with its process, so a killed job never leaves a
    stale one behind. On a filesystem without ``flock`` (NFSv3 without lockd, some Lustre mounts:
    ENOLCK, ENOSYS, EOPNOTSUPP) the block runs unguarded, with a warning: a lock that cannot be
    taken must not stop every job there."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _lock(fd, folder, what, wait):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _ended_here(owner: str) -> bool:
    """``owner`` ("pid on host", as :func:`exclusive` records it) is a process of this host that has ended."""
    pid, _, host = owner.partition(" on ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _lock(fd: int, folder: Path, what: str, wait: bool) -> bool:
    """Take the lock of :func:`exclusive`; False where the filesystem has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in _NO_FLOCK:
            _warn_no_flock(folder, what, e)
            return False
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
    owner = os.pread(fd, 128, 0).decode(errors="replace").strip() or "?"
    if _ended_here(owner):
        # the job was killed (kill -9), but the lock is shared with the processes it forked (data
        # loader workers), which notice their parent's end within seconds and exit
        logger.info("the %s that held %s (pid %s) has ended; waiting for its leftover processes to exit",
                    what, folder, owner)
        wait = True
    if not wait:
        raise BusyError(f"another {what} (pid {owner}) is writing {folder}: wait for it to finish, or use "
                        "another output folder")
    logger.info("waiting for another %s (pid %s) writing %s", what, owner, folder)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return True


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
