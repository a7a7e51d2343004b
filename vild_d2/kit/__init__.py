"""The kit on top of the plugin: stand-ins for the data and weights this project's machines cannot
download, and the main job that runs on them (``make demo``).

* :mod:`.toy`: the toy world (a synthetic open-vocabulary dataset, registered through its configs
  like any dataset) and its toy CLIP teacher;
* :mod:`.mini_lvis`, :mod:`.lvis_synthetic`: LVIS-format stand-ins for rehearsing the LVIS recipe;
* :mod:`.random_clip`: randomly initialised CLIP checkpoints of the real architectures;
* :mod:`.pipeline`: ``make demo``, the recipe on the toy world.

The core (``import vild_d2``) never imports this package.
"""
