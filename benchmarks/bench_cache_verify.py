"""Cost of verifying a region cache, per GB, on a synthetic cache of LVIS-like shards
(256 images x M=300 regions x D=512 float16 per shard: ~80 MB each, ~400 for LVIS):

1. full verification without a stamp (sha256 of every array, shape checks), one process;
2. the same with the stamp a previous verification left (stat of every file only);
3. one rank's share of two (rank 0, world size 2);
4. opening a trusted reader (``verify=False``) against the old per-process path: a checksumming
   reader that touches every shard, i.e. what each DataLoader worker of each rank did before.

The files were just written, so they are read from the page cache: the figures are the hashing
(CPU) cost; on a cold disk, reading at the disk's rate comes on top.

    python -m benchmarks.bench_cache_verify [--gb 1.0] [--out DIR]
"""
import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import timed
from vild_d2.region_cache import RegionCache, verify_region_cache
from vild_d2.region_cache.storage import STAMP, shard_name, write_manifest, write_shard


def synthetic_cache(root: Path, gb: float, images: int, regions: int, dim: int) -> float:
    """Write shards of random regions until the embeddings reach ``gb``; return the GB on disk."""
    rng = np.random.default_rng(0)
    per_shard = images * regions * dim * 2
    shards, image_id = [], 0
    emb = rng.standard_normal((regions, dim)).astype(np.float16)  # one image's M x D, reused: hashing is content-blind
    box = rng.uniform(0, 600, (regions, 4)).astype(np.float32)
    score = rng.standard_normal(regions).astype(np.float32)
    for k in range(max(1, round(gb * 1e9 / per_shard))):
        ids = list(range(image_id, image_id + images))
        image_id += images
        sums = write_shard(root, k, ids, [box] * images, [emb] * images, [score] * images)
        shards.append({"name": shard_name(k), "seals": sums})
    write_manifest(root, {"dim": dim, "num_proposals": regions, "shards": shards})
    return sum(p.stat().st_size for p in root.rglob("*.npy")) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="GB of embeddings to write")
    p.add_argument("--images", type=int, default=256, help="images per shard")
    p.add_argument("--regions", type=int, default=300, help="M, regions per image")
    p.add_argument("--dim", type=int, default=512, help="D")
    p.add_argument("--out", default="", help="folder for the cache (default: a temporary one, removed)")
    args = p.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="cache_verify_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        size = synthetic_cache(root, args.gb, args.images, args.regions, args.dim)
        num = len(list(root.glob("shard_*")))
        print(f"cache: {num} shards, {size:.2f} GB of arrays ({args.images} images x M={args.regions} x D={args.dim})")
        full = timed(lambda: verify_region_cache(root))
        print(f"1. full verification, no stamp:  {full:6.2f} s = {full / size:5.2f} s/GB")
        stamped = timed(lambda: verify_region_cache(root))
        print(f"2. with the stamp:               {stamped:6.3f} s ({1000 * stamped / num:.2f} ms per shard)")
        (root / STAMP).unlink()
        share = timed(lambda: verify_region_cache(root, rank=0, world_size=2))
        print(f"3. rank 0 of 2 (its share only): {share:6.2f} s")
        trusted = timed(lambda: RegionCache(root, verify=False))
        old = timed(lambda: [c.get(k * args.images) for c in [RegionCache(root)] for k in range(num)])
        print(f"4. trusted reader open: {trusted:.3f} s; checksumming reader touching every shard: {old:.2f} s "
              "per process (before: per DataLoader worker per rank)")
    finally:
        if not args.out:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
