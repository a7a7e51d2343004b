"""Region cache verification: a damaged cache is refused before training with the shard, file, fault
and fix named; a verified cache is trusted without hashing (also by pickled mappers, as in
DataLoader workers); the stamp; the rank split; a rebuild repairs damaged shards."""
import json
import os
import pickle
import shutil
import threading

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.utils import comm

from vild_d2 import artifacts
from vild_d2.artifacts import SettingsMismatchError, file_sha256, seal_record
from vild_d2.data import ViLDDatasetMapper
from vild_d2.region_cache import CorruptCacheError, RegionCache, storage, verify_region_cache

from .test_bad_inputs import refused
from .test_region_cache import _build, _bytes, world  # noqa: F401 (world: the fixture)

DATASET = "tiny_toy_train_full"  # 10 images: with shard_size 3, shards of 3, 3, 3 and 1 images
NUM_FILES = 4 * 4  # shards x arrays


@pytest.fixture(scope="module")
def pristine(world, tmp_path_factory):  # noqa: F811
    return _build(world, tmp_path_factory.mktemp("pristine") / "c")


@pytest.fixture
def cache(pristine, tmp_path):
    """A fresh copy of the built cache."""
    return shutil.copytree(pristine, tmp_path / "c")


@pytest.fixture
def hashed(monkeypatch):
    """The paths :func:`file_sha256` is asked to hash (by the seal checks of vild_d2.artifacts), in call order."""
    calls = []

    def counting(path):
        calls.append(str(path))
        return file_sha256(path)
    monkeypatch.setattr(artifacts, "file_sha256", counting)
    return calls


def _mapper(toy_cfg, world, root):  # noqa: F811
    toy_cfg.MODEL.VILD.REGION_CACHE_DIR = str(root)
    toy_cfg.MODEL.VILD.CLIP_MODEL = str(world / "clip.pt")
    toy_cfg.MODEL.VILD.REGION_CACHE_DATASET = DATASET
    toy_cfg.MODEL.VILD.NUM_CACHED_PROPOSALS = 8
    return ViLDDatasetMapper(toy_cfg, is_train=True)


def _ids():
    return [r["image_id"] for r in DatasetCatalog.get(DATASET)]


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite(root, k, name, array):
    """Replace an array of shard ``k`` and record its seal in the manifest, as a builder with a
    bug would: only the shape checks can catch it."""
    np.save(root / f"shard_{k:05d}" / f"{name}.npy", array)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"][k]["seals"][f"{name}.npy"] = seal_record(root / f"shard_{k:05d}" / f"{name}.npy")
    (root / "manifest.json").write_text(json.dumps(manifest))


def _index_past_the_end(root):
    index = np.load(root / "shard_00001" / "index.npy")
    index[2, 2] += 5
    _rewrite(root, 1, "index", index)


DAMAGE = {
    "deleted boxes.npy": (lambda c: (c / "shard_00001" / "boxes.npy").unlink(),
                          r"1 of 4 shards damaged: shard_00001: boxes.npy is missing\. Fix: delete \S+/c/shard_00001 "
                          r"and rerun tools/build_region_cache.py \(or tools/run_recipe.py\), which rebuilds missing "
                          r"shards"),
    "truncated embeds.npy": (lambda c: os.truncate(c / "shard_00002" / "embeds.npy", 1000),
                             r"shard_00002: embeds.npy is incomplete or altered \(1000 bytes, sealed at \d+\)\. "
                             r"Fix: delete \S+/c/shard_00002 and rerun"),
    "flipped byte": (lambda c: _flip_last_byte(c / "shard_00000" / "scores.npy"),
                     r"shard_00000: scores.npy is altered \(its sha256 differs from its seal; \d+ bytes\)"),
    "missing shard folder": (lambda c: shutil.rmtree(c / "shard_00003"), r"shard_00003: folder missing\. Fix: delete"),
    "index past the regions": (_index_past_the_end, r"shard_00001: index.npy rows \[2\] point outside the \d+ regions"),
    "embeds of another D": (lambda c: _rewrite(c, 0, "embeds", np.zeros((len(np.load(c / "shard_00000" / "boxes.npy")),
                                                                         32), np.float16)),
                            r"shard_00000: embeds.npy is \(\d+, 32\), not P x 64 \(the manifest's dim\)"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_cache_is_refused_before_any_image_is_mapped(world, cache, toy_cfg, damage):  # noqa: F811
    do, pattern = DAMAGE[damage]
    do(cache)
    mapper = _mapper(toy_cfg, world, cache)
    # the trainer's check, before the data loader exists; nothing is written (no stamp)
    refused(lambda: mapper.check_cache_covers(_ids()), CorruptCacheError,
            f"region cache \\S+/c fails verification, .*{pattern}", cache)


def test_verified_cache_is_mapped_without_hashing(world, cache, toy_cfg, hashed):  # noqa: F811
    mapper = _mapper(toy_cfg, world, cache)
    mapper.check_cache_covers(_ids())
    assert len(hashed) == NUM_FILES
    worker = pickle.loads(pickle.dumps(mapper))  # what a 'spawn' DataLoader worker gets
    del hashed[:]
    records = DatasetCatalog.get(DATASET)
    for m in (mapper, worker):
        assert all(len(m(dict(r))["clip_regions"]) > 0 for r in records)
    assert hashed == []
    # a file that vanishes after verification is named, not a raw FileNotFoundError
    (cache / "shard_00002" / "boxes.npy").unlink()
    with pytest.raises(CorruptCacheError, match=r"shard_00002/boxes.npy is missing: delete \S+shard_00002 and rerun"):
        pickle.loads(pickle.dumps(mapper))(dict(records[6]))


def test_stamp_skips_hashing_until_a_file_changes(cache, hashed):
    assert verify_region_cache(cache) == [0, 1, 2, 3] and len(hashed) == NUM_FILES
    assert (cache / "verified.json").is_file()
    del hashed[:]
    assert verify_region_cache(cache) == [] and hashed == []
    embeds = cache / "shard_00001" / "embeds.npy"
    st = embeds.stat()
    os.utime(embeds, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same bytes, another version: checked again
    assert verify_region_cache(cache) == [0, 1, 2, 3] and len(hashed) == NUM_FILES
    _flip_last_byte(embeds)
    with pytest.raises(CorruptCacheError, match="shard_00001: embeds.npy is altered"):
        verify_region_cache(cache)
    (cache / "verified.json").write_text("{trunc")  # a garbled stamp is ignored, never trusted
    with pytest.raises(CorruptCacheError, match="shard_00001: embeds.npy is altered"):
        verify_region_cache(cache)


def test_ranks_hash_disjoint_shares_covering_all(cache, hashed):
    shares = []
    for rank in (0, 1):
        del hashed[:]
        assert verify_region_cache(cache, rank=rank, world_size=2) == [rank, rank + 2]
        shares.append(set(hashed))
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == NUM_FILES
    assert not (cache / "verified.json").exists()  # one rank's share alone is no complete verification


class _ThreadGroup:
    """``size`` threads standing for ranks; ``comm.all_gather`` exchanges data among them."""

    def __init__(self, size):
        self.world, self.barrier = size, threading.Barrier(size, timeout=20)
        self.local, self.slots = threading.local(), {}

    def all_gather(self, data, group=None):
        self.local.calls = getattr(self.local, "calls", 0) + 1
        self.slots[self.local.calls, self.local.rank] = data
        self.barrier.wait()
        return [self.slots[self.local.calls, r] for r in range(self.world)]

    def run(self, fn):
        out = [None] * self.world

        def rank_main(rank):
            self.local.rank = rank
            try:
                out[rank] = fn(rank)
            except CorruptCacheError as e:
                out[rank] = e
        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out


def test_every_rank_raises_the_same_error_and_rank0_stamps(pristine, cache, monkeypatch):
    group = _ThreadGroup(2)
    monkeypatch.setattr(comm, "all_gather", group.all_gather)
    verify = lambda rank: verify_region_cache(cache, rank=rank, world_size=2)  # noqa: E731
    (cache / "shard_00003" / "scores.npy").unlink()  # in rank 1's share
    errors = group.run(verify)
    assert all(isinstance(e, CorruptCacheError) for e in errors) and str(errors[0]) == str(errors[1])
    assert "1 of 4 shards damaged: shard_00003: scores.npy is missing" in str(errors[0])
    shutil.copy2(pristine / "shard_00003" / "scores.npy", cache / "shard_00003" / "scores.npy")
    assert group.run(verify) == [[0, 2], [1, 3]]
    assert group.run(verify) == [[], []]  # the shares together were complete: stamped


def test_rebuild_repairs_damaged_shards_byte_identically(world, pristine, cache, caplog, hashed):  # noqa: F811
    assert verify_region_cache(cache) == [0, 1, 2, 3]  # stamped: the stamp must not hide the damage
    _flip_last_byte(cache / "shard_00003" / "embeds.npy")  # the 1-image shard: quick to rebuild
    with caplog.at_level("WARNING"):
        _build(world, cache)
    damaged = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(damaged) == 1 and "shard_00003 is damaged (embeds.npy is altered" in damaged[0]
    (cache / "verified.json").unlink()  # (_bytes compares every other file)
    assert _bytes(cache) == _bytes(pristine) and not list(cache.glob(".shard_*"))
    assert (cache / "manifest.json").read_text() == (pristine / "manifest.json").read_text()
    assert verify_region_cache(cache) == [0, 1, 2, 3]
    del hashed[:]
    _build(world, cache)  # a rerun over a cache verified since: nothing hashed, nothing rebuilt
    assert hashed == [] and verify_region_cache(cache) == []  # the files are those the stamp vouches for


def test_cache_of_an_older_format_is_refused_with_the_fix(world, cache):  # noqa: F811
    """A cache of another on-disk format (as one written before its shards were sealed) is refused by
    readers and by a build into its folder, with the fix: delete it and rebuild."""
    for name in ("manifest.json", "build.json"):
        data = json.loads((cache / name).read_text())
        (cache / name).write_text(json.dumps(dict(data, version=1)))
    new = storage.FORMAT_VERSION
    refused(lambda: RegionCache(cache), SettingsMismatchError, r"holds a region cache built with other settings "
            rf"\(version: 1 there, {new} asked\): this vild_d2 reads region caches of format {new} only: delete "
            r"\S+/c and rebuild it", cache)
    refused(lambda: verify_region_cache(cache), SettingsMismatchError, rf"version: 1 there, {new} asked", cache)
    refused(lambda: _build(world, cache), SettingsMismatchError, rf"build.json holds a region cache built with "
            rf"other settings \(version: 1 there, {new} asked\): use another output folder, or delete", cache)
