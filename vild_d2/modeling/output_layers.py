"""ViLD box predictor: class-agnostic box regression plus region embeddings classified against
frozen CLIP text embeddings.

Shapes: R regions, K classes of the active vocabulary, D the CLIP embedding dimension,
C the box-head feature size. Class index K (the last) is background, as everywhere in
Detectron2.
"""
import contextlib
import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, _log_classification_stats
from torch import nn

from .crop_scoring import TEST_SCORES
from .vocabulary import resolve_vocabularies

logger = logging.getLogger(__name__)

MODES = ("text", "image", "vild", "ensemble")

__all__ = ["ViLDOutputLayers", "MODES"]


def _float32(t: torch.Tensor):
    """Autocast off on ``t``'s device (CPU bf16, CUDA fp16): cosine logits at temperature 0.01,
    softmax and the L1 loss need float32; callers also cast their inputs with ``.float()``."""
    return torch.autocast(device_type=t.device.type, enabled=False)


class ViLDOutputLayers(FastRCNNOutputLayers):
    """Region embeddings in CLIP space instead of a linear classifier.

    * ``projection``: C -> D, the region-embedding head (ViLD-text, and ViLD-image in ``vild``
      mode); ``image_projection``: C -> D on the features of the separate image box head,
      trained only by ViLD-image (``ensemble``).
    * Classifier: L2-normalised text embeddings (K x D, frozen, non-persistent buffers: one
      vocabulary for training, one for inference) and a learned background embedding (D).
      Logits = cosine similarity / temperature, R x (K + 1), background last.
    * :meth:`forward` returns ``(logits, deltas)`` in training (logits None in ``image`` mode, which
      has no text loss and no background embedding) and ``(probabilities, deltas)``
      at inference, where the probabilities already follow the mode (ViLD-ensemble's
      geometric mean in ``ensemble``), or ``test_scores`` ("clip", "text+clip": CLIP on the
      proposals' crops, embedded by :class:`CropEmbedder` and handed in as ``crops``).
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        train_embeddings: torch.Tensor,
        test_embeddings: torch.Tensor,
        test_class_names: Optional[Sequence[str]] = None,
        novel_class_ids: Sequence[int] = (),
        mode: str = "vild",
        temperature: float = 0.01,
        text_loss_weight: float = 1.0,
        ensemble_weight: float = 2.0 / 3.0,
        test_scores: str = "model",
        **kwargs,
    ):
        if mode not in MODES:
            raise ValueError(f"MODEL.VILD.MODE must be one of {MODES}, got {mode!r}")
        if test_scores not in TEST_SCORES:
            raise ValueError(f"MODEL.VILD.TEST_SCORES must be one of {TEST_SCORES}, got {test_scores!r}")
        if test_scores == "text+clip" and mode == "image":
            raise ValueError("MODEL.VILD.TEST_SCORES 'text+clip' needs a text head: MODE 'image' has none (use 'clip')")
        if not kwargs.pop("cls_agnostic_bbox_reg", True):
            raise ValueError("ViLD needs class-agnostic box regression: set "
                             "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG=True")
        kwargs["num_classes"] = len(train_embeddings)
        super().__init__(input_shape, cls_agnostic_bbox_reg=True, **kwargs)
        del self.cls_score  # classification is by text embeddings
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        dim = train_embeddings.shape[1]
        self.mode = mode
        self.temperature = temperature
        self.ensemble_weight = ensemble_weight
        self.test_scores = test_scores
        self.loss_weight["loss_cls"] = text_loss_weight
        self.projection = nn.Linear(input_size, dim)
        self.image_projection = nn.Linear(input_size, dim) if mode == "ensemble" else None
        # Starts at the training vocabulary's mean direction, so that at initialisation every
        # class and background score about 1 / (K + 1), as Detectron2's linear classifier does; a
        # random direction puts the background logit up to |cos gap| / temperature away from them.
        # ViLD-image has no text loss and no background score: a parameter there would get no
        # gradient, which stops DDP at its second iteration, so the mode has none.
        self.bg_embedding = None if mode == "image" else nn.Parameter(
            F.normalize(F.normalize(train_embeddings.float(), dim=1).mean(0), dim=0))
        self.register_buffer("train_embeddings", F.normalize(train_embeddings.float(), dim=1), persistent=False)
        self.register_buffer("test_embeddings", torch.empty(0, dim), persistent=False)
        self.register_buffer("novel_mask", torch.empty(0, dtype=torch.bool), persistent=False)
        self.set_vocabulary(test_embeddings, test_class_names, novel_class_ids)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(resolve_vocabularies(cfg))
        ret.update(
            mode=cfg.MODEL.VILD.MODE,
            temperature=cfg.MODEL.VILD.TEMPERATURE,
            text_loss_weight=cfg.MODEL.VILD.TEXT_LOSS_WEIGHT,
            ensemble_weight=cfg.MODEL.VILD.ENSEMBLE_WEIGHT,
            test_scores=cfg.MODEL.VILD.TEST_SCORES,
        )
        return ret

    def set_vocabulary(self, embeddings: torch.Tensor, class_names: Optional[Sequence[str]] = None,
                       novel_class_ids: Sequence[int] = ()) -> None:
        """Swap the inference vocabulary (K x D text embeddings); predicted classes then index it.

        ``novel_class_ids`` (indices into it) get the novel weighting of ViLD-ensemble.
        """
        if embeddings.dim() != 2 or embeddings.shape[1] != self.projection.out_features:
            raise ValueError(f"text embeddings of shape {tuple(embeddings.shape)} do not fit this model's "
                             f"region embeddings (D={self.projection.out_features}); rebuild them with the "
                             "CLIP model the detector was trained with (MODEL.VILD.CLIP_MODEL)")
        k = len(embeddings)
        if class_names is not None and len(class_names) != k:
            raise ValueError(f"{len(class_names)} class names for {k} text embeddings")
        if any(not 0 <= i < k for i in novel_class_ids):
            raise ValueError(f"novel class ids {list(novel_class_ids)} out of range for {k} classes")
        device = self.projection.weight.device
        self.test_embeddings = F.normalize(embeddings.float(), dim=1).to(device)
        self.novel_mask = torch.zeros(k, dtype=torch.bool, device=device)
        self.novel_mask[list(novel_class_ids)] = True
        self.test_class_names = list(class_names) if class_names is not None else None
        if not self.training:
            self.num_classes = k

    @contextlib.contextmanager
    def vocabulary_tensors(self, embeddings: torch.Tensor, novel_mask: torch.Tensor) -> Iterator[None]:
        """Inference inside the block classifies against ``embeddings`` (K x D) with ViLD-ensemble's
        novel weighting where ``novel_mask`` (K bools) is set, the set vocabulary back afterwards.
        Unlike :meth:`set_vocabulary` it takes tensors as they are, without host-side checks, so that
        they can be the inputs of a traced graph whose K is free at run time (:mod:`vild_d2.export`)."""
        saved = self.test_embeddings, self.novel_mask
        self.test_embeddings = F.normalize(embeddings.float(), dim=1)
        self.novel_mask = novel_mask.to(torch.bool)
        try:
            yield
        finally:
            self.test_embeddings, self.novel_mask = saved

    def train(self, mode: bool = True):
        super().train(mode)
        self.num_classes = len(self.train_embeddings if mode else self.test_embeddings)
        return self

    @property
    def class_embeddings(self) -> torch.Tensor:
        """K x D text embeddings of the active vocabulary (training or inference)."""
        return self.train_embeddings if self.training else self.test_embeddings

    def embed(self, x: torch.Tensor, head: str = "text") -> torch.Tensor:
        """R x D L2-normalised region embeddings from box-head features (R x C...)."""
        layer = self.image_projection if head == "image" and self.image_projection is not None else self.projection
        return F.normalize(layer(x.flatten(1)).float(), dim=1)  # float32 under autocast too

    def text_logits(self, emb: torch.Tensor) -> torch.Tensor:
        """R x (K + 1) cosine logits against the vocabulary and the background embedding."""
        classifier = torch.cat([self.class_embeddings, F.normalize(self.bg_embedding, dim=0)[None]])
        with _float32(emb):
            return emb.float() @ classifier.t() / self.temperature

    def forward(self, x, image_x: Optional[torch.Tensor] = None,
                crops: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        """``x``: R x C box-head features; ``image_x``: R x C features of the image box head,
        needed for ViLD-ensemble inference; ``crops``: (R x D CLIP crop embeddings, R proposal
        objectness logits), needed for the ``test_scores`` crop modes."""
        deltas = self.bbox_pred(x.flatten(1))
        if self.training:  # ViLD-image trains no text logits (its loss is image_loss)
            return (None if self.mode == "image" else self.text_logits(self.embed(x, "text"))), deltas
        emb = self.embed(x, "text")
        if self.test_scores != "model":
            if crops is None:
                raise ValueError(f"MODEL.VILD.TEST_SCORES={self.test_scores!r} needs CLIP crop embeddings: "
                                 "use ViLDROIHeads, which computes them")
            return self.crop_probabilities(emb, *crops), deltas
        return self.class_probabilities(emb, image_x), deltas

    def class_probabilities(self, emb: torch.Tensor, image_x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """R x (K + 1) inference scores of the mode, float32 also under autocast; column K
        (background) is ignored downstream."""
        if self.mode == "ensemble" and image_x is None:
            raise ValueError("ViLD-ensemble inference needs the image box head's features (image_x)")
        image_emb = self.embed(image_x, "image") if self.mode == "ensemble" else emb
        with _float32(emb):
            if self.mode in ("text", "vild"):
                return F.softmax(self.text_logits(emb), dim=1)
            p_image = self.vocabulary_probabilities(image_emb)  # R x K
            if self.mode == "image":
                return F.pad(p_image, (0, 1))
            return self.ensemble(F.softmax(self.text_logits(emb), dim=1), p_image)

    def vocabulary_probabilities(self, emb: torch.Tensor) -> torch.Tensor:
        """R x K softmax of cosine / temperature against the vocabulary alone (no background):
        the image head's and CLIP's class probabilities. ``emb``: R x D, L2-normalised."""
        with _float32(emb):
            return F.softmax(emb.float() @ self.class_embeddings.t() / self.temperature, dim=1)

    def ensemble(self, p_text: torch.Tensor, p_other: torch.Tensor) -> torch.Tensor:
        """ViLD-ensemble's geometric mean: class k scores p_text^l * p_other^(1-l), l =
        ENSEMBLE_WEIGHT for base classes and 1 - ENSEMBLE_WEIGHT for novel ones. ``p_text``:
        R x (K + 1) (background last, kept as the last column); ``p_other``: R x K."""
        lam = torch.where(self.novel_mask, 1 - self.ensemble_weight, self.ensemble_weight)  # K
        combined = p_text[:, :-1] ** lam * p_other ** (1 - lam)
        return torch.cat([combined, p_text[:, -1:]], dim=1)

    def crop_probabilities(self, emb: torch.Tensor, crop_embeds: torch.Tensor, objectness_logits: torch.Tensor):
        """R x (K + 1) scores from CLIP on the proposals' crops (``crop_embeds``, R x D). "clip":
        sqrt(p_clip(k) * sigmoid(objectness)), the class probability and the proposal's objectness
        in a geometric mean (CLIP has no background class), background column 0; "text+clip":
        :meth:`ensemble` of the text head's softmax and p_clip. p_clip: softmax over the K classes
        of cosine / temperature."""
        with _float32(emb):
            p_clip = self.vocabulary_probabilities(F.normalize(crop_embeds.float(), dim=1))  # R x K
            if self.test_scores == "clip":
                return F.pad((p_clip * torch.sigmoid(objectness_logits.float())[:, None]).sqrt(), (0, 1))
            return self.ensemble(F.softmax(self.text_logits(emb), dim=1), p_clip)

    def predict_probs(self, predictions, proposals):
        probs, _ = predictions
        return probs.split([len(p) for p in proposals])

    def losses(self, predictions, proposals) -> Dict[str, torch.Tensor]:
        """ViLD-text cross-entropy (modes text, vild, ensemble) and class-agnostic box loss."""
        logits, deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals]) if proposals else torch.empty(0, dtype=torch.long)
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals]) if proposals else deltas.new_zeros(0, 4)
        gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals]) \
            if proposals else deltas.new_zeros(0, 4)
        losses = {"loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, deltas, gt_classes)}
        if self.mode != "image":
            _log_classification_stats(logits, gt_classes)  # fast_rcnn/cls_accuracy, fg_cls_accuracy, false_negative
            losses["loss_cls"] = cross_entropy(logits, gt_classes, reduction="mean")
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def image_loss(self, x: torch.Tensor, clip_embeds: torch.Tensor) -> torch.Tensor:
        """ViLD-image L1 loss: sum over D of |region embedding - CLIP embedding|, mean over R
        (both L2-normalised). ``x``: R x C box-head features of cached proposals."""
        emb = self.embed(x, "image")
        if clip_embeds.shape[1] != emb.shape[1]:
            raise ValueError(f"the region cache holds D={clip_embeds.shape[1]} CLIP embeddings but the text embeddings "
                             f"have D={emb.shape[1]}: build both with the same MODEL.VILD.CLIP_MODEL")
        with _float32(emb):
            target = F.normalize(clip_embeds.float(), dim=1)
            return (emb - target).abs().sum(1).mean()

    def image_parameters(self) -> List[nn.Parameter]:
        """Parameters trained by ViLD-image (used to keep the graph alive with zero regions)."""
        layer = self.image_projection if self.image_projection is not None else self.projection
        return list(layer.parameters())
