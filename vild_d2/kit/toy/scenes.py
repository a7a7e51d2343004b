"""Colour-shape scenes of the toy world: category list, shape polygons and image rendering.

A scene is an RGB uint8 image (H x W x 3) with 1-4 objects whose masks never overlap
(boxes may). Every object is an exact polygon; its mask is that polygon rasterised by
pycocotools, so image pixels, evaluation masks and boxes agree exactly.
"""
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from pycocotools import mask as mask_utils

COLOURS = {
    "red": (215, 45, 40),
    "green": (45, 175, 60),
    "blue": (45, 85, 215),
    "yellow": (230, 205, 40),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart")
# One opaque word per colour-shape category (in COLOURS order), as LVIS names are words, not
# attribute lists: with names like "red star" the text embedding of a novel combination would be
# spelled out of base words, and text alone would name novel classes, leaving distillation nothing
# to show (benchmarks/README.md). No word is a colour or shape word.
WORDS = {
    "circle": ("cherry", "pea", "marble", "lemon"),
    "square": ("brick", "lawn", "denim", "cheese"),
    "triangle": ("flame", "pine", "shark", "nacho"),
    "star": ("ruby", "clover", "sapphire", "sheriff"),
    "cross": ("medic", "cactus", "compass", "daisy"),
    "heart": ("valentine", "frog", "locket", "honey"),
}


@dataclass(frozen=True)
class ToyCategory:
    id: int  # 1-based LVIS category id
    colour: str
    shape: str
    frequency: str  # LVIS frequency bucket: "r" (rare = novel), "c" or "f"

    @property
    def name(self) -> str:
        return WORDS[self.shape][list(COLOURS).index(self.colour)]


# The rare (novel) categories: every star and every cross, in all four colours. They are shapes
# no base label covers, as most LVIS rare classes are concepts of their own, and no colour names
# them: only the teacher, which saw every category, knows what a star or a cross looks like. A
# novel class that were a base colour with a base shape, or the only novel class of its colour,
# could be named through the text space alone, by recombination or by elimination
# (benchmarks/README.md).
NOVEL_SHAPES = ("star", "cross")


def toy_categories() -> List[ToyCategory]:
    """24 categories (4 colours x 6 shapes), a third rare: the shapes in ``NOVEL_SHAPES`` in
    every colour. The 16 base classes show every colour and the other four shapes, half of them
    frequent and half common."""
    cats = []
    for s_idx, shape in enumerate(SHAPES):
        for c_idx, colour in enumerate(COLOURS):
            if shape in NOVEL_SHAPES:
                freq = "r"
            else:
                freq = "f" if (c_idx + s_idx) % 2 == 0 else "c"
            cats.append(ToyCategory(len(cats) + 1, colour, shape, freq))
    return cats


# Relative sampling weight of a category in scenes, by frequency bucket.
FREQUENCY_WEIGHT = {"f": 4.0, "c": 2.0, "r": 1.0}


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (V x 2) of a shape of radius ~1 centred on the origin."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape in ("square", "triangle"):
        n = 4 if shape == "square" else 3
        t = np.linspace(0, 2 * np.pi, n, endpoint=False) + np.pi / n
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if shape == "cross":
        a, b = 0.32, 1.0
        return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a],
                         [a, b], [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]])
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], 1) / 16.5
    raise ValueError(f"unknown toy shape {shape!r}; known: {SHAPES}")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-saturation textured background: colour gradient, stripes and pixel noise."""
    base = rng.uniform(70, 170) + rng.uniform(-18, 18, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = (rng.uniform(-0.25, 0.25) * xx + rng.uniform(-0.25, 0.25) * yy)[..., None]
    theta, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.35)
    stripes = (12 * np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy)))[..., None]
    noise = rng.normal(0, 9, size=(h, w, 3))
    return base + grad + stripes + noise


@dataclass
class ToyObject:
    category_id: int
    polygon: List[float]  # flat [x0, y0, x1, y1, ...] in pixels
    mask: np.ndarray  # H x W uint8


def render_scene(
    rng: np.random.Generator,
    categories: List[ToyCategory],
    size_range: Tuple[int, int] = (128, 160),
    max_objects: int = 4,
) -> Tuple[np.ndarray, List[ToyObject]]:
    """Draw one scene: returns the image (H x W x 3 uint8) and its objects."""
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    img = _background(rng, h, w)
    weights = np.array([FREQUENCY_WEIGHT[c.frequency] for c in categories])
    occupied = np.zeros((h, w), dtype=bool)
    objects: List[ToyObject] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cat = categories[rng.choice(len(categories), p=weights / weights.sum())]
        for _attempt in range(25):
            radius = rng.uniform(9, 27)
            cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
            angle = rng.uniform(0, 2 * np.pi)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            aspect = np.array([1.0, rng.uniform(0.8, 1.2)])
            pts = (_unit_polygon(cat.shape) * aspect) @ rot.T * radius + (cx, cy)
            poly = np.round(pts, 2).reshape(-1).tolist()
            mask = mask_utils.decode(mask_utils.frPyObjects([poly], h, w))[..., 0]
            grown = mask.astype(bool)
            grown[1:] |= grown[:-1].copy()
            grown[:, 1:] |= grown[:, :-1].copy()
            if mask.sum() >= 30 and not (grown & occupied).any():
                break
        else:
            continue  # no room left for this object
        occupied |= grown
        colour = np.array(COLOURS[cat.colour], dtype=np.float32) + rng.uniform(-20, 20, size=3)
        shade = 1 + rng.uniform(-0.12, 0.12) * (np.arange(w)[None, :] - cx) / radius / 2
        fill = colour * shade[..., None] + rng.normal(0, 6, size=(h, w, 3))
        img = np.where(mask[..., None].astype(bool), fill, img)
        objects.append(ToyObject(cat.id, poly, mask))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects
