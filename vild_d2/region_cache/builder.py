"""Build the offline CLIP region-embedding cache: proposals -> batched crops -> CLIP image tower.

Work is split in shards of consecutive images (records sorted by image_id). Each shard is
written atomically, so a killed job resumes at the first missing shard; ranks of a distributed
job take shards ``k % world_size == rank`` and rank 0 writes the manifest once all exist.
Per-shard work never depends on the rank, so the bytes equal a single-process build (given the
same device and thread count). A rerun also rebuilds shards that fail verification (missing or
altered arrays, shapes that disagree; warned by name), unless a stamp of a complete verification
(:func:`~vild_d2.region_cache.storage.verify_region_cache`) still matches the files.
Shapes: M proposals, S scales, D embedding dim.
"""
import contextlib
import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.utils import comm

from ..artifacts import check_settings, read_seals, write_settings
from ..clip_model import clip_identity
from ..crops import CROP_COMBINATION, embed_regions
from ..data.images import image_errors_named
from ..locking import exclusive
from ..progress import progress
from .proposals import select_proposals
from .storage import FORMAT_VERSION, shard_name, shard_problems, stamp_matches, write_manifest, write_shard

logger = logging.getLogger(__name__)

__all__ = ["RegionCacheSettings", "build_region_cache"]


@dataclasses.dataclass(frozen=True)
class RegionCacheSettings:
    num_proposals: int = 300  # M, top proposals by objectness after NMS
    scales: Sequence[float] = (1.0, 1.5)  # crop context scales
    combine: str = CROP_COMBINATION  # "sum" or "first" (crops.CROP_COMBINATION)
    nms_thresh: float = 0.7
    shard_size: int = 256  # images per shard
    batch_size: int = 256  # crops per encoder forward

    def manifest_fields(self, clip: str, dim: int, dataset: str, num_images: int) -> Dict:
        return {"version": FORMAT_VERSION, "clip": clip, "dim": dim, "dataset": dataset, "num_images": num_images,
                "num_proposals": self.num_proposals, "scales": list(self.scales), "combine": self.combine,
                "nms_thresh": self.nms_thresh, "shard_size": self.shard_size}


class _Images(torch.utils.data.Dataset):
    """Decodes images in DataLoader workers, overlapping the encoder."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        with image_errors_named(self.records[i]):
            image = read_image(self.records[i]["file_name"], format="RGB")  # H x W x 3 uint8
        return i, torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # 3 x H x W


def build_region_cache(out_dir, records: List[Dict], proposal_source: Callable, clip_model, clip_spec: str,
                       settings: RegionCacheSettings = RegionCacheSettings(), dataset_name: str = "",
                       num_workers: int = 2) -> Path:
    """Build (or resume) a region cache for ``records`` (Detectron2 dataset dicts) in ``out_dir``.
    One job at a time: a second build into the same folder stops with :class:`BusyError`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out, "region cache build") if comm.get_rank() == 0 else contextlib.nullcontext():
        comm.synchronize()
        return _build(out, records, proposal_source, clip_model, clip_spec, settings, dataset_name, num_workers)


def _build(out: Path, records, proposal_source, clip_model, clip_spec, settings, dataset_name, num_workers) -> Path:
    records = sorted(records, key=lambda r: r["image_id"])
    visual = clip_model.visual.eval()
    fields = settings.manifest_fields(clip_identity(clip_spec), int(clip_model.text_projection.shape[1]),
                                      dataset_name, len(records))
    rank, world = comm.get_rank(), comm.get_world_size()
    if rank == 0:  # temporary and replaced shard folders of a killed build
        for leftover in out.glob(".shard_*"):
            shutil.rmtree(leftover)
    _claim(out, fields)
    num_shards = (len(records) + settings.shard_size - 1) // settings.shard_size
    trusted = stamp_matches(out)  # verified complete since, and unchanged: nothing to hash
    todo = [k for k in range(num_shards) if k % world == rank and _needs_build(out, k, fields["dim"], trusted)]
    logger.info("region cache %s: %d shards, %d left for rank %d/%d", out, num_shards, len(todo), rank, world)
    bar = progress(total=sum(len(records[k * settings.shard_size:(k + 1) * settings.shard_size]) for k in todo),
                   unit="img", desc=f"region cache (rank {rank})", disable=not todo)
    t0, encoder_s = time.perf_counter(), 0.0
    for k in todo:
        shard = records[k * settings.shard_size:(k + 1) * settings.shard_size]
        boxes, embeds, scores = [], [], []
        loader = torch.utils.data.DataLoader(_Images(shard), batch_size=None, num_workers=num_workers)
        for i, image in loader:
            b, s = proposal_source(shard[i], image.permute(1, 2, 0).numpy())
            b, s = select_proposals(b, s, settings.num_proposals, settings.nms_thresh)
            t = time.perf_counter()
            e = embed_regions(visual, image, torch.from_numpy(b), settings.scales, settings.combine,
                              settings.batch_size)
            encoder_s += time.perf_counter() - t
            boxes.append(b), scores.append(s), embeds.append(e.cpu().numpy())
            bar.update(1)
        write_shard(out, k, [r["image_id"] for r in shard], boxes, embeds, scores)
    bar.close()
    if todo:
        logger.info("rank %d: %.1f s, %.0f%% inside crop+encode", rank, time.perf_counter() - t0,
                    100 * encoder_s / max(time.perf_counter() - t0, 1e-9))
    comm.synchronize()
    if rank == 0:
        shards = []
        for k in range(num_shards):
            shards.append({"name": shard_name(k), "seals": read_seals(out / shard_name(k))})
        write_manifest(out, dict(fields, shards=shards))
    comm.synchronize()
    return out


def _needs_build(out: Path, k: int, dim: int, trusted: bool) -> bool:
    """Shard ``k`` is missing, or damaged (warned by name; its folder is replaced when rebuilt)."""
    folder = out / shard_name(k)
    if not folder.is_dir():
        return True
    problems = [] if trusted else shard_problems(folder, dim=dim)
    if problems:
        logger.warning("region cache %s: %s is damaged (%s): rebuilding it", out, folder.name, "; ".join(problems))
    return bool(problems)


def _claim(out: Path, fields: Dict) -> None:
    """Record the build's settings; a folder holding a cache of other settings (or of another format
    version) is never mixed. Every rank checks, so all stop together."""
    path = out / "build.json"
    if comm.get_rank() == 0 and not path.is_file():
        write_settings(path, fields)
    comm.synchronize()
    check_settings(path, fields, "a region cache", f"use another output folder, or delete {out} to rebuild it")
