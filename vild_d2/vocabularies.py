"""Vocabularies: the class names (with synonyms) a text classifier is built from, read from a
built-in name (``lvis``, ``coco``), a registered dataset, a file or a comma-separated string."""
import os
from pathlib import Path
from typing import List, Optional, Tuple

__all__ = ["builtin_vocabulary", "load_vocabulary"]


def builtin_vocabulary(name: str) -> Optional[Tuple[List[str], List[List[str]]]]:
    """``"lvis"`` (LVIS v1, 1203 classes with synonyms) or ``"coco"`` (80); None for other names."""
    if name == "lvis":
        from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

        cats = sorted(LVIS_CATEGORIES, key=lambda c: c["id"])
        return [c["synonyms"][0] for c in cats], [list(c["synonyms"]) for c in cats]
    if name == "coco":
        from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

        names = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
        return names, [[n] for n in names]
    return None


def load_vocabulary(source: str) -> Tuple[List[str], List[List[str]]]:
    """Class names and synonyms from a built-in name (lvis, coco), a registered dataset,
    a text file (one class per line, synonyms after commas) or a comma-separated string."""
    from detectron2.data import MetadataCatalog

    builtin = builtin_vocabulary(source)
    if builtin is not None:
        return builtin
    names = MetadataCatalog.get(source).get("thing_classes") if source in MetadataCatalog.list() else None
    if names:
        synonyms = MetadataCatalog.get(source).get("class_synonyms")
        lvis_names, lvis_synonyms = builtin_vocabulary("lvis")
        if synonyms is None and list(names) == lvis_names:  # detectron2's lvis_v1_* datasets
            synonyms = lvis_synonyms
        return list(names), [list(s) for s in (synonyms or [[n] for n in names])]
    if os.path.isfile(source):
        rows = [ln.strip() for ln in Path(source).read_text().splitlines() if ln.strip()]
        syns = [[s.strip() for s in row.split(",") if s.strip()] for row in rows]
        syns = [s for s in syns if s]
        return _checked(source, [s[0] for s in syns], syns)
    names = [s.strip() for s in source.split(",") if s.strip()]
    return _checked(source, names, [[n] for n in names])


def _checked(source: str, names: List[str], synonyms: List[List[str]]) -> Tuple[List[str], List[List[str]]]:
    """A vocabulary needs classes, each named once (a duplicate would split its score in two)."""
    if not names:
        raise ValueError(f"empty vocabulary {source!r}: give lvis|coco, a dataset name, a file with one class "
                         "per line, or 'class a,class b'")
    seen = set()
    dup = [n for n in names if n in seen or seen.add(n)]
    if dup:
        raise ValueError(f"vocabulary {source!r} names {dup[:3]} more than once: list each class once "
                         "(synonyms after commas on one line of a file)")
    return names, synonyms
