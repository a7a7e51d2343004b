"""The main job on the toy world (``make demo``): the toy-world preset of :mod:`vild_d2.recipe`.

toy world -> toy CLIP teacher -> the recipe (text classifiers, class-agnostic RPN trained on base
boxes, CLIP region cache of its proposals, ViLD training, LVIS evaluation (AP, APr, APc, APf),
proposal recall AR@300 novel vs base) -> pictures, and how many novel validation objects the
model names right.

Every stage writes into a folder keyed by a hash of everything it depends on, so a rerun skips
finished stages and a changed setting redoes only what depends on it. Run as
``python -m vild_d2.kit.pipeline [--output output/demo] [--num-gpus N] [KEY VALUE ...]``.
"""
import argparse
import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from PIL import Image

from vild_d2.artifacts import is_sealed, read_json, write_json
from vild_d2.engine import ViLDTrainer, summary_table
from vild_d2.evaluation import novel_object_naming
from vild_d2.model_zoo import get_config_file
from vild_d2.predictor import VocabularyPredictor
from vild_d2.recipe import RecipeSettings, Stage, run_recipe, run_stages, summary
from vild_d2.visualize import draw_detections

from .toy import SPLIT_FILES, TOY_PREFIX, ToyWorldSettings, build_toy_world, default_toy_root, toy_register_opts
from .toy.dataset import read_settings
from .toy.teacher import TeacherSettings, ensure_teacher, teacher_path

logger = logging.getLogger("vild_d2.kit.pipeline")
TRAIN, VAL = f"{TOY_PREFIX}_train_base", f"{TOY_PREFIX}_val"


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    world: ToyWorldSettings = ToyWorldSettings()
    teacher: TeacherSettings = TeacherSettings()
    vild_config: str = get_config_file("toy/ViLD-Toy-ensemble.yaml")
    rpn_config: str = get_config_file("toy/RPN-Toy-Lite-FPN.yaml")
    opts: tuple = ()  # config overrides for the ViLD model, KEY VALUE ...
    rpn_opts: tuple = ()
    num_pictures: int = 8
    # Drawn detections score above this: the ensemble's geometric mean spreads a softmax over all
    # K classes, so right names of novel objects often score between 0.15 and 0.3.
    picture_score_threshold: float = 0.15
    # Start the ViLD detector from the base-class RPN's backbone and RPN (when the ViLD config
    # names no MODEL.WEIGHTS): the toy world has no pretrained backbone to start from.
    init_from_rpn: bool = True
    # Processes of the recipe's stages (Detectron2's launch; on CPUs each takes cpu_count / n
    # threads). On 2 CPU cores one process is faster (benchmarks/README.md).
    num_gpus: int = 1


# Seconds instead of minutes: tiny world, few steps. For tests and smoke runs only.
FAST = PipelineSettings(
    world=ToyWorldSettings(num_train=16, num_val=4),
    teacher=TeacherSettings(steps=20, batch_size=32, warmup=5),
    opts=("SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "SOLVER.IMS_PER_BATCH", "2",
          "MODEL.VILD.NUM_CACHED_PROPOSALS", "8", "TEST.DETECTIONS_PER_IMAGE", "20"),
    rpn_opts=("SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "SOLVER.IMS_PER_BATCH", "2"),
    num_pictures=2,
)


def novel_first(records, novel_class_ids):
    """The records that hold an object of a novel class, then the others, each in dataset order."""
    novel = set(novel_class_ids)
    return sorted(records, key=lambda r: all(a["category_id"] not in novel for a in r["annotations"]))


class Pipeline:
    def __init__(self, out: str, world_root: str, settings: PipelineSettings):
        self.out, self.world_root, self.settings = Path(out), str(Path(world_root).resolve()), settings

    @property
    def teacher(self) -> Path:
        return teacher_path(self.world_root, self.settings.teacher)  # keyed by the world's settings too

    def toy_stages(self) -> List[Stage]:
        """What only the toy world needs before the recipe: its data, then its CLIP teacher."""
        s = self.settings
        return [Stage("toy world", (Path(self.world_root) / "settings.json",),
                      lambda: build_toy_world(self.world_root, s.world)),
                Stage("toy CLIP teacher", (), lambda: ensure_teacher(self.world_root, s.teacher),
                      lambda: self.teacher.is_file() and is_sealed(self.teacher))]

    def recipe_settings(self) -> RecipeSettings:
        s = self.settings
        register = tuple(toy_register_opts(self.world_root))  # the world's datasets, wherever it is
        return RecipeSettings(vild_config=s.vild_config, proposal_config=s.rpn_config,
                              opts=register + ("MODEL.VILD.CLIP_MODEL", str(self.teacher)) + tuple(s.opts),
                              proposal_opts=register + tuple(s.rpn_opts), init_from_proposals=s.init_from_rpn,
                              cache_shard_size=100, data_key=(TOY_PREFIX, dataclasses.asdict(s.world)))

    def run_toy_stages(self) -> Dict:
        """The toy world and its CLIP teacher (built, or checked and kept); their timings."""
        existing = read_settings(self.world_root)
        if existing and existing != dataclasses.asdict(self.settings.world):
            build_toy_world(self.world_root, self.settings.world)  # raises, naming the differing settings
        return run_stages(self.toy_stages())

    def run(self) -> Dict:
        timings = self.run_toy_stages()
        plan = run_recipe(self.out, self.recipe_settings(), num_gpus=self.settings.num_gpus)
        recipe = summary(plan)
        timings.update({k: tuple(v) for k, v in recipe["timings"].items()})
        pictures = plan.vild_dir / "pictures"
        if self.settings.num_pictures:
            timings.update(run_stages([Stage("pictures", (pictures / "pictures.json",),
                                             lambda: self.draw_pictures(plan.vild_cfg, pictures))]))
        naming = self.naming(plan.vild_cfg)
        self.report(timings, recipe["results"], recipe["recall"], naming, pictures)
        return {"results": recipe["results"], "recall": recipe["recall"], "naming": naming, "pictures": str(pictures),
                "timings": timings, "vild_cfg": plan.vild_cfg}

    @staticmethod
    def lvis_results(cfg) -> List[dict]:
        """The LVIS result dicts of a trained stage's evaluation on cfg.DATASETS.TEST[0]."""
        folder = Path(ViLDTrainer.inference_folder(cfg, cfg.DATASETS.TEST[0]))
        return read_json(folder / "lvis_instances_results.json", "LVIS results")

    def naming(self, cfg) -> Dict:
        """How often the top detection on a novel validation object names it right (from
        :meth:`lvis_results`; :func:`vild_d2.evaluation.novel_object_naming`)."""
        results = self.lvis_results(cfg)
        gt = read_json(Path(self.world_root) / SPLIT_FILES["val"], "toy world json")
        novel = {c["id"] for c in gt["categories"] if c["frequency"] == "r"}
        naming = novel_object_naming(results, gt, novel)
        names = {c["id"]: c["name"] + (" (novel)" if c["id"] in novel else "") for c in gt["categories"]}
        naming["wrong_names"] = {names[k]: v for k, v in sorted(naming["wrong_names"].items(), key=lambda kv: -kv[1])}
        return naming

    def draw_pictures(self, cfg, folder: Path) -> None:
        """PNGs of validation images with labelled detections, those holding a novel object first,
        drawn through the predictor users call (``demo.py``); novel classes in magenta."""
        meta = MetadataCatalog.get(VAL)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = str(Path(cfg.OUTPUT_DIR) / "model_final.pth")
        cfg.MODEL.VILD.TEXT_CACHE_DIR = str(Path(cfg.MODEL.VILD.TEST_TEXT_EMBEDDINGS).parent)  # the recipe's classifier
        predictor = VocabularyPredictor(cfg, VAL, novel_names=[meta.thing_classes[i] for i in meta.novel_class_ids])
        records = novel_first(DatasetCatalog.get(VAL), meta.novel_class_ids)[: self.settings.num_pictures]
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for r in records:
            image = read_image(r["file_name"], format="RGB")
            inst = predictor(image)
            inst = inst[inst.scores > self.settings.picture_score_threshold]
            drawn = draw_detections(image, inst, predictor.class_names, predictor.novel_ids, scale=3.0)
            Image.fromarray(drawn).save(tmp / f"{Path(r['file_name']).stem}.png")
        write_json(tmp / "pictures.json", [r["file_name"] for r in records])  # last: marks the folder complete
        if folder.exists():
            shutil.rmtree(folder)  # an earlier, incomplete one
        os.replace(tmp, folder)

    @staticmethod
    def report(timings, results, recall, naming, pictures) -> None:
        for name, (secs, how) in timings.items():
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
    p.add_argument("--world", default=None, help="toy world folder (default: $DETECTRON2_DATASETS/"
                   f"{TOY_PREFIX}); built there when missing")
    p.add_argument("--fast", action="store_true", help="tiny sizes and a few iterations (smoke test)")
    p.add_argument("--num-gpus", type=int, default=PipelineSettings.num_gpus,
                   help="processes per stage (GPUs; gloo on CPUs) (default: %(default)s)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="ViLD config overrides: KEY VALUE ...")
    args = p.parse_args()
    setup_logger(name="vild_d2")
    setup_logger(name="detectron2")
    base = FAST if args.fast else PipelineSettings()
    settings = dataclasses.replace(base, opts=base.opts + tuple(args.opts), num_gpus=args.num_gpus)
    Pipeline(args.output, args.world or default_toy_root(), settings).run()


if __name__ == "__main__":
    main()
