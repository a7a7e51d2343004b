"""ViLD ROI heads: StandardROIHeads with a ViLD box predictor and the ViLD-image distillation loss.

Shapes: N images, R sampled proposals, M cached CLIP proposals per image, D embedding dim.
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads, build_box_head
from detectron2.structures import Boxes, Instances
from torch import nn

from .crop_scoring import CropEmbedder
from .output_layers import ViLDOutputLayers

__all__ = ["ViLDROIHeads"]


@ROI_HEADS_REGISTRY.register()
class ViLDROIHeads(StandardROIHeads):
    """Class-agnostic box and mask branches; classification by :class:`ViLDOutputLayers`.

    In training, ``clip_regions`` (one ``Instances`` per image with ``proposal_boxes`` and
    ``clip_embeds`` (M x D), attached by the dataset mapper) are pooled through the same box
    head and give the ViLD-image loss; they get no box, mask or text loss.

    ViLD-ensemble (``MODEL.VILD.MODE "ensemble"``) has a separate ``image_box_head`` (the box
    head's architecture, its own weights), trained by ViLD-image alone: the distilled embeddings
    share no box-head features with the text head, which learns to call unlabeled novel objects
    background. The pooled features are shared.
    """

    @configurable
    def __init__(self, *, image_loss_weight: float = 0.5, image_box_head: Optional[nn.Module] = None,
                 crop_embedder: Optional[CropEmbedder] = None, **kwargs):
        """``image_box_head``: the separate box head of ViLD-ensemble's image embeddings (None:
        one box head serves both); ``crop_embedder``: CLIP on the proposals' crops at inference
        (``MODEL.VILD.TEST_SCORES`` "clip" / "text+clip"; None: the heads score)."""
        super().__init__(**kwargs)
        self.image_loss_weight = image_loss_weight
        self.image_box_head = image_box_head
        self.crop_embedder = crop_embedder

    @classmethod
    def from_config(cls, cfg, input_shape):
        if not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK and cfg.MODEL.MASK_ON:
            raise ValueError("ViLD needs a class-agnostic mask head: set MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK=True")
        if not cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG:
            raise ValueError("ViLD needs class-agnostic box regression: set "
                             "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG=True")
        if cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES:
            raise ValueError("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES is not supported with ViLDROIHeads")
        ret = super().from_config(cfg, input_shape)
        ret["image_loss_weight"] = cfg.MODEL.VILD.IMAGE_LOSS_WEIGHT
        if cfg.MODEL.VILD.TEST_SCORES != "model":
            ret["crop_embedder"] = CropEmbedder(cfg)
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = ViLDOutputLayers(cfg, ret["box_head"].output_shape)
        if cfg.MODEL.VILD.MODE == "ensemble" and cfg.MODEL.VILD.ENSEMBLE_IMAGE_BOX_HEAD:
            resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
            channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels
            ret["image_box_head"] = build_box_head(cfg, ShapeSpec(channels=channels, height=resolution,
                                                                  width=resolution))
        return ret

    @property
    def uses_image_loss(self) -> bool:
        return self.box_predictor.mode != "text"

    def forward(self, images, features: Dict[str, torch.Tensor], proposals: List[Instances],
                targets: Optional[List[Instances]] = None, clip_regions: Optional[List[Instances]] = None):
        if not self.training and self.crop_embedder is not None:
            if proposals and not proposals[0].has("objectness_logits"):  # checked before CLIP's work
                raise ValueError("MODEL.VILD.TEST_SCORES crop modes need the proposals' objectness_logits")
            for p, emb in zip(proposals, self.crop_embedder(images, [p.proposal_boxes for p in proposals])):
                p.crop_embeds = emb  # R_i x D, read by _forward_box
        if not self.training or not self.uses_image_loss:
            return super().forward(images, features, proposals, targets)
        if clip_regions is None:
            raise ValueError(
                f"MODEL.VILD.MODE={self.box_predictor.mode!r} needs cached CLIP regions in training: set "
                "MODEL.VILD.REGION_CACHE_DIR (tools/build_region_cache.py), or use MODE 'text'")
        # StandardROIHeads.forward in training, with the box branch also serving ViLD-image.
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = self._forward_box_and_image(features, proposals, clip_regions)
        losses.update(self._forward_mask(features, proposals))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _forward_box_and_image(self, features: Dict[str, torch.Tensor], proposals: List[Instances],
                               clip_regions: List[Instances]) -> Dict[str, torch.Tensor]:
        """Box losses on the sampled proposals and the ViLD-image loss on the cached regions, from
        one pooling and one box-head pass over both (one roi_align call per level, not two)."""
        if sum(len(r) for r in clip_regions) == 0:
            losses = self._forward_box(features, proposals)
            # Zero that still reaches the image head, so DDP sees a gradient for it.
            losses["loss_image"] = sum(p.sum() for p in self._image_parameters()) * 0.0
            return losses
        boxes = [Boxes.cat([p.proposal_boxes, r.proposal_boxes]) for p, r in zip(proposals, clip_regions)]
        sizes = [n for p, r in zip(proposals, clip_regions) for n in (len(p), len(r))]  # R_0, M_0, R_1, M_1, ...
        pooled = self.box_pooler([features[f] for f in self.box_in_features], boxes)  # (sum R + sum M) x C' x S x S
        if self.image_box_head is None:
            text_features, image_features = _split_rows(self.box_head(pooled), sizes)  # sum R x C, sum M x C
        else:
            text_pooled, image_pooled = _split_rows(pooled, sizes)
            text_features, image_features = self.box_head(text_pooled), self.image_box_head(image_pooled)
        predictions = self.box_predictor(text_features)
        losses = self.box_predictor.losses(predictions, proposals)
        # float32 first: under bf16 autocast, cat rejects the fp16 cache embeddings
        target = torch.cat([r.clip_embeds.float() for r in clip_regions])  # (sum M) x D
        losses["loss_image"] = self.image_loss_weight * self.box_predictor.image_loss(image_features, target)
        return losses

    def _image_parameters(self) -> List[nn.Parameter]:
        extra = list(self.image_box_head.parameters()) if self.image_box_head is not None else []
        return self.box_predictor.image_parameters() + extra

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        if self.training or (self.box_predictor.mode != "ensemble" and self.crop_embedder is None):
            return super()._forward_box(features, proposals)
        # Inference with ViLD-ensemble's image head (one box head with two projections when
        # ENSEMBLE_IMAGE_BOX_HEAD is off) or with CLIP on the crops, on the same pooled features.
        pooled = self.box_pooler([features[f] for f in self.box_in_features], [p.proposal_boxes for p in proposals])
        box_features = self.box_head(pooled)  # R x C
        crops, image_features = None, None
        if self.crop_embedder is not None:
            crops = (torch.cat([p.crop_embeds for p in proposals]), torch.cat([p.objectness_logits for p in proposals]))
        elif self.image_box_head is not None:
            image_features = self.image_box_head(pooled)  # R x C
        else:
            image_features = box_features
        predictions = self.box_predictor(box_features, image_x=image_features, crops=crops)
        pred_instances, _ = self.box_predictor.inference(predictions, proposals)
        return pred_instances


def _split_rows(x: torch.Tensor, sizes: List[int]):
    """Rows of ``x`` laid out in blocks of ``sizes`` (R_0, M_0, R_1, M_1, ...) -> (the R blocks, the
    M blocks), each concatenated. Slicing by lengths known on the host: a boolean mask would make
    the GPU report its size back every step."""
    parts = x.split(sizes)
    return torch.cat(parts[0::2]), torch.cat(parts[1::2])
