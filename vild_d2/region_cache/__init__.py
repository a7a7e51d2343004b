"""Offline CLIP region-embedding cache for ViLD-image: builder, storage and proposal sources."""
from .builder import RegionCacheSettings, build_region_cache
from .proposals import (DetectorProposalSource, ProposalFileSource, detector_proposal_source, read_proposals,
                        save_proposals, select_proposals)
from .storage import CacheMismatchError, CorruptCacheError, RegionCache, verify_region_cache

__all__ = ["RegionCacheSettings", "build_region_cache", "DetectorProposalSource", "detector_proposal_source",
           "ProposalFileSource", "read_proposals", "save_proposals", "select_proposals", "CacheMismatchError", "CorruptCacheError", "RegionCache",
           "verify_region_cache"]
