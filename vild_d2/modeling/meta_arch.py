"""ViLDRCNN: GeneralizedRCNN that also hands each image's cached CLIP regions to the ROI heads."""
from typing import Dict, List

import torch
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

__all__ = ["ViLDRCNN"]


@META_ARCH_REGISTRY.register()
class ViLDRCNN(GeneralizedRCNN):
    """Training reads ``batched_inputs[i]["clip_regions"]`` (``Instances`` with
    ``proposal_boxes`` and ``clip_embeds``, from ``ViLDDatasetMapper``) and passes them to
    ``roi_heads(..., clip_regions=...)``. Inference is GeneralizedRCNN's."""

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        clip_regions = None
        if "clip_regions" in batched_inputs[0]:
            clip_regions = [x["clip_regions"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances, clip_regions=clip_regions)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        return {**detector_losses, **proposal_losses}
