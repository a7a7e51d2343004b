"""How good are the distillation targets? Zero-shot accuracy of cached CLIP embeddings, and
how many objects the cached proposals cover at all.

For every cached proposal that overlaps a ground-truth object (IoU >= threshold), the cached
embedding is classified against a text classifier (K x D); accuracy is reported for novel and
base objects, with the share of objects that some cached proposal overlaps (an object no
proposal covers is never distilled). Shapes: M cached proposals, G objects of an image,
K classes, D dim.
"""
from typing import Dict, List, Sequence

import numpy as np
import torch
from detectron2.structures import Boxes

from ..data.records import match_regions
from ..region_cache.storage import RegionCache

__all__ = ["cached_embedding_accuracy"]


def cached_embedding_accuracy(cache: RegionCache, records: List[dict], text_embeddings: torch.Tensor,
                              novel_ids: Sequence[int], iou_threshold: float = 0.5) -> Dict:
    """``records``: dataset dicts whose ``category_id`` index ``text_embeddings`` (all classes)."""
    novel = set(novel_ids)
    hits = {"novel": [], "base": []}
    covered = {"novel": [], "base": []}
    overlapping, total = 0, 0
    for r in records:
        if r["image_id"] not in cache or not r["annotations"]:
            continue
        boxes, embeds, _ = cache.get(r["image_id"])
        groups = ["novel" if a["category_id"] in novel else "base" for a in r["annotations"]]
        if not len(boxes):  # no cached proposal: none of its objects is covered
            for g in groups:
                covered[g].append(False)
            continue
        iou, best, category = match_regions(r, Boxes(torch.from_numpy(np.array(boxes))))  # M x G, M, M
        for g, hit in zip(groups, (iou.max(0).values >= iou_threshold).tolist()):
            covered[g].append(hit)
        pred = (torch.from_numpy(np.array(embeds, dtype=np.float32)) @ text_embeddings.float().t()).argmax(1)
        for k in torch.nonzero(best >= iou_threshold).flatten().tolist():
            c = int(category[k])
            hits["novel" if c in novel else "base"].append(int(pred[k]) == c)
        overlapping += int((best >= iou_threshold).sum())
        total += len(boxes)
    out = {k: {"accuracy": float(np.mean(v)) if v else float("nan"), "proposals": len(v),
               "objects_covered": float(np.mean(covered[k])) if covered[k] else float("nan"),
               "objects": len(covered[k])} for k, v in hits.items()}
    out["share_overlapping_objects"] = overlapping / max(total, 1)
    return out
