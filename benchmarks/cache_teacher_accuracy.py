"""Zero-shot accuracy of the cached CLIP region embeddings on proposals that overlap an object,
novel vs base, and the share of objects that any cached proposal covers (IoU >= 0.5): are the
ViLD-image distillation targets any good, and do they reach the novel objects at all?

    python -m benchmarks.cache_teacher_accuracy --cache output/demo/region_cache_<hash> \
        --classifier output/demo/text_classifiers/toy_v4_val_<hash>.npy [--dataset toy_v4_train_full]
"""
import argparse
import json

from detectron2.data import DatasetCatalog, MetadataCatalog

from vild_d2.evaluation import cached_embedding_accuracy
from vild_d2.kit.toy import TOY_PREFIX, default_toy_root, register_toy_world
from vild_d2.region_cache import RegionCache
from vild_d2.text_classifier import load_text_classifier


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True)
    p.add_argument("--classifier", required=True, help="text classifier of the dataset's (full) vocabulary")
    p.add_argument("--dataset", default=f"{TOY_PREFIX}_train_full", help="dataset with all classes annotated")
    p.add_argument("--max-images", type=int, default=0, help="0 = all")
    args = p.parse_args()
    register_toy_world(default_toy_root())  # the toy world of `make demo` ($DETECTRON2_DATASETS/toy_v4)
    names = MetadataCatalog.get(args.dataset).thing_classes
    emb, _ = load_text_classifier(args.classifier, expected_names=names)
    records = DatasetCatalog.get(args.dataset)
    records = records[: args.max_images] if args.max_images else records
    result = cached_embedding_accuracy(RegionCache(args.cache), records, emb,
                                       MetadataCatalog.get(args.dataset).novel_class_ids)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
