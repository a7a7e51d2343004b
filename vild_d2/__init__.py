"""ViLD (open-vocabulary detection via vision and language knowledge distillation) for Detectron2.

``import vild_d2`` registers the model components (``ViLDRCNN``, ``ViLDROIHeads``, the backbone)
and the standard open-vocabulary datasets (LVIS v1, COCO 48/17), and nothing else: datasets of
your own are registered by a config (``DATASETS.VILD.REGISTER``). The toy world, the mini-LVIS
and the random CLIP that let everything run on a CPU are a kit on top: :mod:`vild_d2.kit`.

Layers, lowest first; a module imports only from its own layer or below (tests/test_layers.py):

1. ``compat``, ``artifacts``, ``locking``, ``model_zoo``, ``progress``: files, seals, locks, configs, progress lines
2. ``config``: the ``MODEL.VILD.*`` / ``DATASETS.VILD.*`` keys
3. ``clip_model``, ``crops``, ``vocabularies``, ``region_cache`` (its storage format)
4. ``text_classifier``
5. ``data``
6. ``modeling``
7. ``evaluation``, ``visualize``
8. ``engine``
9. ``region_cache.proposals``, ``region_cache.builder``, ``region_cache.cli``, ``predictor``, ``export``
10. ``recipe``, ``serve`` (the web page of `demo.py --serve`)
11. ``kit``: the toy world and the other stand-ins for data and weights; ``make demo``
"""
from . import data, modeling  # noqa: F401  (registers datasets and model components)
from .compat import patch_lvis_numpy, silence_known_warnings
from .config import add_vild_config

patch_lvis_numpy()
silence_known_warnings()

__all__ = ["add_vild_config"]
