"""The main job on the toy world (``make demo``), built from the same tools a user runs by hand:

toy world -> toy CLIP teacher -> text classifiers (base for training, all for evaluation) ->
class-agnostic RPN trained on base boxes -> CLIP region cache of its proposals -> ViLD training
-> LVIS evaluation (AP, APr, APc, APf) -> proposal recall AR@300 (novel vs base) -> pictures,
and how many novel validation objects the model names right.

Every stage writes into a folder keyed by a hash of everything it depends on, so a rerun skips
finished stages and a changed setting redoes only what depends on it. Run as
``python -m vild_d2.pipeline [--output output/demo]``.
"""
import argparse
import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import launch
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from PIL import Image

from .config import add_vild_config, check_same_backbone
from .data import register_from_config
from .data.builtin import default_toy_root
from .data.records import annotation_boxes
from .engine import ViLDTrainer, summary_table
from .modeling.diagnostics import novel_object_naming
from .region_cache import DetectorProposalSource, RegionCacheSettings, build_region_cache
from .text_classifier import cached_text_classifier, load_clip
from .toy import SPLIT_FILES, TOY_PREFIX, ToyWorldSettings, build_toy_world
from .toy.dataset import read_settings
from .toy.teacher import TeacherSettings, ensure_teacher, teacher_path
from .visualize import convert_rgb, draw_detections

logger = logging.getLogger("vild_d2.pipeline")
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "toy"
TRAIN, VAL = f"{TOY_PREFIX}_train_base", f"{TOY_PREFIX}_val"


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    world: ToyWorldSettings = ToyWorldSettings()
    teacher: TeacherSettings = TeacherSettings()
    vild_config: str = str(CONFIGS / "ViLD-Toy-ensemble.yaml")
    rpn_config: str = str(CONFIGS / "RPN-Toy-Lite-FPN.yaml")
    opts: tuple = ()  # config overrides for the ViLD model, KEY VALUE ...
    rpn_opts: tuple = ()
    num_pictures: int = 8
    # Drawn detections score above this. The ensemble's geometric mean spreads a softmax over
    # all K classes: on the toy model (make demo) the right name of a novel object scores above
    # 0.15 about twice as often as above 0.3.
    picture_score_threshold: float = 0.15
    # Start the ViLD detector from the base-class RPN's backbone and RPN (when the ViLD config
    # names no MODEL.WEIGHTS): the toy world has no pretrained backbone to start from.
    init_from_rpn: bool = True
    # Processes (Detectron2's launch; on CPUs each takes cpu_count / n threads) for the region
    # cache and for training (GPUs: one per GPU). On 2 CPU cores one process is faster for both:
    # cache 121 s vs 134 s with two; ViLD training (make demo) 0.37 vs 0.57 s/iteration with gloo DDP.
    cache_workers: int = 1
    train_workers: int = 1


# Seconds instead of minutes: tiny world, few steps. For tests and smoke runs only.
FAST = PipelineSettings(
    world=ToyWorldSettings(num_train=16, num_val=4),
    teacher=TeacherSettings(steps=20, batch_size=32, warmup=5),
    opts=("SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "SOLVER.IMS_PER_BATCH", "2",
          "MODEL.VILD.NUM_CACHED_PROPOSALS", "8", "TEST.DETECTIONS_PER_IMAGE", "20"),
    rpn_opts=("SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "SOLVER.IMS_PER_BATCH", "2"),
    num_pictures=2,
)


def _worker(fn, args, threads: int):
    torch.set_num_threads(threads)
    setup_logger(name="vild_d2", distributed_rank=comm.get_rank())
    setup_logger(name="detectron2", distributed_rank=comm.get_rank())
    fn(*args)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _cfg(path, opts, **overrides):
    cfg = get_cfg()
    add_vild_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


def novel_first(records, novel_class_ids):
    """The records that hold an object of a novel class, then the others, each in dataset order."""
    novel = set(novel_class_ids)
    return sorted(records, key=lambda r: all(a["category_id"] not in novel for a in r["annotations"]))


class Pipeline:
    def __init__(self, out: str, world_root: str, s: PipelineSettings):
        if Path(world_root).resolve() != Path(default_toy_root()).resolve():
            # TOY_PREFIX_* are registered at import time (in every worker process too) from that root
            raise ValueError(f"the toy datasets are registered at {default_toy_root()}, not {world_root}: "
                             f"set DETECTRON2_DATASETS to the folder that should hold {TOY_PREFIX}/ instead")
        self.out, self.world_root, self.s = Path(out), world_root, s
        self.timings: Dict[str, tuple] = {}

    def stage(self, name: str, done: bool, fn):
        t0 = time.perf_counter()
        if done:
            logger.info("stage %s: cached, skipped", name)
            result = fn(skip=True)
        else:
            logger.info("stage %s: running", name)
            result = fn(skip=False)
        self.timings[name] = (time.perf_counter() - t0, "cached" if done else "ran")
        return result

    def run(self) -> Dict:
        s = self.s
        self.stage("toy world", read_settings(self.world_root) == dataclasses.asdict(s.world),
                   lambda skip: build_toy_world(self.world_root, s.world))
        teacher = str(self.stage("toy CLIP teacher", teacher_path(self.world_root, s.teacher).is_file(),
                                 lambda skip: ensure_teacher(self.world_root, s.teacher)))
        text_dir = self.out / "text_classifiers"
        train_cls, test_cls = (str(cached_text_classifier(text_dir, d, teacher)) for d in
                               (TRAIN, VAL))
        common = {"MODEL.VILD.CLIP_MODEL": teacher, "MODEL.VILD.TEXT_EMBEDDINGS": train_cls}
        rpn_cfg = _cfg(s.rpn_config, s.rpn_opts, **common)
        rpn_dir = self.out / f"rpn_{_key(rpn_cfg.dump(), dataclasses.asdict(s.world))}"
        rpn_cfg.OUTPUT_DIR = str(rpn_dir)
        self.stage("RPN (base classes)", (rpn_dir / "model_final.pth").is_file(),
                   lambda skip: skip or self.launch(self.s.train_workers, self.train, rpn_cfg))

        vild_cfg = _cfg(s.vild_config, s.opts, **common, **{"MODEL.VILD.TEST_TEXT_EMBEDDINGS": test_cls})
        settings = RegionCacheSettings(num_proposals=vild_cfg.MODEL.VILD.NUM_CACHED_PROPOSALS,
                                       scales=tuple(vild_cfg.MODEL.VILD.CROP_SCALES), shard_size=100)
        cache_dir = self.out / f"region_cache_{_key(rpn_dir.name, teacher, dataclasses.asdict(settings))}"
        self.stage("region cache", (cache_dir / "manifest.json").is_file(),
                   lambda skip: skip or self.launch(self.s.cache_workers, self.cache, rpn_cfg, cache_dir, teacher,
                                                                settings))
        vild_cfg.MODEL.VILD.REGION_CACHE_DIR = str(cache_dir)
        if s.init_from_rpn and not vild_cfg.MODEL.WEIGHTS:
            check_same_backbone(rpn_cfg, vild_cfg)
            vild_cfg.MODEL.WEIGHTS = str(rpn_dir / "model_final.pth")
        vild_dir = self.out / f"vild_{_key(vild_cfg.dump())}"
        vild_cfg.OUTPUT_DIR = str(vild_dir)
        self.stage("ViLD training + evaluation", (vild_dir / "eval_results.json").is_file(),
                   lambda skip: skip or self.launch(self.s.train_workers, self.train, vild_cfg))
        results = json.loads((vild_dir / "eval_results.json").read_text())
        recall = self.stage("proposal recall", (rpn_dir / "recall.json").is_file(),
                            lambda skip: json.loads((rpn_dir / "recall.json").read_text()) if skip
                            else self.recall(rpn_cfg, rpn_dir))
        pictures = vild_dir / "pictures"
        self.stage("pictures", pictures.is_dir(), lambda skip: skip or self.pictures(vild_cfg, pictures))
        naming = self.naming(vild_cfg)
        self.report(results, recall, naming, pictures)
        return {"results": results, "recall": recall, "naming": naming, "pictures": str(pictures),
                "timings": self.timings, "vild_cfg": vild_cfg}

    @staticmethod
    def launch(workers: int, fn, *args) -> bool:
        """Run a stage in ``workers`` processes (one: in this process)."""
        if workers <= 1:
            return fn(*args)
        threads = max(1, (os.cpu_count() or 1) // workers)
        launch(_worker, workers, dist_url="auto", args=(fn, args, threads))
        return True

    @staticmethod
    def train(cfg) -> bool:
        register_from_config(cfg)  # DATASETS.VILD.REGISTER, in every worker process
        cfg.freeze()
        if comm.is_main_process():  # the full config, for train_net.py --eval-only and reruns by hand
            Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
            (Path(cfg.OUTPUT_DIR) / "config.yaml").write_text(cfg.dump())
        trainer = ViLDTrainer(cfg)
        trainer.resume_or_load(resume=True)  # a killed stage resumes from its last checkpoint
        trainer.train()
        return True

    @staticmethod
    def cache(rpn_cfg, cache_dir, teacher, settings) -> bool:
        source = DetectorProposalSource(rpn_cfg, str(Path(rpn_cfg.OUTPUT_DIR) / "model_final.pth"))
        build_region_cache(cache_dir, DatasetCatalog.get(TRAIN), source, load_clip(teacher), teacher,
                           settings, dataset_name=TRAIN, num_workers=1)
        return True

    @staticmethod
    def recall(rpn_cfg, rpn_dir, top_k: int = 300, iou: float = 0.5) -> Dict:
        """AR@300 at IoU 0.5 of the RPN on validation objects, novel versus base classes."""
        cfg = rpn_cfg.clone()
        cfg.defrost()
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = top_k
        source = DetectorProposalSource(cfg, str(rpn_dir / "model_final.pth"))
        novel = set(MetadataCatalog.get(VAL).novel_class_ids)
        hits = {"novel": [], "base": []}
        for r in DatasetCatalog.get(VAL):
            boxes, _ = source(r, read_image(r["file_name"], format="RGB"))
            gt = annotation_boxes(r)
            best = pairwise_iou(gt, Boxes(torch.from_numpy(boxes[:top_k]))).max(1).values if len(boxes) else \
                torch.zeros(len(gt))
            for a, b in zip(r["annotations"], best.tolist()):
                hits["novel" if a["category_id"] in novel else "base"].append(b >= iou)
        recall = {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
        recall["objects"] = {k: len(v) for k, v in hits.items()}
        (rpn_dir / "recall.json").write_text(json.dumps(recall, indent=1))
        return recall

    @staticmethod
    def lvis_results(cfg) -> List[dict]:
        """The LVIS result dicts of a trained stage's evaluation on cfg.DATASETS.TEST[0]."""
        folder = Path(ViLDTrainer.inference_folder(cfg, cfg.DATASETS.TEST[0]))
        return json.loads((folder / "lvis_instances_results.json").read_text())

    def naming(self, cfg) -> Dict:
        """How often the top detection on a novel validation object names it right (from
        :meth:`lvis_results`; :func:`vild_d2.modeling.diagnostics.novel_object_naming`)."""
        results = self.lvis_results(cfg)
        gt = json.loads((Path(self.world_root) / SPLIT_FILES["val"]).read_text())
        novel = {c["id"] for c in gt["categories"] if c["frequency"] == "r"}
        naming = novel_object_naming(results, gt, novel)
        names = {c["id"]: c["name"] + (" (novel)" if c["id"] in novel else "") for c in gt["categories"]}
        naming["wrong_names"] = {names[k]: v for k, v in sorted(naming["wrong_names"].items(), key=lambda kv: -kv[1])}
        return naming

    def pictures(self, cfg, folder: Path) -> bool:
        """PNGs of validation images with labelled detections, those holding a novel object first;
        novel classes drawn in magenta."""
        model = ViLDTrainer.build_model(cfg)
        DetectionCheckpointer(model).load(str(Path(cfg.OUTPUT_DIR) / "model_final.pth"))
        model.eval()
        meta = MetadataCatalog.get(VAL)
        records = novel_first(DatasetCatalog.get(VAL), meta.novel_class_ids)
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for r in records[: self.s.num_pictures]:
            image = read_image(r["file_name"], format="RGB")
            with torch.no_grad():
                model_image = convert_rgb(image, cfg.INPUT.FORMAT)
                inst = model([{"image": torch.from_numpy(model_image.transpose(2, 0, 1).copy())}])[0]["instances"]
            inst = inst[inst.scores > self.s.picture_score_threshold].to("cpu")
            drawn = draw_detections(image, inst, meta.thing_classes, meta.novel_class_ids, scale=3.0)
            Image.fromarray(drawn).save(tmp / f"{Path(r['file_name']).stem}.png")
        tmp.rename(folder)
        return True

    def report(self, results, recall, naming, pictures) -> None:
        for name, (secs, how) in self.timings.items():
            logger.info("stage %-28s %-7s %7.1f s", name, how, secs)
        logger.info("ViLD on the toy world (novel = rare classes never labelled in training):\n%s",
                    summary_table(results))
        logger.info("proposal recall AR@300 (IoU 0.5) on val: novel %.1f%% (%d objects), base %.1f%% (%d objects)",
                    100 * recall["novel"], recall["objects"]["novel"], 100 * recall["base"], recall["objects"]["base"])
        right = naming["named_right"] / max(naming["objects"], 1)
        logger.info("novel val objects: %d; found (a detection at IoU 0.5) %d; named right by the top detection %d "
                    "(%.1f%%); most frequent wrong names: %s", naming["objects"], naming["found"],
                    naming["named_right"], 100 * right, dict(list(naming["wrong_names"].items())[:4]))
        logger.info("pictures: %s", pictures)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/demo", help="pipeline folder (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="tiny sizes and a few iterations (smoke test)")
    p.add_argument("--cache-workers", type=int, help=f"processes building the region cache (default: {PipelineSettings.cache_workers})")
    p.add_argument("--train-workers", type=int, help=f"processes (GPUs) per training stage (default: {PipelineSettings.train_workers})")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="ViLD config overrides: KEY VALUE ...")
    args = p.parse_args()
    setup_logger(name="vild_d2")
    setup_logger(name="detectron2")
    base = FAST if args.fast else PipelineSettings()
    settings = dataclasses.replace(base, opts=base.opts + tuple(args.opts))
    for key in ("cache_workers", "train_workers"):
        if getattr(args, key) is not None:
            settings = dataclasses.replace(settings, **{key: getattr(args, key)})
    Pipeline(args.output, default_toy_root(), settings).run()


if __name__ == "__main__":
    main()
