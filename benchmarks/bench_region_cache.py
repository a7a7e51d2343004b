"""Region-cache figures on CPU, each against its baseline in the same process:

1. crops/s of the batched path (roi_align crops + batched encoder) against a naive loop (PIL
   crop + CLIP preprocess per proposal, encoded one by one and batched), same ViT-B/32-sized
   random CLIP, same image and proposals; share of wall time inside the encoder forward;
2. bytes per image at M=300, D=512;
3. ViLDDatasetMapper time per image with the cache against DatasetMapper without it.

    python -m benchmarks.bench_region_cache [--proposals 48] [--mapper-images 200]
"""
import argparse
import tempfile
from pathlib import Path

import clip
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, DatasetMapper
from PIL import Image

from benchmarks.bench_text_classifier import vit_b32_random
from benchmarks.harness import Timers, timed
from vild_d2.crops import clip_crops, embed_regions
from vild_d2.data import ViLDDatasetMapper
from vild_d2.engine import load_config
from vild_d2.region_cache.storage import write_manifest, write_shard


def pil_crops(image: Image.Image, boxes, scale: float, preprocess) -> list:
    """Every box scaled by ``scale`` about its centre, cropped by PIL and CLIP-preprocessed, one by one."""
    crops = []
    for x0, y0, x1, y1 in boxes.tolist():
        cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
        crops.append(preprocess(image.crop((cx - hw, cy - hh, cx + hw, cy + hh))))
    return crops


@torch.no_grad()
def naive(visual, image: Image.Image, boxes, scales, batch: bool):
    preprocess = clip.clip._transform(visual.input_resolution)
    embs = []
    for scale in scales:
        crops = pil_crops(image, boxes, scale, preprocess)
        if batch:
            embs.append(F.normalize(visual(torch.stack(crops)), dim=-1))
        else:
            embs.append(torch.cat([F.normalize(visual(c[None]), dim=-1) for c in crops]))
    return F.normalize(sum(embs), dim=-1)


def bench_crops(num_props):
    model = vit_b32_random()
    visual = model.visual
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    xy = rng.uniform(0, 400, (num_props, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + rng.uniform(20, 240, (num_props, 2))], 1), dtype=torch.float32)
    scales = (1.0, 1.5)
    n = num_props * len(scales)
    encoder = Timers().hook(visual, "encoder")
    tensor = torch.from_numpy(image.transpose(2, 0, 1).copy())  # HWC -> CHW
    embed_regions(visual, tensor, boxes[:4], scales, "sum", 256)  # warm-up
    results = {}
    for name, fn in (("batched roi_align (ours)", lambda: embed_regions(visual, tensor, boxes, scales, "sum", 256)),
                     ("naive PIL, batched encoder", lambda: naive(visual, Image.fromarray(image), boxes, scales, True)),
                     ("naive PIL, one crop per forward", lambda: naive(visual, Image.fromarray(image), boxes, scales,
                                                                       False))):
        encoder.reset()
        wall = timed(fn)
        results[name] = (n / wall, encoder.spent["encoder"] / wall)
    base = results["naive PIL, one crop per forward"][0]
    # Crop + preprocess alone (no encoder): what the batched path replaces.
    rois = torch.cat([torch.zeros(num_props, 1), boxes], 1)
    preprocess = clip.clip._transform(visual.input_resolution)
    pil = Image.fromarray(image)
    ours_prep = n / timed(lambda: clip_crops(tensor[None].float(), rois, visual.input_resolution, scales))
    naive_prep = n / timed(lambda: [pil_crops(pil, boxes, scale, preprocess) for scale in scales])
    print(f"crops: {num_props} proposals x {len(scales)} scales = {n} crops of 224 px, ViT-B/32 random, "
          f"{torch.get_num_threads()} threads")
    for name, (rate, share) in results.items():
        print(f"  {name:34s} {rate:7.1f} crops/s  {100 * share:5.1f}% in encoder  {rate / base:5.2f}x naive")
    print(f"  crop + preprocess only: roi_align {ours_prep:.0f} crops/s, PIL {naive_prep:.0f} crops/s "
          f"({ours_prep / naive_prep:.1f}x)")


def bench_storage_and_mapper(num_images):
    cfg = load_config("configs/toy/Base-ViLD-Toy-R18-FPN.yaml")  # registers the toy world ($DETECTRON2_DATASETS)
    records = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:num_images]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        shards, shard_size = [], 64
        for k in range(0, len(records), shard_size):
            chunk = records[k:k + shard_size]
            xy = [rng.uniform(0, 100, (300, 2)) for _ in chunk]
            b = [np.concatenate([p, p + rng.uniform(4, 50, (300, 2))], 1).astype(np.float32) for p in xy]
            e = [rng.normal(size=(300, 512)).astype(np.float16) for _ in chunk]
            s = [np.sort(rng.normal(size=300))[::-1].astype(np.float32) for _ in chunk]
            sums = write_shard(tmp, k // shard_size, [r["image_id"] for r in chunk], b, e, s)
            shards.append({"name": f"shard_{k // shard_size:05d}", "seals": sums})
        write_manifest(tmp, {"clip": "name:bench", "dim": 512, "num_proposals": 300, "dataset": cfg.DATASETS.TRAIN[0],
                             "shards": shards})
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        print(f"storage: M=300, D=512: {size / len(records) / 1000:.1f} KB per image "
              f"({size / len(records):.0f} bytes, manifest and seals included)")
        cfg.MODEL.VILD.REGION_CACHE_DIR = tmp
        cfg.MODEL.VILD.NUM_CACHED_PROPOSALS = 300
        cfg.MODEL.VILD.CLIP_MODEL = "bench"
        plain, vild = DatasetMapper(cfg, is_train=True), ViLDDatasetMapper(cfg, is_train=True)
        _ = vild.cache  # open (and checksum-verify the index) outside the timing, as a worker does once
        times = {}
        for _ in range(2):  # second pass is the measured one: page cache warm for both
            for name, mapper in (("DatasetMapper", plain), ("ViLDDatasetMapper", vild)):
                times[name] = timed(lambda mapper=mapper: [mapper(dict(r)) for r in records]) / len(records) * 1000
        print(f"mapper: {times['DatasetMapper']:.2f} ms/image without cache, {times['ViLDDatasetMapper']:.2f} ms/image "
              f"with it: +{times['ViLDDatasetMapper'] - times['DatasetMapper']:.2f} ms ({len(records)} toy images)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proposals", type=int, default=48)
    p.add_argument("--mapper-images", type=int, default=200)
    args = p.parse_args()
    bench_storage_and_mapper(args.mapper_images)
    bench_crops(args.proposals)


if __name__ == "__main__":
    main()
