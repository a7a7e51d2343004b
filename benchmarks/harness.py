"""What the benchmark scripts share: a stopwatch, variants timed in interleaved rounds, timers on
modules and functions, markdown tables and results files.

Variants run in interleaved rounds (every variant once per round) because the shared 2-core hosts
change speed from minute to minute: a slow spell then slows every variant of that round alike, and
the ratios to a baseline timed in the same rounds hold where the absolute times do not. Scripts
report the min and the median over rounds.

Nothing of torch, detectron2 or vild_d2 is imported at module level: scripts that set
``$DETECTRON2_DATASETS`` before detectron2 registers its datasets import this module first.
"""
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Hashable, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]  # where the scripts run from (``python -m benchmarks.NAME``)
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
ORDERS = ("same", "rotate", "alternate")
Sync = Optional[Callable[[], None]]


class Stopwatch:
    """Wall (``perf_counter``) and process-CPU seconds of a ``with`` block, in ``wall`` and ``cpu``.
    ``sync`` (a device synchronisation) runs at both ends, so that queued GPU work is counted."""

    def __init__(self, sync: Sync = None):
        self.sync, self.wall, self.cpu = sync, 0.0, 0.0

    def __enter__(self) -> "Stopwatch":
        if self.sync is not None:
            self.sync()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> bool:
        if self.sync is not None:
            self.sync()
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        return False


def timed(fn: Callable[[], object], iters: int = 1, sync: Sync = None) -> float:
    """Mean wall seconds per call of ``fn()`` over ``iters`` calls."""
    with Stopwatch(sync) as sw:
        for _ in range(iters):
            fn()
    return sw.wall / iters


def stats(times: Sequence[float], base: Optional[Sequence[float]] = None) -> dict:
    """``min_s``, ``median_s`` and ``all_s`` of ``times``; with ``base`` (the baseline's times of the
    same rounds) also the ratio of the medians, of the mins, and the median of the per-round ratios."""
    out = {"min_s": min(times), "median_s": statistics.median(times), "all_s": list(times)}
    if base:
        out.update(ratio_median=out["median_s"] / statistics.median(base), ratio_min=out["min_s"] / min(base),
                   paired_ratio_median=statistics.median(t / b for t, b in zip(times, base)))
    return out


def round_order(names: Sequence[Hashable], r: int, order: str) -> List[Hashable]:
    """The variants of round ``r``: always in the given ``order`` ("same"), shifted by one place
    per round ("rotate"), or reversed every other round ("alternate")."""
    names = list(names)
    if order == "same":
        return names
    if order == "rotate":
        k = r % max(len(names), 1)
        return names[k:] + names[:k]
    if order == "alternate":
        return names if r % 2 == 0 else names[::-1]
    raise ValueError(f"round order {order!r}: give one of {ORDERS}")


@dataclass
class Rounds:
    """Seconds of each timed round per variant (``wall``, ``cpu``; warm-up rounds left out) and the
    traceback of every variant dropped because it raised (``errors``)."""

    wall: Dict[Hashable, List[float]] = field(default_factory=dict)
    cpu: Dict[Hashable, List[float]] = field(default_factory=dict)
    errors: Dict[Hashable, str] = field(default_factory=dict)

    def stats(self, baseline: Optional[Hashable] = None, scale: float = 1.0) -> dict:
        """``stats`` of every variant with a timed round, its times multiplied by ``scale`` (say
        1 / images per round), ratios against ``baseline`` when that variant has times."""
        base = [t * scale for t in self.wall.get(baseline) or []]
        return {v: stats([t * scale for t in times], base) for v, times in self.wall.items() if times}


def interleave(runners: Dict[Hashable, Callable[[], object]], rounds: int, *, warmup: int = 0,
               order: str = "same", sync: Sync = None, log: Optional[str] = None,
               deadline: Optional[float] = None, keep_going: bool = False) -> Rounds:
    """Run every variant once per round (``round_order``): ``warmup`` untimed rounds, then up to
    ``rounds`` timed ones. A runner that times only part of its work returns the ``Stopwatch``
    that timed it; otherwise the whole call is timed (``sync`` at both ends).

    log: a line printed after every run, ``str.format``-ted with ``round``, ``warm`` (" (warm-up)"
        or ""), ``name``, ``wall`` and ``cpu``.
    deadline: a ``time.time()``; no timed round after the first starts when the last round's
        length would end it past the deadline.
    keep_going: a runner that raises is dropped (its traceback in ``errors``) and the others go
        on; otherwise the exception propagates.
    """
    runners, last = dict(runners), 0.0
    out = Rounds({v: [] for v in runners}, {v: [] for v in runners})
    for r in range(warmup + rounds):
        if deadline is not None and r > warmup and time.time() + last > deadline:
            break
        start = time.time()
        for v in round_order(runners, r, order):
            try:
                with Stopwatch(sync) as sw:
                    inner = runners[v]()
            except Exception:
                if not keep_going:
                    raise
                out.errors[v] = traceback.format_exc()
                del runners[v]
                continue
            sw = inner if isinstance(inner, Stopwatch) else sw
            if log:
                print(log.format(round=r, warm=" (warm-up)" if r < warmup else "", name=v, wall=sw.wall,
                                 cpu=sw.cpu), flush=True)
            if r >= warmup:
                out.wall[v].append(sw.wall)
                out.cpu[v].append(sw.cpu)
        last = time.time() - start
    return out


class Timers:
    """Wall seconds spent inside modules and functions, summed by label (several may share one):
    ``hook`` times a torch module's calls by forward hooks, ``wrap`` replaces an attribute (a
    method, or a function of a Python module that callers look up there) by a timed wrapper.
    ``remove`` undoes both; ``reset`` clears ``spent``."""

    def __init__(self, sync: Sync = None):
        self.sync, self.spent, self._undo = sync, {}, []

    def reset(self) -> None:
        self.spent = {}

    def _add(self, label: str, seconds: float) -> None:
        self.spent[label] = self.spent.get(label, 0.0) + seconds

    def hook(self, module, label: str) -> "Timers":
        starts = []  # a stack: a module may be called again inside its own forward

        def pre(_module, _inputs):
            if self.sync is not None:
                self.sync()
            starts.append(time.perf_counter())

        def post(_module, _inputs, _output):
            if self.sync is not None:
                self.sync()
            self._add(label, time.perf_counter() - starts.pop())

        self._undo += [module.register_forward_pre_hook(pre).remove, module.register_forward_hook(post).remove]
        return self

    def timed(self, fn: Callable, label: str, before: Optional[Callable] = None) -> Callable:
        """``fn`` timed under ``label``; ``before`` gets the same arguments first, outside the timer."""
        def wrapper(*args, **kwargs):
            if before is not None:
                before(*args, **kwargs)
            with Stopwatch(self.sync) as sw:
                out = fn(*args, **kwargs)
            self._add(label, sw.wall)
            return out
        return wrapper

    def wrap(self, obj, attr: str, label: str, before: Optional[Callable] = None) -> "Timers":
        fn, own = getattr(obj, attr), attr in vars(obj)
        setattr(obj, attr, self.timed(fn, label, before))
        self._undo.append(lambda: setattr(obj, attr, fn) if own else delattr(obj, attr))
        return self

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo = []


def table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """A markdown table; every cell goes through ``str``."""
    return "\n".join(["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
                     + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def write_results(path, data) -> Path:
    """Write ``data`` as JSON (indent 1) to ``path`` atomically, folders made, and read it back."""
    from vild_d2.artifacts import read_json, write_json  # here, not above: see the module docstring

    path = write_json(path, data)
    read_json(path, "results file")
    return path
