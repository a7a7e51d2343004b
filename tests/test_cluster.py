"""Cluster conditions reproduced on one CPU machine: the process group's backend follows the
config's device (not the host), filesystems without ``flock``, several machines writing one shared
output folder."""
import errno
import fcntl
import logging
import os

import pytest
import torch

from vild_d2.artifacts import atomic_path
from vild_d2.engine import distributed
from vild_d2.locking import BusyError, exclusive
from vild_d2.recipe import RecipeSettings, run_recipe

from .helpers import INSTANT, REPO


@pytest.mark.parametrize("device, processes, hidden", [("cpu", 2, True), ("cuda", 2, False), ("cpu", 1, False),
                                                      ("cuda:0", 8, False)])
def test_a_cpu_job_in_several_processes_sees_no_gpu(monkeypatch, device, processes, hidden):
    """Detectron2's launch chooses NCCL whenever its processes see a GPU: a CPU config's must not."""
    seen = []
    monkeypatch.setattr(distributed, "d2_launch", lambda *a, **k: seen.append(os.environ.get("CUDA_VISIBLE_DEVICES")))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    distributed.launch(print, processes, device=device)
    assert seen == ["" if hidden else "0,1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP])
@pytest.mark.parametrize("wait", [False, True])
def test_a_filesystem_without_flock_runs_unguarded_with_a_warning(tmp_path, monkeypatch, caplog, code, wait):
    def no_flock(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    ran = []
    with caplog.at_level(logging.WARNING, logger="vild_d2.artifacts"):
        with exclusive(tmp_path / f"out{code}{wait}", "training", wait=wait):
            ran.append(True)
    assert ran == [True] and "does not support file locks" in caplog.text and "training" in caplog.text


def test_a_held_lock_still_stops_a_second_job(tmp_path):
    with exclusive(tmp_path, "training"):
        with pytest.raises(BusyError, match=r"another training \(pid \d+ on .+\) is writing"):
            with exclusive(tmp_path, "training"):
                pass


def test_temporary_names_differ_between_machines(tmp_path, monkeypatch):
    """Two machines on one shared filesystem can run writers with the same pid."""
    names = []
    for host in ("node1", "node2"):
        monkeypatch.setattr("socket.gethostname", lambda host=host: host)
        with atomic_path(tmp_path / "x.json") as tmp:
            names.append(tmp.name)
            tmp.write_text("{}")
    assert names[0] != names[1] and all(str(os.getpid()) in n for n in names)


def test_other_machines_of_one_recipe_share_its_folder(toy_env, tmp_path, monkeypatch):
    """``--machine-rank 1`` of a two-machine recipe writes the folder machine 0 holds: only machine 0
    takes the lock (it used to stop at once with the other machine's lock)."""
    import vild_d2.recipe as recipe

    monkeypatch.setenv("DETECTRON2_DATASETS", str(toy_env))
    calls = []
    monkeypatch.setattr(recipe, "launch", lambda main, n, **kw: calls.append((kw["machine_rank"], kw["device"])))
    settings = RecipeSettings(str(INSTANT), str(REPO / "configs/toy/RPN-Toy-R18-FPN.yaml"),
                              opts=("MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt")))
    with exclusive(tmp_path / "recipe", "recipe run"):  # machine 0's run, under way
        run_recipe(tmp_path / "recipe", settings, num_machines=2, machine_rank=1, dist_url="tcp://node1:5000")
        with pytest.raises(BusyError, match="another recipe run"):
            run_recipe(tmp_path / "recipe", settings, num_machines=2, machine_rank=0, dist_url="tcp://node1:5000")
    assert calls == [(1, "cpu")]


def test_processes_take_turns_loading_a_clip_by_name(tmp_path, monkeypatch):
    """``clip.load("ViT-B/32")`` downloads into ~/.cache/clip in place: 8 ranks starting together
    must not read or rewrite each other's half-written file."""
    import clip

    from vild_d2.clip_model import load_clip

    monkeypatch.setenv("HOME", str(tmp_path))
    held = []

    def load(name, device, jit, download_root):  # is the download lock held while clip.load runs?
        try:
            with exclusive(download_root, "probe", name=".vild_clip_download.lock"):
                held.append(False)
        except BusyError:
            held.append(True)
        return torch.nn.Identity(), None

    monkeypatch.setattr(clip, "load", load)
    load_clip("ViT-B/32")
    load_clip(str(REPO / "setup.py"))  # a file: nothing to download, no turns
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a shared read-only cache: finished files only
    load_clip("ViT-B/32")
    assert held == [True, False, False] and (tmp_path / ".cache/clip").is_dir()


def test_a_killed_jobs_lock_held_by_its_forked_workers_is_waited_for(tmp_path):
    """kill -9 of a training leaves its data-loader workers (which share its lock) alive for a few
    seconds: a --resume then waits for them instead of stopping on a job that has ended."""
    import socket
    import threading

    ready, release = threading.Event(), threading.Event()

    def leftover_worker():  # holds the lock that a dead pid of this host recorded
        with exclusive(tmp_path, "training"):
            (tmp_path / ".lock").write_text(f"999999999 on {socket.gethostname()}")
            ready.set()
            release.wait(10)

    thread = threading.Thread(target=leftover_worker)
    thread.start()
    ready.wait(10)
    threading.Timer(0.3, release.set).start()
    with exclusive(tmp_path, "training"):  # waits, then takes it
        assert release.is_set()
    thread.join()
