"""Batched CLIP crops of regions (``roi_align`` on decoded images instead of a PIL crop per box)
and their CLIP image embeddings.

Shapes: N images, R regions (M of one image), S the CLIP input resolution, D embedding dim.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

# CLIP's image normalisation (the same constants as clip.clip._transform), in 0-255 units.
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]) * 255.0
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]) * 255.0

__all__ = ["scale_boxes", "clip_crops", "embed_regions", "CROP_COMBINATION", "tower_dtype", "CLIP_MEAN", "CLIP_STD"]


def tower_dtype(visual: torch.nn.Module) -> torch.dtype:
    """The dtype a CLIP image tower takes as input: its first convolution's, which is what CLIP's own
    ``CLIP.dtype`` reads. ``clip.load`` on CUDA (``convert_weights``) turns convolutions, linear
    layers and projections to float16 but leaves ``class_embedding``, positional embeddings and
    LayerNorms in float32, so the first parameter of a ViT tower (``class_embedding``) is float32
    while its ``conv1`` is float16; a ResNet tower starts with ``conv1`` itself."""
    conv = getattr(visual, "conv1", None)
    if conv is not None:
        return conv.weight.dtype
    layers = [m.weight.dtype for m in visual.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    floats = [p.dtype for p in visual.parameters() if p.is_floating_point()]
    return (layers or floats or [torch.float32])[0]  # other towers: first layer, first parameter, or float32


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


# How the embeddings of a region's crop scales become one: "sum" (the sum of the normalised scale
# embeddings, renormalised: ViLD's 1x + 1.5x ensemble) or "first" (the first scale alone).
CROP_COMBINATION = "sum"


@torch.no_grad()
def embed_regions(visual, image: torch.Tensor, boxes: torch.Tensor, scales: Sequence[float], combine: str,
                  batch_size: int) -> torch.Tensor:
    """M x D combined, L2-normalised CLIP embeddings of ``boxes`` (M x 4) in ``image`` (3 x H x W, 0-255)."""
    device = next(visual.parameters()).device
    dtype = tower_dtype(visual)  # float16 for clip.load on CUDA, whatever the first parameter's dtype
    rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1).to(device)  # M x 5
    image = image.to(device=device, dtype=torch.float32)[None]
    out = []
    step = max(1, batch_size // len(scales))  # regions per forward: step * S crops
    for start in range(0, len(rois), step):
        chunk = rois[start:start + step]
        crops = clip_crops(image, chunk, visual.input_resolution, scales)  # (S * m) x 3 x r x r
        emb = F.normalize(visual(crops.to(dtype)).float(), dim=-1).view(len(scales), len(chunk), -1)  # S x m x D
        out.append(emb[0] if combine == "first" else F.normalize(emb.sum(0), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, visual.output_dim, device=device)
