"""ViLDDatasetMapper: Detectron2's DatasetMapper plus the cached CLIP regions of each training image.

The cached boxes (M x 4, original image coordinates) go through exactly the transforms applied
to the image (resize, flip, crop); boxes that become degenerate are dropped. The result is
attached as ``dataset_dict["clip_regions"]``: ``Instances(proposal_boxes, clip_embeds M' x D)``.
"""
import logging
from typing import Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import log_every_n_seconds

from ..artifacts import SettingsMismatchError
from ..clip_model import clip_identity
from ..region_cache import RegionCache, verify_region_cache
from .images import image_errors_named

logger = logging.getLogger(__name__)

__all__ = ["ViLDDatasetMapper"]


class ViLDDatasetMapper(DatasetMapper):
    @configurable
    def __init__(self, is_train: bool = True, *, region_cache_dir: str = "", num_cached_proposals: int = 300,
                 expected_clip: Optional[str] = None, expected_dataset: str = "", skip_missing_regions: bool = False,
                 **kwargs):
        """
        Args:
            region_cache_dir: region cache folder; empty = attach no regions (ViLD-text, inference).
            num_cached_proposals: use the top M cached regions of each image.
            expected_clip: CLIP identity the cache must have been built with.
            expected_dataset: registered dataset the cache must have been built for.
            skip_missing_regions: an image missing from the cache gets no regions (counted
                warning) instead of an error.
        """
        super().__init__(is_train, **kwargs)
        self.region_cache_dir = region_cache_dir
        self.num_cached_proposals = num_cached_proposals
        self.expected_clip = expected_clip
        self.expected_dataset = expected_dataset
        self.skip_missing_regions = skip_missing_regions
        self.num_missing = 0
        self._cache = None  # opened lazily, once per DataLoader worker
        self._verified = False  # check_cache_covers verified the whole cache: open it without hashing

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        size = cfg.DATASETS.VILD.LSJ_IMAGE_SIZE
        if is_train and size > 0:  # large-scale jitter, as in the ViLD recipe
            lo, hi = cfg.DATASETS.VILD.LSJ_SCALE_RANGE
            ret["augmentations"] = [T.ResizeScale(lo, hi, size, size), T.FixedSizeCrop((size, size)),
                                    T.RandomFlip()]
        use_cache = is_train and cfg.MODEL.VILD.MODE != "text"
        if use_cache and not cfg.MODEL.VILD.REGION_CACHE_DIR:
            raise ValueError(f"MODEL.VILD.MODE={cfg.MODEL.VILD.MODE!r} trains with cached CLIP regions: set "
                             "MODEL.VILD.REGION_CACHE_DIR (build it with tools/build_region_cache.py)")
        ret.update(region_cache_dir=cfg.MODEL.VILD.REGION_CACHE_DIR if use_cache else "",
                   num_cached_proposals=cfg.MODEL.VILD.NUM_CACHED_PROPOSALS,
                   expected_clip=clip_identity(cfg.MODEL.VILD.CLIP_MODEL) if use_cache else None,
                   expected_dataset=(cfg.MODEL.VILD.REGION_CACHE_DATASET or cfg.DATASETS.TRAIN[0]) if use_cache else "",
                   skip_missing_regions=cfg.DATASETS.VILD.SKIP_MISSING_REGIONS)
        return ret

    @property
    def cache(self) -> RegionCache:
        """The region cache, trusted without hashing once :meth:`check_cache_covers` verified it (also
        in DataLoader workers, which get a copy of this mapper); else checksummed shard by shard."""
        if self._cache is None:
            cache = RegionCache(self.region_cache_dir, expected=self._expected(), verify=not self._verified)
            if cache.manifest["num_proposals"] < self.num_cached_proposals:
                raise SettingsMismatchError(
                    f"region cache {self.region_cache_dir} holds {cache.manifest['num_proposals']} proposals per "
                    f"image but MODEL.VILD.NUM_CACHED_PROPOSALS is {self.num_cached_proposals}: lower the key to at "
                    "most that, or rebuild the cache with more proposals")
            self._cache = cache
        return self._cache

    def _expected(self) -> dict:
        return {"clip": self.expected_clip, "dataset": self.expected_dataset or None}

    def check_cache_covers(self, image_ids: Sequence[int]) -> None:
        """Called once per rank before training. First the whole cache is verified (files, checksums
        and shapes of every shard, shared out among the ranks; a stamp in the cache folder spares a
        resumed run the hashing), so a damaged shard stops the job before any image is mapped. Then the
        training images and the cache's images must be the same set: an image id the dataset lacks
        means a cache of other data; a training image the cache lacks has no regions (allowed only
        with ``skip_missing_regions``)."""
        verify_region_cache(self.region_cache_dir, expected=self._expected(), accept=lambda: self._covers(image_ids))

    def _covers(self, image_ids: Sequence[int]) -> None:
        self._verified, self._cache = True, None  # from now on the cache is trusted as it is
        wanted = {int(i) for i in image_ids}
        have = self.cache.image_ids()
        foreign, missing = have - wanted, wanted - have
        where = f"region cache {self.region_cache_dir} (dataset {self.cache.manifest.get('dataset')!r})"
        if foreign:
            raise SettingsMismatchError(f"{where} holds {len(foreign)} image ids the training set does not have "
                                        f"(e.g. {sorted(foreign)[:3]}): it was built for other data; rebuild it for "
                                        "DATASETS.TRAIN or point MODEL.VILD.REGION_CACHE_DIR to the matching cache")
        if missing and not self.skip_missing_regions:
            raise SettingsMismatchError(f"{where} lacks {len(missing)} of the {len(wanted)} training images (e.g. "
                                        f"{sorted(missing)[:3]}): finish or rebuild the cache, or set "
                                        "DATASETS.VILD.SKIP_MISSING_REGIONS=True to train them without ViLD-image")
        if missing:
            logger.warning("%s lacks %d of %d training images: they train without ViLD-image", where, len(missing),
                           len(wanted))

    def __call__(self, dataset_dict):
        with image_errors_named(dataset_dict):
            return super().__call__(dataset_dict)

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        super()._transform_annotations(dataset_dict, transforms, image_shape)
        if self.region_cache_dir:
            dataset_dict["clip_regions"] = self._cached_regions(dataset_dict, transforms, image_shape)

    def _cached_regions(self, dataset_dict, transforms, image_shape) -> Instances:
        regions = Instances(image_shape)
        image_id = dataset_dict["image_id"]
        if image_id not in self.cache:
            if not self.skip_missing_regions:
                raise KeyError(f"image {image_id} ({dataset_dict.get('file_name')}) is not in region cache "
                               f"{self.region_cache_dir}: rebuild the cache for this dataset, or set "
                               "DATASETS.VILD.SKIP_MISSING_REGIONS=True to train such images without ViLD-image")
            self.num_missing += 1
            log_every_n_seconds(logging.WARNING, f"{self.num_missing} images without cached regions so far", n=60)
            regions.proposal_boxes = Boxes(torch.zeros(0, 4))
            regions.clip_embeds = torch.zeros(0, self.cache.manifest["dim"], dtype=torch.float16)
            return regions
        boxes, embeds, _ = self.cache.get(image_id)
        m = self.num_cached_proposals
        boxes = Boxes(torch.from_numpy(transforms.apply_box(np.array(boxes[:m], dtype=np.float32))))
        boxes.clip(image_shape)
        keep = boxes.nonempty(threshold=1.0)
        regions.proposal_boxes = boxes[keep]
        regions.clip_embeds = torch.from_numpy(np.array(embeds[:m]))[keep]  # M' x D float16
        return regions
