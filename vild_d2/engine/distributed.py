"""Detectron2's ``launch`` and ``torchrun`` set-up, with the process group's backend taken from the
config's device instead of from the host.

Detectron2 picks NCCL whenever the host has a GPU; a config with ``MODEL.DEVICE cpu`` (the toy
world, the CPU overlay) run with ``--num-gpus 2`` on a GPU host then gets NCCL for CPU tensors and
fails when DDP is built. Here a CPU job's processes see no GPU (``CUDA_VISIBLE_DEVICES`` empty), so
Detectron2's own worker chooses gloo and pins no device.
"""
import contextlib
import os
from typing import Callable, Iterator, Sequence

import torch
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm

__all__ = ["launch", "init_torchrun", "is_cuda"]


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


@contextlib.contextmanager
def _gpus_hidden(hide: bool) -> Iterator[None]:
    """Processes started inside the block see no GPU when ``hide`` (the variable is inherited)."""
    if not hide:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def _main_then_leave_group(main_func: Callable, *args):
    """A launched process's work, then the process group closed before the interpreter exits: a
    group still open at exit can abort the process ("terminate called without an active
    exception", seen with gloo) after its work succeeded. Every collective of the job has returned
    by then, so closing is local."""
    result = main_func(*args)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return result


def launch(main_func: Callable, num_gpus_per_machine: int, *, device: str, num_machines: int = 1,
           machine_rank: int = 0, dist_url: str = "auto", args: Sequence = (), timeout=DEFAULT_TIMEOUT) -> None:
    """Detectron2's ``launch`` for a job on ``device`` (``MODEL.DEVICE``): NCCL and one GPU per
    process for CUDA, gloo and no GPU for CPU jobs, whatever the host has."""
    several = num_gpus_per_machine * num_machines > 1
    if several:
        main_func, args = _main_then_leave_group, (main_func, *args)
    with _gpus_hidden(several and not is_cuda(device)):
        d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines, machine_rank=machine_rank,
                  dist_url=dist_url, args=tuple(args), timeout=timeout)


def init_torchrun(device: str) -> None:
    """Join the process group when started by ``torchrun`` (Detectron2's ``launch`` does it itself):
    NCCL for a CUDA job, gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return
    cuda = is_cuda(device) and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    comm.create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))
