"""Offline CLIP region-embedding cache for ViLD-image.

This package's own namespace is the cache's storage format (:mod:`.storage`: read, verify), which
the data loader needs; building it (:mod:`.builder`, proposal sources in :mod:`.proposals`, the
command line in :mod:`.cli`) runs detectors and CLIP and sits higher: import those by module."""
from .storage import CorruptCacheError, RegionCache, verify_region_cache

__all__ = ["CorruptCacheError", "RegionCache", "verify_region_cache"]
