"""Training samplers that honour ``DATALOADER.SAMPLER_TRAIN`` and can resume mid-stream.

Detectron2's training samplers yield an infinite stream of dataset indices, shared by the
processes: rank r of W takes items r, r + W, r + 2W, ... Each sampler here is Detectron2's own
class with :class:`ResumableSampler` mixed in, which adds ``skip``: after ``skip = k`` a rank's
stream starts at its k-th item, so a training resumed at iteration i (k = i x images per batch per
process) sees the images the uninterrupted one would have, instead of the first ones again.
"""
import itertools
import logging
from typing import List, Sequence

from detectron2.data.samplers import RandomSubsetTrainingSampler, RepeatFactorTrainingSampler, TrainingSampler
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

__all__ = ["ResumableSampler", "ResumableTrainingSampler", "ResumableRepeatFactorTrainingSampler",
           "ResumableRandomSubsetTrainingSampler", "build_training_sampler", "SUPPORTED_SAMPLERS"]


class ResumableSampler:
    """Mixin for a Detectron2 training sampler (one with ``_infinite_indices``, ``_rank`` and
    ``_world_size``): ``skip`` = number of this rank's items to leave out at the start."""

    _skip = 0

    @property
    def skip(self) -> int:
        return self._skip

    @skip.setter
    def skip(self, value: int) -> None:
        if int(value) != value or value < 0:
            raise ValueError(f"sampler skip must be a whole number >= 0 (items of this rank's stream), got {value!r}")
        self._skip = int(value)

    def __iter__(self):
        start = self._rank + self._skip * self._world_size
        yield from itertools.islice(self._infinite_indices(), start, None, self._world_size)


class ResumableTrainingSampler(ResumableSampler, TrainingSampler):
    """Detectron2's uniform shuffled sampler (``TrainingSampler``), resumable."""


class ResumableRepeatFactorTrainingSampler(ResumableSampler, RepeatFactorTrainingSampler):
    """Detectron2's repeat-factor sampler (LVIS: images of rare categories more often), resumable."""


class ResumableRandomSubsetTrainingSampler(ResumableSampler, RandomSubsetTrainingSampler):
    """Detectron2's sampler over a fixed random subset of the images, resumable."""


SUPPORTED_SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler", "RandomSubsetTrainingSampler")


def _repeat_factor_sampler(cfg, records: List[dict]) -> ResumableRepeatFactorTrainingSampler:
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        records, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT)
    logger.info("repeat factors (DATALOADER.REPEAT_THRESHOLD %g, sqrt %s) of %d images: min %.3f, mean %.3f, "
                "max %.3f; effective epoch %.1f images", cfg.DATALOADER.REPEAT_THRESHOLD, cfg.DATALOADER.REPEAT_SQRT,
                len(factors), factors.min().item(), factors.mean().item(), factors.max().item(), factors.sum().item())
    return ResumableRepeatFactorTrainingSampler(factors, seed=cfg.SEED)  # the seed Detectron2 gives it


def _random_subset_sampler(cfg, records: List[dict]) -> ResumableRandomSubsetTrainingSampler:
    ratio = cfg.DATALOADER.get("RANDOM_SUBSET_RATIO")
    if ratio is None:
        raise ValueError("DATALOADER.SAMPLER_TRAIN RandomSubsetTrainingSampler reads DATALOADER.RANDOM_SUBSET_RATIO, "
                         "which this Detectron2's defaults lack: add the key (share of the images, in (0, 1]) to the "
                         "config before merging the YAML")
    if not 0.0 < ratio <= 1.0 or int(len(records) * ratio) < 1:
        raise ValueError(f"DATALOADER.RANDOM_SUBSET_RATIO {ratio} of {len(records)} images keeps none: give a "
                         "share in (0, 1] that keeps at least one image")
    return ResumableRandomSubsetTrainingSampler(len(records), ratio)


def build_training_sampler(cfg, records: Sequence[dict]) -> Sampler:
    """The sampler ``cfg.DATALOADER.SAMPLER_TRAIN`` names, built as Detectron2's
    ``build_detection_train_loader`` builds it from a config (same arguments, same seeds), over
    ``records`` (the images actually trained), resumable through ``skip``."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name not in SUPPORTED_SAMPLERS:
        # Detectron2's Weighted* samplers reload DATASETS.TRAIN themselves: their indices need not match
        # the records trained here (KEEP_IMAGES_WITH_REGIONS), and they are not built to resume mid-stream
        raise ValueError(f"DATALOADER.SAMPLER_TRAIN {name!r} is not supported (vild_d2 needs a sampler over the "
                         f"records it trains that resumes exactly): set it to one of {', '.join(SUPPORTED_SAMPLERS)}")
    records = list(records)
    if not records:
        raise ValueError(f"no training images for {name}: check DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)}")
    if name == "RepeatFactorTrainingSampler":
        sampler = _repeat_factor_sampler(cfg, records)
    elif name == "RandomSubsetTrainingSampler":
        sampler = _random_subset_sampler(cfg, records)
    else:
        sampler = ResumableTrainingSampler(len(records))  # seed drawn after SEED, shared by the processes
    logger.info("training sampler: %s over %d images (resumable)", name, len(records))
    return sampler
