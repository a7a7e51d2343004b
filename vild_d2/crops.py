"""Batched CLIP crops of regions: ``roi_align`` on decoded images instead of a PIL crop per box.

Shapes: N images, R regions, S the CLIP input resolution.
"""
from typing import Sequence

import torch
from torchvision.ops import roi_align

# CLIP's image normalisation (the same constants as clip.clip._transform), in 0-255 units.
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]) * 255.0
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]) * 255.0

__all__ = ["scale_boxes", "clip_crops", "CLIP_MEAN", "CLIP_STD"]


def scale_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """Grow (R x 4, XYXY) boxes about their centres by ``scale``."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)
    return torch.cat([centre - half, centre + half], dim=1)


def clip_crops(images: torch.Tensor, rois: torch.Tensor, size: int, scales: Sequence[float] = (1.0,)):
    """Crop, resize and CLIP-normalise regions for a CLIP image encoder.

    Args:
        images: N x 3 x H x W float RGB in 0-255 (images padded to a common size).
        rois: R x 5 ``(batch_index, x0, y0, x1, y1)`` in image pixels.
        size: output side S (the CLIP model's ``visual.input_resolution``).
        scales: context scales; each region is cropped once per scale.

    Returns:
        (len(scales) * R) x 3 x S x S, scale-major: rows ``[k*R:(k+1)*R]`` are scale ``k``.
        Parts of a crop outside the image are black before normalisation. ``sampling_ratio=0``
        averages every pixel of a bin, so large regions are downsampled without aliasing.
    """
    mean = CLIP_MEAN.to(images).view(1, 3, 1, 1)
    std = CLIP_STD.to(images).view(1, 3, 1, 1)
    all_rois = torch.cat(
        [torch.cat([rois[:, :1], scale_boxes(rois[:, 1:], s)], dim=1) for s in scales]
    )  # (len(scales) * R) x 5
    crops = roi_align(images, all_rois, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return (crops - mean) / std
