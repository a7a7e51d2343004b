"""Why is APr low? Zero-shot accuracy of a trained model's region embeddings.

:func:`object_embedding_accuracy`: each ground-truth box of a validation image goes through the
backbone, the box pooler and box head, and each region-embedding head (``text``; ``image`` as
well in ensemble mode); its embedding is classified against the inference vocabulary (K x D):
accuracy for novel and base objects, and how often the text head's softmax over K + 1 puts the
object into background. :func:`distillation_fit` asks whether ViLD-image fitted its targets: on
the model's own training regions (the region cache), the cosine between the distilled region
embedding and the cached CLIP embedding, and how often each names the object right.
Shapes: G objects of an image, M cached regions, C box-head features, K classes, D embedding dim.
"""
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes

from ..data.images import convert_rgb
from ..data.records import annotation_boxes, match_regions

__all__ = ["object_embedding_accuracy", "distillation_fit"]


def _box_features(model, record: dict, boxes: Boxes, image_format: str) -> Dict[str, torch.Tensor]:
    """Box-head features (B x C) of ``boxes`` (B x 4, XYXY in the record's image) for the ``text``
    and ``image`` heads; the image entry is the text one without a separate image box head."""
    heads = model.roi_heads
    image = convert_rgb(read_image(record["file_name"], format="RGB"), image_format)
    images = model.preprocess_image([{"image": torch.from_numpy(image.transpose(2, 0, 1).copy())}])
    features = model.backbone(images.tensor)
    pooled = heads.box_pooler([features[f] for f in heads.box_in_features], [boxes])  # B x C' x S x S
    x = {"text": heads.box_head(pooled)}  # B x C
    x["image"] = heads.image_box_head(pooled) if heads.image_box_head is not None else x["text"]
    return x


@torch.no_grad()
def object_embedding_accuracy(model, records: List[dict], novel_ids, image_format: str = "RGB") -> Dict:
    """``model``: a ViLD model in eval mode with its inference vocabulary set; ``records``: dataset
    dicts whose ``category_id`` index that vocabulary. Returns {head: {novel|base: accuracy}} for the
    heads of the mode (``text``: trained by ViLD-text, in ``vild`` mode by both losses; ``image``),
    plus ``text_background`` {novel|base: share of objects the text head calls background}."""
    predictor = model.roi_heads.box_predictor
    names = {"text": ["text"], "vild": ["text"], "image": ["image"], "ensemble": ["text", "image"]}[predictor.mode]
    novel = set(novel_ids)
    hits = {h: {"novel": [], "base": []} for h in names + (["text_background"] if "text" in names else [])}
    for r in records:
        if not r["annotations"]:
            continue
        gt = annotation_boxes(r, device=predictor.class_embeddings.device)
        x = _box_features(model, r, gt, image_format)
        groups = ["novel" if a["category_id"] in novel else "base" for a in r["annotations"]]
        labels = torch.tensor([a["category_id"] for a in r["annotations"]], device=gt.device)
        for h in names:
            pred = (predictor.embed(x[h], h) @ predictor.class_embeddings.t()).argmax(1)  # G
            for g, ok in zip(groups, (pred == labels).tolist()):
                hits[h][g].append(ok)
        if "text" in names:
            logits = predictor.text_logits(predictor.embed(x["text"], "text"))  # G x (K + 1)
            background = logits.argmax(1) == predictor.class_embeddings.shape[0]
            for g, bg in zip(groups, background.tolist()):
                hits["text_background"][g].append(bg)
    return {h: {g: float(np.mean(v)) if v else float("nan") for g, v in d.items()} for h, d in hits.items()}


@torch.no_grad()
def distillation_fit(model, cache, records: List[dict], novel_ids, image_format: str = "RGB",
                     iou: float = 0.5, background_iou: float = 0.1) -> Dict[str, Dict[str, float]]:
    """How closely the distilled head (``image``; the one head in ``vild`` and ``image`` modes)
    reproduces the cached CLIP embeddings of its training regions.

    ``model``: a ViLD model in eval mode whose inference vocabulary the records' ``category_id``
    index (all classes); ``cache``: its region cache (:class:`~vild_d2.region_cache.RegionCache`);
    ``records``: the training images with every object annotated, novel ones included. A region
    belongs to the object it overlaps most at IoU >= ``iou`` (``novel``/``base``) or is
    ``background`` when it overlaps every object below ``background_iou``. Returns per group the
    mean ``cosine`` between region and CLIP embedding, the number of ``regions``, and for objects
    the share named right by the region embedding (``student_accuracy``) and by CLIP itself
    (``clip_accuracy``)."""
    predictor = model.roi_heads.box_predictor
    head = "image" if predictor.mode in ("image", "ensemble") else "text"
    vocabulary = predictor.class_embeddings  # K x D
    novel = set(novel_ids)
    fit = {g: {"cosine": [], "student": [], "clip": []} for g in ("novel", "base", "background")}
    for r in records:
        if r["image_id"] not in cache:
            continue
        boxes, embeds, _ = cache.get(r["image_id"])
        if not len(boxes):
            continue
        regions = Boxes(torch.from_numpy(np.array(boxes, dtype=np.float32)).to(vocabulary.device))  # M x 4
        target = F.normalize(torch.from_numpy(np.array(embeds, dtype=np.float32)).to(vocabulary.device), dim=1)
        student = predictor.embed(_box_features(model, r, regions, image_format)[head], head)  # M x D
        cosine = (student * target).sum(1).tolist()
        named = [(student @ vocabulary.t()).argmax(1).tolist(), (target @ vocabulary.t()).argmax(1).tolist()]
        _, best, category = match_regions(r, regions)  # M, M
        for m, (v, c) in enumerate(zip(best.tolist(), category.tolist())):
            if v >= iou:
                g = "novel" if c in novel else "base"
                fit[g]["student"].append(named[0][m] == c)
                fit[g]["clip"].append(named[1][m] == c)
            elif v < background_iou:
                g = "background"
            else:
                continue
            fit[g]["cosine"].append(cosine[m])
    out = {}
    for g, d in fit.items():
        out[g] = {"cosine": float(np.mean(d["cosine"])) if d["cosine"] else float("nan"), "regions": len(d["cosine"])}
        if g != "background":
            out[g].update({f"{k}_accuracy": float(np.mean(d[k])) if d[k] else float("nan")
                           for k in ("student", "clip")})
    return out
