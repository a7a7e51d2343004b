"""vild_d2.progress: a tqdm bar in a terminal; elsewhere log lines at a steady interval, exact on a fake clock."""
import io
import logging
import re
import sys

import pytest
from tqdm import tqdm

from vild_d2.progress import INTERVAL_ENV, LogProgress, progress, progress_interval

from .helpers import REPO


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "vild_d2.progress"]


def test_not_a_terminal_logs_a_line_per_interval_and_a_last_one(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO, logger="vild_d2.progress")
    clock = FakeClock()
    bar = progress(range(10), desc="teacher", unit="step", interval=30, clock=clock)
    assert isinstance(bar, LogProgress)
    for i in bar:
        clock.t += 10  # 10 s per step: a line every 3 steps
        bar.set_postfix(loss=f"{1 / (i + 1):.2f}")
    assert lines(caplog) == [
        "teacher: 3/10 (30%), 10.0 s/step, eta 1m10s, loss=0.33",
        "teacher: 6/10 (60%), 10.0 s/step, eta 40s, loss=0.17",
        "teacher: 9/10 (90%), 10.0 s/step, eta 10s, loss=0.11",
        "teacher: 10/10 (100%) done in 1m40s, 10.0 s/step, loss=0.10",
    ]
    assert sys.stderr.getvalue() == ""  # no bar, no carriage returns


def test_updates_by_hand_without_a_total(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO, logger="vild_d2.progress")
    clock = FakeClock()
    with progress(desc="region cache", unit="img", interval=5, clock=clock) as bar:
        for _ in range(3):
            clock.t += 4
            bar.update(50)
    assert lines(caplog) == ["region cache: 100 img, 12.5 img/s", "region cache: 150 img done in 12s, 12.5 img/s"]
    caplog.clear()
    bar = progress(total=2, desc="nothing to do", interval=0, clock=clock, disable=True)
    bar.update(2)
    bar.close()
    assert lines(caplog) == []


def test_a_terminal_gets_a_tqdm_bar(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", Terminal())
    caplog.set_level(logging.INFO, logger="vild_d2.progress")
    bar = progress(range(5), desc="text embeddings", unit="batch")
    assert isinstance(bar, tqdm)
    assert list(bar) == list(range(5))
    drawn = sys.stderr.getvalue()
    assert "\r" in drawn and "text embeddings" in drawn and "5/5" in drawn
    assert lines(caplog) == []


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert progress_interval() == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert progress_interval() == 2.5 and LogProgress(range(1)).interval == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=f"{INTERVAL_ENV}=.*a number >= 0"):
            progress_interval()


def test_no_module_draws_tqdm_itself():
    package = REPO / "vild_d2"
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                   if re.search(r"^\s*(from|import) tqdm", p.read_text(), flags=re.M))
    assert users == ["progress.py"], "use vild_d2.progress.progress, which logs lines where stderr is no terminal"
