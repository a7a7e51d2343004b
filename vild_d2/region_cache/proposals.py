"""Proposal sources for the region cache: a proposal file or a trained detector/RPN.

A source is called with a dataset record and its decoded image (H x W x 3 uint8 RGB) and
returns (boxes R x 4 XYXY_ABS in original image coordinates, objectness R), float32 numpy.

Proposal files are ``.npz`` (read without unpickling): ``ids`` N, ``counts`` N, ``boxes`` P x 4,
``objectness_logits`` P, ``bbox_mode`` (a Detectron2 ``BoxMode`` value), where P = sum of counts.
Detectron2's ``PROPOSAL_FILES`` pickles are read only when asked to (``allow_pickle``), as plain
data (:func:`vild_d2.artifacts.restricted_unpickle`), and :func:`save_proposals` converts them.
"""
import logging
import os
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import BoxMode, ImageList
from torchvision.ops import nms

from ..artifacts import atomic_path, restricted_unpickle
from ..data.images import convert_rgb

logger = logging.getLogger(__name__)

__all__ = ["select_proposals", "ProposalFileSource", "DetectorProposalSource", "detector_proposal_source",
           "read_proposals", "save_proposals"]


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


def read_proposals(path: str, allow_pickle: bool = False) -> Dict[int, Tuple[np.ndarray, np.ndarray, BoxMode]]:
    """{image id: (boxes R x 4, objectness R, box mode)} of a ``.npz`` proposal file, or with
    ``allow_pickle`` of a Detectron2 ``PROPOSAL_FILES`` pickle."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"proposal file {path} not found")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise ValueError(f"{path} is not a readable .npz proposal file ({e})") from e
        missing = {"ids", "counts", "boxes", "objectness_logits"} - set(data)
        if missing:
            raise ValueError(f"{path} lacks arrays {sorted(missing)}: write it with "
                             "vild_d2.region_cache.save_proposals or tools/convert_proposals.py")
        counts = data["counts"].astype(np.int64)
        if counts.sum() != len(data["boxes"]) or len(data["boxes"]) != len(data["objectness_logits"]):
            raise ValueError(f"{path}: counts sum to {counts.sum()} but it holds {len(data['boxes'])} boxes and "
                             f"{len(data['objectness_logits'])} scores; the file is truncated or inconsistent")
        ends = np.cumsum(counts)
        boxes = np.split(data["boxes"].reshape(-1, 4), ends[:-1])  # N arrays of R_i x 4
        scores = np.split(data["objectness_logits"].reshape(-1), ends[:-1])
        mode = BoxMode(int(data.get("bbox_mode", BoxMode.XYXY_ABS)))
        return {int(i): (b.astype(np.float32), s.astype(np.float32), mode)
                for i, b, s in zip(data["ids"], boxes, scores)}
    if not allow_pickle:
        raise ValueError(f"{path} is not an .npz proposal file. Pickled proposal files can run code when loaded: "
                         "convert it with tools/convert_proposals.py, or pass --allow-pickle to read it as plain data")
    logger.warning("reading pickled proposals %s as plain data (arrays, numbers, strings only)", path)
    data = restricted_unpickle(path)
    missing = {"ids", "boxes", "objectness_logits"} - set(data)
    if missing:
        raise ValueError(f"{path} is not a Detectron2 proposal file: keys {sorted(missing)} missing")
    mode = BoxMode(int(data.get("bbox_mode", BoxMode.XYXY_ABS)))
    return {int(i): (np.asarray(b, np.float32).reshape(-1, 4), np.asarray(s, np.float32).reshape(-1), mode)
            for i, b, s in zip(data["ids"], data["boxes"], data["objectness_logits"])}


def save_proposals(path, ids: Sequence[int], boxes: Sequence[np.ndarray], objectness: Sequence[np.ndarray],
                   bbox_mode: BoxMode = BoxMode.XYXY_ABS) -> Path:
    """Write a ``.npz`` proposal file (atomically): per image ``boxes`` R_i x 4 and ``objectness`` R_i."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: proposal files end with .npz")
    with atomic_path(path) as tmp:
        np.savez(tmp, ids=np.asarray(ids, np.int64), counts=np.array([len(b) for b in boxes], np.int64),
                 boxes=np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes] or [np.zeros((0, 4))]),
                 objectness_logits=np.concatenate([np.asarray(s, np.float32).reshape(-1) for s in objectness]
                                                  or [np.zeros(0)]),
                 bbox_mode=np.int64(int(bbox_mode)))
    return path


class ProposalFileSource:
    """Proposals from a proposal file (:func:`read_proposals`)."""

    def __init__(self, path: str, allow_pickle: bool = False):
        self.path = path
        self._index = read_proposals(path, allow_pickle)

    def __call__(self, record, image):
        if int(record["image_id"]) not in self._index:
            raise KeyError(f"image {record['image_id']} ({record.get('file_name')}) has no proposals in {self.path}")
        boxes, scores, mode = self._index[int(record["image_id"])]
        return BoxMode.convert(boxes.reshape(-1, 4), mode, BoxMode.XYXY_ABS), scores


class DetectorProposalSource:
    """RPN proposals of a trained detector or ``ProposalNetwork`` (config + weights) run on each
    image at test size."""

    def __init__(self, cfg, weights: str, device: str = "cpu"):
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        from ..engine.checkpoint import VerifiedCheckpointer

        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = device
        self.model = build_model(cfg).eval()
        VerifiedCheckpointer(self.model).load(weights)
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
