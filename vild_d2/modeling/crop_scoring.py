"""CLIP on cropped regions at inference: the paper's two analysis rows (``MODEL.VILD.TEST_SCORES``
"clip" and "text+clip"). Each proposal is cropped at every ``MODEL.VILD.CROP_SCALES`` scale from
the image the detector sees, embedded by the CLIP image tower with the region cache's crop code
(:func:`vild_d2.crops.embed_regions`), and the scale embeddings are combined as the cache
combines them (``crops.CROP_COMBINATION``, as the region cache does). Classification against the
vocabulary is :class:`ViLDOutputLayers`'s.

Shapes: N images, R proposals (R_i of image i), D the CLIP embedding dimension.
"""
from typing import List, Sequence

import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, ImageList
from torch import nn

from ..crops import CROP_COMBINATION, embed_regions

__all__ = ["TEST_SCORES", "CropEmbedder"]

# "model": the MODE's heads; "clip": CLIP on the crops with the proposal's objectness;
# "text+clip": the text head ensembled with CLIP on the crops.
TEST_SCORES = ("model", "clip", "text+clip")


class CropEmbedder(nn.Module):
    """L2-normalised CLIP embeddings (R_i x D per image) of proposal crops, at inference.

    The CLIP tower is frozen and kept out of ``state_dict``: checkpoints of the detector neither
    hold nor expect it (a ViLD-text checkpoint is scored by CLIP as it is). It follows the
    images' device on first use.
    """

    @configurable
    def __init__(self, *, visual: nn.Module, pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 input_format: str, scales: Sequence[float] = (1.0, 1.5), combine: str = "sum",
                 batch_size: int = 256):
        """``combine``: how the scale embeddings are combined, as :func:`embed_regions` takes it."""
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"MODEL.VILD.TEST_SCORES crops need INPUT.FORMAT 'RGB' or 'BGR', got {input_format!r}")
        self._visual = (visual.eval().requires_grad_(False),)  # a tuple: not a submodule, so not in state_dict
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), False)
        self.to_rgb = input_format == "BGR"
        self.scales, self.combine, self.batch_size = tuple(scales), combine, batch_size

    @classmethod
    def from_config(cls, cfg):
        from ..clip_model import load_clip  # imports clip

        return {"visual": load_clip(cfg.MODEL.VILD.CLIP_MODEL, cfg.MODEL.DEVICE).visual,
                "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD, "input_format": cfg.INPUT.FORMAT,
                "scales": cfg.MODEL.VILD.CROP_SCALES, "combine": CROP_COMBINATION}

    @property
    def visual(self) -> nn.Module:
        return self._visual[0]

    @torch.no_grad()
    def forward(self, images: ImageList, boxes: Sequence[Boxes]) -> List[torch.Tensor]:
        """``images``: the detector's normalised, padded batch; ``boxes``: per image, in its pixels."""
        if next(self.visual.parameters()).device != images.tensor.device:
            self.visual.to(images.tensor.device)
        out = []
        for i, b in enumerate(boxes):
            h, w = images.image_sizes[i]
            image = images.tensor[i, :, :h, :w].float() * self.pixel_std + self.pixel_mean  # 3 x h x w, 0-255
            if self.to_rgb:
                image = image.flip(0)
            # R_i x D
            out.append(embed_regions(self.visual, image, b.tensor, self.scales, self.combine, self.batch_size))
        return out
