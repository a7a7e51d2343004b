"""Region cache: round trip, augmentation consistency, kill + resume, 2-process build, bad input."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import launch
from detectron2.structures import BitMasks, BoxMode

from vild_d2.artifacts import SettingsMismatchError
from vild_d2.clip_model import load_clip
from vild_d2.data import ViLDDatasetMapper
from vild_d2.kit.toy import TOY_PREFIX
from vild_d2.region_cache import CorruptCacheError, RegionCache
from vild_d2.region_cache.builder import RegionCacheSettings, build_region_cache
from vild_d2.region_cache.cli import build_from_args, make_parser
from vild_d2.region_cache.proposals import ProposalFileSource, read_proposals, save_proposals
from vild_d2.region_cache.storage import write_manifest, write_shard

from .helpers import REPO, TOY_CFG, kill_when, run, start, subprocess_env


@pytest.fixture(scope="module")
def world(toy_env):
    """The shared tiny toy world and CLIP, plus a proposal file holding each image's ground-truth
    boxes (objectness 10) and 12 random boxes."""
    base = toy_env
    rng = np.random.default_rng(0)
    records = DatasetCatalog.get("tiny_toy_train_full")
    ids, boxes, scores = [], [], []
    for r in records:
        gt = np.array([a["bbox"] for a in r["annotations"]], np.float32).reshape(-1, 4)
        gt[:, 2:] += gt[:, :2]  # XYWH -> XYXY
        xy = rng.uniform(0, 100, (12, 2)).astype(np.float32)
        rand = np.concatenate([xy, xy + rng.uniform(8, 40, (12, 2))], 1).astype(np.float32)
        ids.append(r["image_id"])
        boxes.append(np.concatenate([gt, rand]))
        scores.append(np.concatenate([np.full(len(gt), 10.0), rng.normal(size=12)]).astype(np.float32))
    save_proposals(base / "proposals.npz", ids, boxes, scores)
    with open(base / "proposals.pkl", "wb") as f:  # the same in Detectron2's pickle format
        pickle.dump({"ids": ids, "boxes": boxes, "objectness_logits": scores, "bbox_mode": 0}, f)
    return base


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_proposal_files_npz_and_plain_data_pickles(world, tmp_path):
    npz = read_proposals(str(world / "proposals.npz"))
    pkl = read_proposals(str(world / "proposals.pkl"), allow_pickle=True)
    assert sorted(npz) == sorted(pkl) and len(npz) == 10
    for i in npz:
        np.testing.assert_array_equal(npz[i][0], pkl[i][0])
        np.testing.assert_array_equal(npz[i][1], pkl[i][1])
        assert npz[i][0].shape == (len(npz[i][1]), 4) and npz[i][2] == BoxMode.XYXY_ABS
    with pytest.raises(ValueError, match="convert it with tools/convert_proposals.py, or pass --allow-pickle"):
        read_proposals(str(world / "proposals.pkl"))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"ids": [1], "boxes": [_RunsCode()], "objectness_logits": [[1.0]]}))
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        read_proposals(str(evil), allow_pickle=True)
    assert not (Path.cwd() / "pwned").exists()


def _build(world, out, shard_size=3, combine="sum"):
    settings = RegionCacheSettings(num_proposals=8, shard_size=shard_size, combine=combine)
    model = load_clip(str(world / "clip.pt"))
    source = ProposalFileSource(str(world / "proposals.npz"))
    return build_region_cache(out, DatasetCatalog.get("tiny_toy_train_full"), source, model, str(world / "clip.pt"),
                              settings, dataset_name="tiny_toy_train_full", num_workers=0)


def _bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", ".lock")}


def test_storage_round_trip_several_shards(tmp_path):
    rng = np.random.default_rng(1)
    written, shards = {}, []
    for k in range(3):
        ids = [10 * k + i for i in range(4)]
        counts = rng.integers(0, 6, size=4)
        b = [rng.uniform(0, 50, (c, 4)).astype(np.float32) for c in counts]
        e = [rng.normal(size=(c, 8)).astype(np.float16) for c in counts]
        s = [rng.normal(size=c).astype(np.float32) for c in counts]
        shards.append({"name": f"shard_{k:05d}", "seals": write_shard(tmp_path, k, ids, b, e, s)})
        written.update({i: (bb, ee, ss) for i, bb, ee, ss in zip(ids, b, e, s)})
    write_manifest(tmp_path, {"dim": 8, "shards": shards})
    cache = RegionCache(tmp_path)
    assert len(cache) == 12
    for image_id, arrays in written.items():
        for got, want in zip(cache.get(image_id), arrays):
            np.testing.assert_array_equal(got, want)
    assert isinstance(cache.get(0)[1], np.memmap)


def test_build_contents(world, tmp_path):
    cache = RegionCache(_build(world, tmp_path / "c"), expected={"num_proposals": 8, "dim": 64})
    records = DatasetCatalog.get("tiny_toy_train_full")
    assert len(cache) == len(records)
    boxes, embeds, scores = cache.get(records[0]["image_id"])
    assert boxes.dtype == np.float32 and embeds.dtype == np.float16 and len(boxes) <= 8
    assert np.all(np.diff(scores) <= 0)  # sorted by objectness
    np.testing.assert_allclose(np.linalg.norm(embeds.astype(np.float32), axis=1), 1.0, atol=2e-3)
    first = RegionCache(_build(world, tmp_path / "f", combine="first"))
    assert not np.array_equal(first.get(records[0]["image_id"])[1], embeds)


def test_mapper_applies_image_transforms_to_cached_boxes(world, tmp_path, toy_cfg):
    out = _build(world, tmp_path / "c")
    toy_cfg.MODEL.VILD.REGION_CACHE_DIR = str(out)
    toy_cfg.MODEL.VILD.CLIP_MODEL = str(world / "clip.pt")
    toy_cfg.MODEL.VILD.NUM_CACHED_PROPOSALS = 8
    toy_cfg.MODEL.VILD.REGION_CACHE_DATASET = "tiny_toy_train_full"  # the config trains another dataset
    augs = [T.ResizeShortestEdge(200, 400), T.RandomFlip(prob=1.0)]
    mapper = ViLDDatasetMapper(toy_cfg, is_train=True, augmentations=augs)
    record = DatasetCatalog.get("tiny_toy_train_full")[0]
    out_dict = mapper(record)
    regions, gt = out_dict["clip_regions"], out_dict["instances"]
    assert regions.image_size == tuple(out_dict["image"].shape[1:])
    # Proposals with objectness 10 are the ground-truth boxes: after resize + flip they must equal
    # the transformed ground truth and still cover the object's pixels.
    n = len(gt)
    got = regions.proposal_boxes.tensor[:n]
    order = torch.cdist(got, gt.gt_boxes.tensor).argmin(1)
    torch.testing.assert_close(got, gt.gt_boxes.tensor[order], atol=1e-3, rtol=0)
    h, w = regions.image_size
    masks = BitMasks.from_polygon_masks(gt.gt_masks, h, w).tensor
    for box, mask in zip(got, masks[order]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        cx, cy = xs + 0.5, ys + 0.5  # pixel centres
        inside = (cx >= box[0] - 0.5) & (cx <= box[2] + 0.5) & (cy >= box[1] - 0.5) & (cy <= box[3] + 0.5)
        assert len(xs) > 0 and inside.all()
    assert regions.clip_embeds.dtype == torch.float16 and regions.clip_embeds.shape[1] == 64


def test_mapper_missing_entry_error_and_skip(world, tmp_path, toy_cfg):
    out = _build(world, tmp_path / "c")
    toy_cfg.MODEL.VILD.REGION_CACHE_DIR = str(out)
    toy_cfg.MODEL.VILD.CLIP_MODEL = str(world / "clip.pt")
    toy_cfg.MODEL.VILD.REGION_CACHE_DATASET = "tiny_toy_train_full"
    toy_cfg.MODEL.VILD.NUM_CACHED_PROPOSALS = 8
    record = dict(DatasetCatalog.get("tiny_toy_train_full")[0], image_id=999)
    with pytest.raises(KeyError, match="image 999.*SKIP_MISSING_REGIONS"):
        ViLDDatasetMapper(toy_cfg, is_train=True)(dict(record))
    toy_cfg.DATASETS.VILD.SKIP_MISSING_REGIONS = True
    mapper = ViLDDatasetMapper(toy_cfg, is_train=True)
    assert len(mapper(dict(record))["clip_regions"]) == 0 and mapper.num_missing == 1


def test_corrupt_shard_and_manifest_mismatch(world, tmp_path, toy_cfg):
    out = _build(world, tmp_path / "c")
    with pytest.raises(SettingsMismatchError, match=r"holds a region cache built with other settings \(dim: 64 there, "
                       r"512 asked\): rebuild the cache"):
        RegionCache(out, expected={"dim": 512})
    with pytest.raises(SettingsMismatchError, match="num_proposals: 8 there, 300 asked"):
        RegionCache(out, expected={"num_proposals": 300})
    with pytest.raises(SettingsMismatchError, match="clip: 'sha256:.* there, 'name:ViT-B/32' asked"):
        RegionCache(out, expected={"clip": "name:ViT-B/32"})
    with pytest.raises(SettingsMismatchError, match=r"build.json holds a region cache built with other settings "
                       r"\(shard_size: 3 there, 2 asked\): use another output folder, or delete \S+ to rebuild it"):
        _build(world, out, shard_size=2)
    emb = out / "shard_00001" / "embeds.npy"
    data = bytearray(emb.read_bytes())
    data[-1] ^= 0xFF
    emb.write_bytes(bytes(data))
    cache = RegionCache(out)
    with pytest.raises(CorruptCacheError, match="shard_00001/embeds.npy is altered"):
        cache.get(DatasetCatalog.get("tiny_toy_train_full")[3]["image_id"])


def _cli(world, out, *extra):
    return ["--config-file", str(TOY_CFG), "--dataset", f"{TOY_PREFIX}_train_full", "--proposals",
            str(world / "proposals.npz"), "--output", str(out), "--shard-size", "1", "--num-workers", "0",
            "--device", "cpu", *extra, "MODEL.VILD.CLIP_MODEL", str(world / "clip.pt"),
            "MODEL.VILD.NUM_CACHED_PROPOSALS", "8"]


def test_sigkill_then_resume_is_byte_identical(world, tmp_path):
    env = subprocess_env(world)
    cmd = [REPO / "tools/build_region_cache.py"]
    run(cmd + _cli(world, tmp_path / "full"), env)
    kill_when(start(cmd + _cli(world, tmp_path / "killed"), env), (tmp_path / "killed" / "shard_00002").exists,
              timeout=120)
    assert not (tmp_path / "killed" / "manifest.json").exists(), "the build finished before it was killed"
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        RegionCache(tmp_path / "killed")
    run(cmd + _cli(world, tmp_path / "killed"), env)
    assert _bytes(tmp_path / "killed") == _bytes(tmp_path / "full")
    assert RegionCache(tmp_path / "killed").manifest["shards"] == RegionCache(tmp_path / "full").manifest["shards"]


def test_two_process_gloo_build_is_byte_identical(world, tmp_path, monkeypatch):
    # Spawned ranks register TOY_PREFIX_* under $DETECTRON2_DATASETS; the 1-process reference runs
    # as a subprocess for the same reason.
    monkeypatch.setenv("DETECTRON2_DATASETS", str(world))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run([REPO / "tools/build_region_cache.py", *_cli(world, tmp_path / "one")])
    args = make_parser().parse_args(_cli(world, tmp_path / "two", "--num-gpus", "2"))
    launch(build_from_args, 2, dist_url="auto", args=(args,))
    assert _bytes(tmp_path / "one") == _bytes(tmp_path / "two")
    assert len(list((tmp_path / "two").glob("shard_*"))) == 10


def test_cached_embedding_accuracy_counts_object_proposals(world, tmp_path):
    from vild_d2.evaluation import cached_embedding_accuracy

    cache = RegionCache(_build(world, tmp_path / "c"))
    records = DatasetCatalog.get("tiny_toy_train_full")
    novel = MetadataCatalog.get("tiny_toy_train_full").novel_class_ids
    text = torch.nn.functional.normalize(torch.randn(24, 64), dim=1)
    out = cached_embedding_accuracy(cache, records, text, novel)
    # Every ground-truth box is a cached proposal (objectness 10), hence overlaps its object.
    kept = sum(min(len(r["annotations"]), 8) for r in records)
    assert out["novel"]["proposals"] + out["base"]["proposals"] >= kept
    assert 0.0 < out["share_overlapping_objects"] <= 1.0
    # ... and every object (at most 4 per image) is covered by its own box.
    assert out["novel"]["objects"] + out["base"]["objects"] == sum(len(r["annotations"]) for r in records)
    assert out["novel"]["objects_covered"] == out["base"]["objects_covered"] == 1.0


def test_objects_of_an_image_without_cached_proposals_count_as_uncovered():
    from vild_d2.evaluation import cached_embedding_accuracy

    class OneEmptyImage:  # the RegionCache interface the diagnostic uses
        def __contains__(self, image_id):
            return image_id == 1

        def get(self, image_id):
            return np.zeros((0, 4), np.float32), np.zeros((0, 64), np.float16), np.zeros(0, np.float32)

    record = {"image_id": 1, "annotations": [{"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYWH_ABS,
                                              "category_id": 3}]}
    out = cached_embedding_accuracy(OneEmptyImage(), [record], torch.eye(24, 64), novel_ids=[3])
    assert (out["novel"]["objects"], out["novel"]["objects_covered"], out["novel"]["proposals"]) == (1, 0.0, 0)
    assert out["base"]["objects"] == 0
