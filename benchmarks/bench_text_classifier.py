"""Time to build LVIS text classifiers with a ViT-B/32-sized, randomly initialised CLIP text
encoder on CPU: a batch-size sweep on a class subset, trimmed (padding after EOT skipped) vs
full 77-token batches on a smaller subset, and the whole 1203-class build.

    python -m benchmarks.bench_text_classifier [--sweep-classes 100] [--full]
"""
import argparse

import torch
from clip.model import CLIP

from benchmarks.harness import timed
from vild_d2.text_classifier import encode_classes, read_templates
from vild_d2.vocabularies import load_vocabulary


def vit_b32_random() -> CLIP:
    """CLIP ViT-B/32 dimensions (text: width 512, 8 heads, 12 layers, 77 tokens), random weights."""
    torch.manual_seed(0)
    return CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                transformer_layers=12).float().eval()


def encode_time(model, synonyms, templates, **kw) -> float:
    return timed(lambda: encode_classes(model, synonyms, templates, **kw))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep-classes", type=int, default=100)
    p.add_argument("--trim-classes", type=int, default=20)
    p.add_argument("--batch-sizes", default="64,256,1024")
    p.add_argument("--full", action="store_true", help="also time all 1203 classes at the best batch size")
    args = p.parse_args()
    model = vit_b32_random()
    _, synonyms = load_vocabulary("lvis")
    templates = read_templates()
    print(f"LVIS v1: {len(synonyms)} classes, {len(templates)} templates, first synonym only; "
          f"torch threads {torch.get_num_threads()}")
    sub = synonyms[: args.trim_classes]
    full_t = encode_time(model, sub, templates, batch_size=256, use_synonyms=False, trim=False)
    trim_t = encode_time(model, sub, templates, batch_size=256, use_synonyms=False, trim=True)
    n = len(sub) * len(templates)
    print(f"{len(sub)} classes ({n} texts), batch 256: 77-token batches {full_t:.1f} s ({n / full_t:.0f} texts/s), "
          f"trimmed {trim_t:.1f} s ({n / trim_t:.0f} texts/s): {full_t / trim_t:.2f}x")
    sub = synonyms[: args.sweep_classes]
    n = len(sub) * len(templates)
    best = None
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        t = encode_time(model, sub, templates, batch_size=bs, use_synonyms=False)
        print(f"batch {bs:5d}: {len(sub)} classes ({n} texts) in {t:.1f} s = {n / t:.0f} texts/s, "
              f"projected 1203 classes {t * len(synonyms) / len(sub) / 60:.1f} min")
        best = min(best or (t, bs), (t, bs))
    if args.full:
        t = encode_time(model, synonyms, templates, batch_size=best[1], use_synonyms=False)
        print(f"all {len(synonyms)} classes, batch {best[1]}: {t / 60:.1f} min")


if __name__ == "__main__":
    main()
