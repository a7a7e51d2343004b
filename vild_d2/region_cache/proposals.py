"""Proposal sources for the region cache: a Detectron2 proposal file or a trained detector/RPN.

A source is called with a dataset record and its decoded image (H x W x 3 uint8 RGB) and
returns (boxes R x 4 XYXY_ABS in original image coordinates, objectness R), float32 numpy.
"""
import os
import pickle
from typing import Tuple

import numpy as np
import torch
from detectron2.structures import BoxMode, ImageList
from torchvision.ops import nms

from ..visualize import convert_rgb

__all__ = ["select_proposals", "ProposalFileSource", "DetectorProposalSource", "detector_proposal_source"]


def select_proposals(boxes: np.ndarray, scores: np.ndarray, num: int, nms_thresh: float = 0.7,
                     min_size: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Drop tiny boxes, NMS, keep the top ``num`` by objectness (ties broken by input order)."""
    b, s = torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32)
    keep = ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)
    b, s = b[keep], s[keep]
    if nms_thresh < 1.0:
        order = nms(b, s, nms_thresh)
    else:
        order = torch.argsort(s, descending=True, stable=True)
    order = order[:num]
    return b[order].numpy(), s[order].numpy()


class ProposalFileSource:
    """Proposals from a Detectron2 ``PROPOSAL_FILES`` pickle (ids, boxes, objectness_logits, bbox_mode)."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            data = pickle.load(f)
        missing = {"ids", "boxes", "objectness_logits"} - set(data)
        if missing:
            raise ValueError(f"{path} is not a Detectron2 proposal file: keys {sorted(missing)} missing")
        mode = BoxMode(data.get("bbox_mode", BoxMode.XYXY_ABS))
        self.path = path
        self._index = {int(i): (np.asarray(b, np.float32), np.asarray(s, np.float32), mode)
                       for i, b, s in zip(data["ids"], data["boxes"], data["objectness_logits"])}

    def __call__(self, record, image):
        if int(record["image_id"]) not in self._index:
            raise KeyError(f"image {record['image_id']} ({record.get('file_name')}) has no proposals in {self.path}")
        boxes, scores, mode = self._index[int(record["image_id"])]
        return BoxMode.convert(boxes.reshape(-1, 4), mode, BoxMode.XYXY_ABS), scores


class DetectorProposalSource:
    """RPN proposals of a trained detector or ``ProposalNetwork`` (config + weights) run on each
    image at test size."""

    def __init__(self, cfg, weights: str, device: str = "cpu"):
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = device
        self.model = build_model(cfg).eval()
        DetectionCheckpointer(self.model).load(weights)
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def __call__(self, record, image):
        image = convert_rgb(image, self.input_format)
        h, w = image.shape[:2]
        resized = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(self.model.device)  # CHW
        normalized = (tensor - self.model.pixel_mean) / self.model.pixel_std
        images = ImageList.from_tensors([normalized], self.model.backbone.size_divisibility)
        features = self.model.backbone(images.tensor)
        proposals, _ = self.model.proposal_generator(images, features, None)
        p = proposals[0]
        scale = torch.tensor([w / resized.shape[1], h / resized.shape[0]] * 2)
        boxes = (p.proposal_boxes.tensor.cpu() * scale).numpy()  # back to original image coordinates
        return boxes, p.objectness_logits.cpu().numpy()


def detector_proposal_source(cfg, weights: str, num_proposals: int, device: str = "cpu") -> DetectorProposalSource:
    """The proposals of a trained detector / RPN config, at least ``num_proposals`` per image kept
    after its NMS (``MODEL.RPN.POST_NMS_TOPK_TEST`` raised when lower)."""
    if not weights or not os.path.isfile(weights):
        raise FileNotFoundError(f"proposal network weights {weights!r} not found: train it first "
                                "(train_net.py with its config), or pass the file that holds them")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = max(cfg.MODEL.RPN.POST_NMS_TOPK_TEST, num_proposals)
    return DetectorProposalSource(cfg, weights, device)
