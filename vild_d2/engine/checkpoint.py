"""Checkpoints that are never half-written, verified before use, and never run code on load; and
what a resumed training needs to continue as if never stopped: the random states (the data
position is the samplers' ``skip``, in samplers.py)."""
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..artifacts import atomic_path, restricted_unpickle, seal, verify_file, write_text

logger = logging.getLogger(__name__)

__all__ = ["VerifiedCheckpointer", "load_trained_weights", "require_weights", "RandomStates", "GatherRandomStates"]


class VerifiedCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer with three changes:

    * ``save`` writes ``<name>.pth`` under a temporary name, renames it and seals it
      (``<name>.pth.sha256``); the ``last_checkpoint`` tag is replaced the same way. A job killed
      while saving leaves the previous checkpoint as the one to resume from.
    * A sealed file is loaded only when it matches its seal; ``.pkl`` weights (Detectron2's model
      zoo format) are read by :func:`vild_d2.artifacts.restricted_unpickle`, so they cannot run code.
    * The last load's missing / mismatched keys are kept in ``self.incompatible``.
    """

    incompatible = None

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: v.state_dict() for k, v in self.checkpointables.items()},
                **kwargs}
        path = Path(self.save_dir) / f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: the archive's folder is "archive"
            torch.save(data, f)
        seal(path)
        self.tag_last_checkpoint(path.name)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_text(Path(self.save_dir) / "last_checkpoint", last_filename_basename)

    def _load_file(self, filename: str):
        if os.path.isfile(filename):
            verify_file(filename, "checkpoint", recover="delete it and its .sha256 file; --resume then starts from "
                        "the checkpoint named in last_checkpoint, or from MODEL.WEIGHTS")
        if not filename.endswith(".pkl"):
            return super()._load_file(filename)
        data = restricted_unpickle(filename)
        if "model" in data and "__author__" in data:  # Detectron2 model zoo format
            return data
        weights = data.get("blobs", data)  # Caffe2 detection models keep them under "blobs"
        weights = {k: v for k, v in weights.items() if not k.endswith("_momentum")}
        return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def require_weights(path: str) -> None:
    """Stop before any work when ``MODEL.WEIGHTS`` is empty or names a missing local file."""
    if not path:
        raise ValueError("no weights given: set MODEL.WEIGHTS to a trained model (model_final.pth)")
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.WEIGHTS {path} not found")


def load_trained_weights(model, path: str, save_dir: str = "", resume: bool = False) -> None:
    """Load a trained model for inference (``--eval-only``, ``demo.py``): ``path``, or with
    ``resume`` the last checkpoint in ``save_dir``. Every parameter must come from the file:
    Detectron2 only warns about missing ones, and an evaluation of the untrained heads that
    follows would report noise as results."""
    checkpointer = VerifiedCheckpointer(model, save_dir)
    if not (resume and checkpointer.has_checkpoint()):
        require_weights(path)
    checkpointer.resume_or_load(path, resume=resume)
    inc = checkpointer.incompatible
    params = {name for name, _ in model.named_parameters()}
    missing = sorted(k for k in (inc.missing_keys if inc else []) if k in params)
    wrong = sorted(k for k, _, _ in (inc.incorrect_shapes if inc else []))
    if missing or wrong:
        bad = sorted(set(missing) | set(wrong))
        raise ValueError(f"MODEL.WEIGHTS {path} does not fit this model: {len(bad)} parameters missing or of "
                         f"another shape (e.g. {bad[:3]}); they would stay untrained. Give the "
                         "model_final.pth trained with this config (same MODEL.VILD.MODE and vocabulary size)")


class RandomStates:
    """A checkpointable holding each process's torch (CPU and, once CUDA is in use, its device's),
    numpy and Python random states, so that a resumed training draws what the uninterrupted one
    would have (ROI sampling: ``torch.randperm`` on the CUDA generator on GPU; the data augmentation
    when ``DATALOADER.NUM_WORKERS`` is 0). In a distributed job every rank draws its own numbers:
    :class:`GatherRandomStates` collects all ranks' states right before the main process saves, the
    checkpoint holds them all, and each rank restores its own. Stored as tensors and lists:
    checkpoints load with ``weights_only``. Checkpoints without CUDA states still load."""

    _ranks = None

    def gather(self) -> None:
        """Collect every rank's current states for the next :meth:`state_dict` (a collective call)."""
        self._ranks = comm.all_gather(_process_states()) if comm.get_world_size() > 1 else None

    def state_dict(self):
        ranks, self._ranks = self._ranks, None
        return {"ranks": ranks} if ranks is not None else _process_states()

    def load_state_dict(self, state):
        if "ranks" in state:
            ranks, rank, world = state["ranks"], comm.get_rank(), comm.get_world_size()
            if len(ranks) != world:
                logger.warning("the checkpoint holds the random states of %d processes, this job has %d: rank %d "
                               "restores rank %d's, and draws differ from the uninterrupted training's",
                               len(ranks), world, rank, rank % len(ranks))
            state = ranks[rank % len(ranks)]
        torch.set_rng_state(state["torch"])
        keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        _load_cuda_state(state.get("cuda"))


class GatherRandomStates(HookBase):
    """On every rank, at each iteration where Detectron2's PeriodicCheckpointer (a hook of the main
    process only) saves: gather the ranks' random states into ``states`` first. Put it before the
    checkpointer: nothing draws random numbers between the two."""

    def __init__(self, states: RandomStates, period: int):
        self.states, self.period = states, period

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it >= self.trainer.max_iter - 1:
            self.states.gather()  # a no-op in one process


def _process_states() -> dict:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CPU run does not start CUDA here
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device (DDP: one device per process)
    return state


def _load_cuda_state(state) -> None:
    """Restore this process's CUDA generator from a checkpoint, where it holds one."""
    if not torch.cuda.is_available():
        if state is not None:
            logger.warning("the checkpoint holds a CUDA random state, but CUDA is not available: this run's draws "
                           "differ from the uninterrupted GPU training's")
        return
    if not torch.is_tensor(state):  # none (saved on CPU, or by an older vild_d2)
        if torch.cuda.is_initialized():
            logger.warning("the checkpoint holds no CUDA random state of this process: CUDA draws such as ROI "
                           "sampling differ from the uninterrupted training's")
        return
    torch.cuda.set_rng_state(state)
