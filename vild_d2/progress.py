"""Progress of long loops that reads well wherever the output goes.

In a terminal (stderr is a TTY) a tqdm bar is drawn. Elsewhere (cluster jobs, CI, ``make demo > log``)
a bar's redraws would fill the log with carriage returns, so a line is logged at most every
``VILD_PROGRESS_INTERVAL`` seconds (default 30), plus one when the loop ends::

    toy CLIP teacher: 1200/4000 (30%), 40.1 it/s, eta 1m10s, loss=0.412
    toy CLIP teacher: 4000/4000 (100%) done in 1m40s, 40.0 it/s, loss=0.201

:func:`progress` takes tqdm's common arguments and returns an object with tqdm's ``update``,
``set_postfix`` and ``close``, so that a call site reads the same either way.
"""
import logging
import os
import sys
import time
from typing import Callable, Iterable, Iterator, Optional

from tqdm import tqdm

__all__ = ["progress", "LogProgress", "progress_interval", "INTERVAL_ENV"]

INTERVAL_ENV = "VILD_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0

logger = logging.getLogger(__name__)


def progress_interval() -> float:
    """Seconds between two progress lines where the output is not a terminal: ``$VILD_PROGRESS_INTERVAL``
    or 30."""
    value = os.environ.get(INTERVAL_ENV, "")
    if not value:
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # NaN too
        raise ValueError(f"{INTERVAL_ENV}={value!r}: give the seconds between two progress lines, a number >= 0")
    return seconds


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LogProgress:
    """tqdm's interface (iteration, ``update``, ``set_postfix``, ``close``, ``with``) writing log
    lines instead of a bar: at most one per ``interval`` seconds of ``clock``, and a last one on
    ``close`` (called by the end of the iteration, or by the caller that updates by hand)."""

    def __init__(self, iterable: Optional[Iterable] = None, desc: str = "", total: Optional[int] = None,
                 unit: str = "it", interval: Optional[float] = None, disable: bool = False,
                 clock: Callable[[], float] = time.monotonic, log: Optional[logging.Logger] = None):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.interval = progress_interval() if interval is None else interval
        self.disable, self.clock, self.log = disable, clock, log or logger
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = clock()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def set_postfix(self, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if not self.disable and now - self.last >= self.interval:
            self.last = now
            self.log.info("%s", self._line(now, done=False))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.disable:
            self.log.info("%s", self._line(self.clock(), done=True))

    def _rate(self, elapsed: float) -> str:
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if rate == 0:
            return f"? {self.unit}/s"
        return f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}"

    def _line(self, now: float, done: bool) -> str:
        elapsed = now - self.start
        count = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n} {self.unit}"
        parts = [f"{count} done in {_duration(elapsed)}" if done else count, self._rate(elapsed)]
        if not done and self.total and self.n and elapsed > 0:
            parts.append(f"eta {_duration((self.total - self.n) * elapsed / self.n)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)


def progress(iterable: Optional[Iterable] = None, desc: str = "", total: Optional[int] = None, unit: str = "it",
             disable: bool = False, **log_options):
    """A tqdm bar over ``iterable`` when stderr is a terminal, else a :class:`LogProgress` (whose
    ``interval``, ``clock`` and ``log`` may be given in ``log_options``). Either one takes
    ``update(n)`` and ``close()`` when there is no iterable, and ``set_postfix(key=value)``."""
    if sys.stderr is not None and sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable)
    return LogProgress(iterable, desc=desc, total=total, unit=unit, disable=disable, **log_options)
