"""One job at a time per output folder: :func:`exclusive` holds a kernel lock file while a job
writes what it guards; a second job stops with :class:`BusyError` (or waits its turn)."""
import contextlib
import errno
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Union

__all__ = ["exclusive", "BusyError"]

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


class BusyError(RuntimeError):
    """Another job is writing the same folder."""


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
