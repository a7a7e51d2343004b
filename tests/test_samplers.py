"""Training samplers: the one DATALOADER.SAMPLER_TRAIN names is built (as Detectron2 builds it),
resumes exactly through ``skip``; RandomStates round-trips the random states, CUDA's included."""
import io
import itertools
import json
import logging
import random

import detectron2.data.samplers as d2_samplers
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.build import _train_loader_from_config
from detectron2.data.samplers import RepeatFactorTrainingSampler

from vild_d2.data import register_ov_lvis_instances
from vild_d2.engine import load_config
from vild_d2.engine.checkpoint import RandomStates
from vild_d2.engine.samplers import (
    SUPPORTED_SAMPLERS,
    ResumableRandomSubsetTrainingSampler,
    ResumableRepeatFactorTrainingSampler,
    ResumableSampler,
    ResumableTrainingSampler,
    build_training_sampler,
)

from .test_configs import CONFIG_DIR, CONFIGS

LVIS_CFG = CONFIG_DIR / "LVIS-OV/Base-ViLD-LVIS-R50-FPN.yaml"
NUM_IMAGES, COMMON_IMAGE, RARE_IMAGE = 20, 3, 7  # image ids 1..20; category 2 ("c") on 3 only, 3 ("r") on 7 only


def _records(n=12):
    """n images: category 0 on every image, category 1 on image 0 only."""
    return [{"image_id": i, "annotations": [{"category_id": 0}] + ([{"category_id": 1}] if i == 0 else [])}
            for i in range(n)]


def _head(sampler, n):
    return list(itertools.islice(iter(sampler), n))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_config_gets_the_sampler_it_names(path):
    cfg = load_config(path, register=False)
    sampler = build_training_sampler(cfg, _records())
    assert isinstance(sampler, getattr(d2_samplers, cfg.DATALOADER.SAMPLER_TRAIN))
    assert isinstance(sampler, ResumableSampler) and sampler.skip == 0
    if "LVIS-OV" in str(path):  # the LVIS recipe: repeat-factor sampling at threshold 0.001
        assert isinstance(sampler, RepeatFactorTrainingSampler)


@pytest.fixture(scope="module")
def lvis_base(tmp_path_factory):
    """A 20-image LVIS json (categories 1 "f" everywhere, 2 "c" and 3 "r" on one image each),
    registered with the base vocabulary (rare annotations dropped, as ViLD trains)."""
    path = tmp_path_factory.mktemp("lvis") / "lvis.json"
    cats = [{"id": i, "name": n, "synonyms": [n], "frequency": f} for i, n, f in [(1, "cup", "f"), (2, "owl", "c"),
                                                                                (3, "yak", "r")]]
    images, anns = [], []
    for i in range(1, NUM_IMAGES + 1):
        images.append({"id": i, "height": 32, "width": 32, "coco_url": f"http://x/train2017/{i:012d}.jpg",
                       "neg_category_ids": [], "not_exhaustive_category_ids": []})
        for c in [1] + [2] * (i == COMMON_IMAGE) + [3] * (i == RARE_IMAGE):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [1, 1, 8, 8], "area": 64,
                         "segmentation": [[1, 1, 9, 1, 9, 9, 1, 9]]})
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    name = "test_samplers_lvis_base"
    if name not in DatasetCatalog.list():
        register_ov_lvis_instances(name, str(path), str(path.parent), vocabulary="base")
    cfg = load_config(LVIS_CFG, ["DATASETS.TRAIN", f"('{name}',)", "DATALOADER.REPEAT_THRESHOLD", "0.2"],
                      register=False)
    return cfg, DatasetCatalog.get(name)


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_lvis_repeat_factors_are_detectron2s_and_repeat_the_infrequent_class_image(lvis_base):
    cfg, records = lvis_base
    messages, log = _Messages(), logging.getLogger("vild_d2.engine.samplers")
    level = log.level
    log.addHandler(messages), log.setLevel(logging.INFO)
    try:
        sampler = build_training_sampler(cfg, records)
    finally:
        log.removeHandler(messages), log.setLevel(level)
    ours = sampler._int_part + sampler._frac_part
    theirs = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(records, 0.2, sqrt=True)
    assert torch.equal(ours, theirs)
    # owl on 1 image of 20: sqrt(0.2 / 0.05) = 2; the yak (rare) is not trained: its image stays at 1
    expected = [2.0 if r["image_id"] == COMMON_IMAGE else 1.0 for r in records]
    assert ours.tolist() == expected and [r["image_id"] for r in records] == list(range(1, NUM_IMAGES + 1))
    assert "repeat factors (DATALOADER.REPEAT_THRESHOLD 0.2, sqrt True) of 20 images: min 1.000, mean 1.050, " \
           "max 2.000; effective epoch 21.0 images" in messages.messages
    assert "training sampler: RepeatFactorTrainingSampler over 20 images (resumable)" in messages.messages
    counts = np.bincount(_head(sampler, 3 * 21), minlength=NUM_IMAGES)  # 3 epochs of 21 images
    assert counts[COMMON_IMAGE - 1] == 6 and counts.sum() == 63 and set(np.delete(counts, COMMON_IMAGE - 1)) == {3}


@pytest.mark.parametrize("name", SUPPORTED_SAMPLERS)
def test_same_stream_as_detectron2s_own_sampler_from_the_config(lvis_base, name):
    cfg, records = lvis_base
    cfg = cfg.clone()
    cfg.DATALOADER.SAMPLER_TRAIN = name
    cfg.DATALOADER.RANDOM_SUBSET_RATIO = 0.5  # read by Detectron2, absent from its defaults
    streams = []
    for build in (lambda: build_training_sampler(cfg, records),
                  lambda: _train_loader_from_config(cfg, mapper=lambda r: r, dataset=records)["sampler"]):
        np.random.seed(3)  # the shared seeds TrainingSampler and RandomSubsetTrainingSampler draw
        streams.append(_head(build(), 50))
    assert streams[0] == streams[1] and len(set(streams[0])) == (10 if "Subset" in name else NUM_IMAGES)


@pytest.mark.parametrize("name", ["WeightedTrainingSampler", "WeightedCategoryTrainingSampler", "Nope"])
def test_unsupported_samplers_are_refused_naming_the_supported_ones(name):
    cfg = load_config(LVIS_CFG, ["DATALOADER.SAMPLER_TRAIN", name], register=False)
    with pytest.raises(ValueError, match="TrainingSampler, RepeatFactorTrainingSampler, RandomSubsetTrainingSampler"):
        build_training_sampler(cfg, _records())


def test_random_subset_needs_its_ratio_and_samplers_need_records():
    cfg = load_config(LVIS_CFG, ["DATALOADER.SAMPLER_TRAIN", "RandomSubsetTrainingSampler"], register=False)
    with pytest.raises(ValueError, match="add the key"):
        build_training_sampler(cfg, _records())
    with pytest.raises(ValueError, match="no training images"):
        build_training_sampler(cfg, [])


MAKERS = {  # fixed seeds: the same sampler rebuilt, as in a resumed job
    "uniform": lambda: ResumableTrainingSampler(7, seed=5),
    "repeat factors": lambda: ResumableRepeatFactorTrainingSampler(
        torch.tensor([1.0, 2.5, 1.0, 1.3, 4.0, 1.0, 1.7]), seed=5),
    "random subset": lambda: ResumableRandomSubsetTrainingSampler(7, 0.6, seed_shuffle=5, seed_subset=6),
}


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_skip_resumes_each_rank_exactly(kind, world_size):
    whole, k, n = _head(MAKERS[kind](), 200), 23, 40  # k crosses epoch boundaries for every sampler
    for rank in range(world_size):
        uninterrupted, resumed = MAKERS[kind](), MAKERS[kind]()
        for s in (uninterrupted, resumed):
            s._rank, s._world_size = rank, world_size
        resumed.skip = k
        stream = _head(uninterrupted, k + n)
        assert stream == whole[rank::world_size][:k + n]  # the ranks share one stream
        assert _head(resumed, n) == stream[k:]
    with pytest.raises(ValueError, match="whole number >= 0"):
        resumed.skip = -1


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)], np.random.randn()


def _weights_only_round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_random_states_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    np.random.randn()  # numpy keeps a cached Gaussian: part of the state
    state = _weights_only_round_trip(RandomStates().state_dict())
    first = _draws()
    RandomStates().load_state_dict(state)
    assert _draws() == first and "cuda" not in state  # no CUDA here: nothing CUDA in the checkpoint


class _FakeCUDA:
    """torch.cuda as in a process whose device is initialised; records what is restored."""

    def __init__(self, monkeypatch, value):
        self.restored = None
        for name, fn in {"is_available": lambda: True, "is_initialized": lambda: True,
                         "set_rng_state": self.restore,
                         "get_rng_state": lambda: torch.full((16,), value, dtype=torch.uint8)}.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    def restore(self, state):
        self.restored = state.tolist()


def test_random_states_keep_the_cuda_generator(monkeypatch):
    cpu_only = _weights_only_round_trip(RandomStates().state_dict())  # as saved on CPU, or by an older vild_d2
    _FakeCUDA(monkeypatch, 7)
    saved = _weights_only_round_trip(RandomStates().state_dict())
    assert saved["cuda"].tolist() == [7] * 16 and "cuda" not in cpu_only
    device = _FakeCUDA(monkeypatch, 0)
    RandomStates().load_state_dict(saved)
    assert device.restored == [7] * 16
    old = _FakeCUDA(monkeypatch, 0)  # a checkpoint without CUDA states still loads
    RandomStates().load_state_dict(cpu_only)
    assert old.restored is None
