"""The toy CLIP teacher: a small ``clip.model.CLIP`` trained contrastively on toy-world crops.

It stands for web-scale pretraining, so it sees every category, rare ones included, and
background: CLIP was trained on whole images, so a crop of wall or floor embeds near words for
those, not near an object class. A teacher trained on object crops alone maps background crops
close to one of its classes, and ViLD-image then distils that class into every background
proposal. Crops are jittered like detector proposals (partial, tight, with context); background
crops are random boxes away from every object.
The logit scale is fixed at trained CLIP's 100, so that the teacher's embeddings take CLIP's
geometry, the one ViLD distils: a narrow cone where a crop is only a little closer to its own text
than to the others, and the background point about equally far from every class. Learned, the
scale barely leaves its initial value in so short a training. The checkpoint is a plain
state_dict that the unmodified ``clip.load(path, jit=False)`` loads, the same path users take
with OpenAI's checkpoints. Shapes: B crops in a batch, K categories, T templates, L tokens.
"""
import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Dict, Optional

import clip
import numpy as np
import torch
import torch.nn.functional as F
from clip.model import CLIP
from PIL import Image
from torchvision.ops import box_iou

from vild_d2.artifacts import atomic_path, cache_key, is_sealed, seal, verify_file, write_json
from vild_d2.crops import clip_crops, embed_regions
from vild_d2.locking import exclusive
from vild_d2.progress import progress

from .dataset import SPLIT_FILES, read_settings
from .scenes import COLOURS, SHAPES, toy_categories

logger = logging.getLogger(__name__)

# Captions used to train the teacher (the text builder has its own, larger template set).
TEACHER_TEMPLATES = ("a photo of a {}.", "a {}.", "a {} shape.", "a drawing of a {}.",
                     "the {}.", "a picture of a {} object.", "a small {}.", "a large {}.")
# Caption word of background crops: one extra pseudo-class after the K categories.
BACKGROUND_NAME = "background"


@dataclasses.dataclass(frozen=True)
class TeacherSettings:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 50
    seed: int = 0
    embed_dim: int = 64
    image_resolution: int = 64  # ModifiedResNet: a multiple of 32
    vision_width: int = 16
    context_length: int = 16
    text_width: int = 64  # clip.model.build_model infers heads = width // 64
    text_layers: int = 2
    background_fraction: float = 0.2  # share of each batch that is background crops (0: none)
    logit_scale: float = 100.0  # > 0: fixed contrastive logit scale (trained CLIP: 100); 0: learned


def build_toy_clip(s: TeacherSettings) -> CLIP:
    return CLIP(embed_dim=s.embed_dim, image_resolution=s.image_resolution, vision_layers=(1, 1, 1, 1),
                vision_width=s.vision_width, vision_patch_size=None, context_length=s.context_length, vocab_size=49408,
                transformer_width=s.text_width, transformer_heads=s.text_width // 64,
                transformer_layers=s.text_layers)


def class_text(name: str) -> str:
    return name.replace("_", " ")


def load_split_tensors(world_root, split: str):
    """Images of a split padded into one uint8 tensor (N x 3 x Hmax x Wmax) and its LVIS dict."""
    data = json.loads((Path(world_root) / SPLIT_FILES[split]).read_text())
    arrays = [np.array(Image.open(Path(world_root) / "images" / im["file_name"]).convert("RGB"))
              for im in data["images"]]
    h, w = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
    images = torch.zeros(len(arrays), 3, h, w, dtype=torch.uint8)
    for i, a in enumerate(arrays):
        images[i, :, : a.shape[0], : a.shape[1]] = torch.from_numpy(a).permute(2, 0, 1)  # HWC -> CHW
    return images, data


def annotation_rois(data) -> torch.Tensor:
    """A x 6 rows ``(image_index, x0, y0, x1, y1, category_id)`` for every annotation."""
    index = {im["id"]: i for i, im in enumerate(data["images"])}
    rows = [[index[a["image_id"]], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
             a["bbox"][1] + a["bbox"][3], a["category_id"]] for a in data["annotations"]]
    return torch.tensor(rows, dtype=torch.float32)


def background_rois(data, gen: torch.Generator, per_image: int = 4, max_iou: float = 0.1) -> torch.Tensor:
    """Up to ``per_image`` random boxes per image (sides 12-60 px) with IoU < ``max_iou`` to
    every annotation, as B x 6 rows ``(image_index, x0, y0, x1, y1, 0)``."""
    objects = annotation_rois(data).view(-1, 6)
    rows = []
    for i, im in enumerate(data["images"]):
        tries = 4 * per_image
        side = 12 + 48 * torch.rand(tries, 2, generator=gen)  # tries x (w, h)
        origin = torch.rand(tries, 2, generator=gen) * (torch.tensor([im["width"], im["height"]]) - side)
        cand = torch.cat([origin, origin + side], 1)  # tries x 4
        mine = objects[objects[:, 0] == i, 1:5]  # G x 4
        if len(mine):
            cand = cand[box_iou(cand, mine).max(1).values < max_iou]
        rows += [[i, *b, 0.0] for b in cand[:per_image].tolist()]
    return torch.tensor(rows, dtype=torch.float32).view(-1, 6)


def jitter_boxes(boxes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Proposal-like jitter of (B x 4) boxes: 25% partial, 45% tight, 30% 1.3-1.8x context."""
    b = boxes.shape[0]
    wh = boxes[:, 2:] - boxes[:, :2]
    u = torch.rand(b, generator=gen)
    scale = torch.where(u < 0.25, 0.55 + 0.35 * torch.rand(b, generator=gen),
                        torch.where(u < 0.70, 0.9 + 0.2 * torch.rand(b, generator=gen),
                                    1.3 + 0.5 * torch.rand(b, generator=gen)))
    shift = (torch.rand(b, 2, generator=gen) - 0.5) * 0.3 * wh
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + shift
    half = wh * scale[:, None] / 2
    return torch.cat([centre - half, centre + half], dim=1)


def contrastive_loss(img_emb, txt_emb, labels, logit_scale):
    """Symmetric InfoNCE where every same-class pair in the batch counts as positive."""
    img_emb, txt_emb = F.normalize(img_emb, dim=-1), F.normalize(txt_emb, dim=-1)
    logits = logit_scale.exp() * img_emb @ txt_emb.t()  # B x B
    pos = (labels[:, None] == labels[None, :]).float()
    target = pos / pos.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def class_token_table(names, context_length: int) -> torch.Tensor:
    """K x T x L tokens of every class under every teacher template."""
    texts = [t.format(class_text(n)) for n in names for t in TEACHER_TEMPLATES]
    return clip.tokenize(texts, context_length=context_length).view(len(names), len(TEACHER_TEMPLATES), -1)


def train_toy_clip(world_root, s: TeacherSettings = TeacherSettings(), history: Optional[list] = None) -> CLIP:
    """Train the toy CLIP on crops of ``train_full`` (every category); per-step losses are
    appended to ``history`` when given."""
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    images, data = load_split_tensors(world_root, "train_full")
    rois = annotation_rois(data)
    background = background_rois(data, gen)
    rois = torch.cat([rois, background])
    names = [c["name"] for c in data["categories"]]
    tokens = class_token_table(names + [BACKGROUND_NAME], s.context_length)  # (K + 1) x T x L
    by_class = [torch.nonzero(rois[:, 5] == c["id"]).flatten() for c in data["categories"]]
    seen = torch.tensor([i for i, members in enumerate(by_class) if len(members)])  # tiny worlds miss some
    by_class.append(torch.arange(len(rois) - len(background), len(rois)))  # pseudo-class K
    num_background = round(s.background_fraction * s.batch_size) if len(background) else 0
    model = build_toy_clip(s).float().train()
    if s.logit_scale > 0:
        model.logit_scale.data.fill_(math.log(s.logit_scale))
        model.logit_scale.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / s.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(i, s.steps) / s.steps)))
    bar = progress(range(s.steps), desc="toy CLIP teacher", unit="step")
    for _ in bar:
        # Class-balanced sampling: rare categories are seen as often as frequent ones.
        cls = seen[torch.randint(len(seen), (s.batch_size,), generator=gen)]
        cls[:num_background] = len(names)
        idx = torch.stack([by_class[c][torch.randint(len(by_class[c]), (1,), generator=gen)][0] for c in cls])
        batch = rois[idx]
        is_background = (cls == len(names))[:, None]
        boxes = torch.where(is_background, batch[:, 1:5], jitter_boxes(batch[:, 1:5], gen))
        flip = torch.rand(s.batch_size, generator=gen) < 0.5
        crops = clip_crops(images[batch[:, 0].long()].float(), torch.cat(
            [torch.arange(s.batch_size, dtype=torch.float32)[:, None], boxes], 1), s.image_resolution)
        crops = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
        text = tokens[cls, torch.randint(len(TEACHER_TEMPLATES), (s.batch_size,), generator=gen)]
        loss = contrastive_loss(model.encode_image(crops), model.encode_text(text), cls, model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if history is not None:
            history.append(loss.item())
    return model.eval()


@torch.no_grad()
def zero_shot_accuracy(model: CLIP, world_root, split: str = "val", scale: float = 1.0) -> Dict[str, float]:
    """Zero-shot classification accuracy of annotated crops at a context ``scale`` (argmax over
    the K categories): overall, on rare (novel) categories and on the others; and on background
    crops, how often the teacher calls them background (argmax over K + 1)."""
    images, data = load_split_tensors(world_root, split)
    rois = annotation_rois(data)
    background = background_rois(data, torch.Generator().manual_seed(0))
    names = [c["name"] for c in data["categories"]]
    tokens = class_token_table(names + [BACKGROUND_NAME], model.context_length)
    text = F.normalize(model.encode_text(tokens.flatten(0, 1)), dim=-1)  # ((K+1)*T) x D
    text = F.normalize(text.view(len(names) + 1, -1, text.shape[-1]).mean(1), dim=-1)  # (K+1) x D
    preds, crops_rois = [], torch.cat([rois, background])
    for start in range(0, len(crops_rois), 256):
        chunk = crops_rois[start:start + 256]
        crops = clip_crops(images.float(), chunk[:, :5], model.visual.input_resolution, scales=(scale,))
        preds.append(F.normalize(model.encode_image(crops), dim=-1) @ text.t())  # B x (K+1)
    scores = torch.cat(preds)
    ids = torch.tensor([c["id"] for c in data["categories"]])
    correct = ids[scores[: len(rois), :-1].argmax(1)] == rois[:, 5].long()
    rare = torch.tensor([c["frequency"] == "r" for c in data["categories"]])[rois[:, 5].long() - 1]
    return {"all": correct.float().mean().item(), "rare": correct[rare].float().mean().item(),
            "base": correct[~rare].float().mean().item(), "crops": len(rois),
            "background": (scores[len(rois):].argmax(1) == len(names)).float().mean().item(),
            "background_crops": len(background)}


@torch.no_grad()
def crop_geometry(model: CLIP, world_root, split: str = "val", scales=(1.0, 1.5)) -> Dict[str, float]:
    """How far apart the teacher puts the object crops of a split, embedded as the region cache
    embeds them (``scales`` combined): mean cosine of each crop to its class mean
    (``within_class``), and mean cosine between class means of the same colour, of the same shape
    and of neither. A lower fixed logit scale spreads the classes farther apart, but does not help
    ViLD learn the novel shapes sooner: the default stays at CLIP's 100."""
    images, data = load_split_tensors(world_root, split)
    rois = annotation_rois(data).view(-1, 6)  # A x 6
    if not len(rois):
        return dict.fromkeys(("within_class", "same_colour", "same_shape", "neither"), float("nan"))
    per_image = [rois[rois[:, 0] == i] for i in range(len(images))]
    emb = torch.cat([embed_regions(model.visual, images[i], r[:, 1:5], scales, "sum", 256)
                     for i, r in enumerate(per_image)])  # A x D, rows in per_image order
    labels = torch.cat([r[:, 5] for r in per_image]).long()  # A
    ids = labels.unique()  # K' classes present
    members = [emb[labels == i] for i in ids]
    means = F.normalize(torch.stack([m.mean(0) for m in members]), dim=-1)  # K' x D
    within = torch.cat([m @ centre for m, centre in zip(members, means)]).mean().item()
    cats = {c.id: c for c in toy_categories()}
    colour = torch.tensor([list(COLOURS).index(cats[int(i)].colour) for i in ids])
    shape = torch.tensor([SHAPES.index(cats[int(i)].shape) for i in ids])
    same_colour, same_shape = colour[:, None] == colour[None], shape[:, None] == shape[None]  # K' x K'
    pairs = torch.ones_like(same_colour).triu(1)
    sim = means @ means.t()  # K' x K'

    def mean(mask):
        return sim[pairs & mask].mean().item() if (pairs & mask).any() else float("nan")

    return {"within_class": within, "same_colour": mean(same_colour), "same_shape": mean(same_shape),
            "neither": mean(~same_colour & ~same_shape)}


def teacher_path(world_root, s: TeacherSettings = TeacherSettings()) -> Path:
    """Cache path keyed by the teacher settings and the toy world's settings."""
    key = cache_key(dataclasses.asdict(s), read_settings(world_root), length=12)
    return Path(world_root) / "teacher" / f"toy_clip_{key}.pt"


STABLE_NAME = "toy_clip.pt"  # configs name this; it links to the last teacher ensured


def _link_stable(path: Path) -> None:
    stable = path.parent / STABLE_NAME
    if stable.exists() and os.path.samefile(stable, path):
        return
    tmp = stable.with_suffix(".link-tmp")
    if tmp.exists():
        tmp.unlink()
    os.link(path, tmp)
    os.replace(tmp, stable)


def ensure_teacher(world_root, s: TeacherSettings = TeacherSettings()) -> Path:
    """Train (once) and save the teacher; return the checkpoint path ``clip.load`` accepts.

    A JSON sidecar next to it records the settings, zero-shot accuracies and crop geometry on ``val``;
    ``teacher/toy_clip.pt`` is (hard-)linked to it for the configs.
    """
    path = teacher_path(world_root, s)
    # one trainer per teacher; a second job waits for it and then reuses its result
    with exclusive(path.parent, "toy CLIP teacher training", name=f".{path.stem}.lock", wait=True):
        if path.is_file() and is_sealed(path):
            verify_file(path, "toy CLIP teacher")
            logger.info("toy CLIP teacher cached at %s", path)
        else:
            _train_and_save(world_root, s, path)
    _link_stable(path)
    return path


def _train_and_save(world_root, s: TeacherSettings, path: Path) -> None:
    model = train_toy_clip(world_root, s)
    report = {"settings": dataclasses.asdict(s),
              "zero_shot_val": {f"{k}x": zero_shot_accuracy(model, world_root, "val", k) for k in (1.0, 1.5)},
              "crop_geometry_val": crop_geometry(model, world_root, "val")}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(model.state_dict(), f)
    write_json(path.with_suffix(".json"), report)
    seal(path)
    logger.info("toy CLIP teacher saved to %s; zero-shot on val: %s", path, report["zero_shot_val"])
