"""The ViLD recipe on any registered dataset, as one resumable command:

text classifiers (training and test vocabularies) -> class-agnostic proposal network trained on
the base classes -> offline CLIP region cache of its proposals -> ViLD training + evaluation ->
proposal recall on novel versus base objects.

Stages are declared as data (:class:`Stage`: name, artifacts, run). Each writes its artifacts into a
folder keyed by a hash of what that stage reads (:func:`vild_d2.config.settings_read`: the config
values that differ from the defaults, less the sections the stage ignores; its data; the folders of
the stages it builds on), so a rerun skips finished stages, a changed setting redoes only the
stages that read it, a key added to the defaults keeps every folder, paths inside the output
folder enter the keys relative to it (a moved folder keeps its stages), and a killed training
resumes from its last checkpoint.
The whole recipe runs in Detectron2's ``launch``: one process, ``--num-gpus N`` processes (gloo
on CPUs), or several machines (``--num-machines``, ``--machine-rank``, ``--dist-url``).

    python tools/run_recipe.py --config-file configs/LVIS-OV/vild_ensemble_R50_FPN.yaml \\
        --proposal-config configs/LVIS-OV/rpn_R50_FPN.yaml --output output/lvis --num-gpus 8
"""
import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from .artifacts import CorruptArtifactError, cache_key, is_sealed, point_link, verify_file, write_json, write_text
from .clip_model import load_clip
from .config import TRAINER_KEYS, check_same_backbone, settings_read
from .engine import ViLDTrainer, launch, load_config
from .engine.distributed import is_cuda
from .evaluation import proposal_hits, recall_summary
from .locking import exclusive
from .region_cache import verify_region_cache
from .region_cache.builder import RegionCacheSettings, build_region_cache
from .region_cache.proposals import detector_proposal_source
from .region_cache.storage import FORMAT_VERSION
from .text_classifier import cached_text_classifier, text_classifier_path

logger = logging.getLogger(__name__)

__all__ = ["RecipeSettings", "Stage", "Recipe", "run_recipe", "run_stages", "summary"]


@dataclasses.dataclass(frozen=True)
class RecipeSettings:
    vild_config: str
    proposal_config: str
    opts: Tuple[str, ...] = ()  # ViLD config overrides, KEY VALUE ...
    proposal_opts: Tuple[str, ...] = ()  # proposal network config overrides
    # YAML files merged into both configs after their own (e.g. configs/overlays/CPU-rehearsal.yaml)
    overlays: Tuple[str, ...] = ()
    proposal_weights: str = ""  # a trained proposal network: its training stage is skipped
    # Start ViLD from the proposal network's weights when the ViLD config names no MODEL.WEIGHTS
    # (no pretrained backbone, as in the toy world or a CPU rehearsal).
    init_from_proposals: bool = True
    cache_shard_size: int = 256  # images per region-cache shard
    recall_top_k: int = 300  # proposals counted by the recall stage (0 skips the stage)
    data_key: Tuple = ()  # extra cache-key parts describing the data (the toy world's settings)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    artifacts: Tuple[Path, ...]  # the stage is done when these files exist and verify
    run: Callable[[], object]
    # the stage's own test of being done, for artifacts named only once earlier stages ran
    finished: Optional[Callable[[], bool]] = None

    @property
    def done(self) -> bool:
        """Every artifact is there and verifies: a checkpoint against its seal (an unsealed one is
        not trusted), a JSON file by parsing. A damaged one is reported and the stage runs again."""
        if self.finished is not None and not self.finished():
            return False
        for path in self.artifacts:
            if not path.is_file() or (path.suffix == ".pth" and not is_sealed(path)):
                return False
            try:
                verify_file(path, f"{self.name} artifact")
            except CorruptArtifactError as e:
                logger.warning("%s; running the stage again", e)
                return False
        return True


def _dataset_fingerprint(name: str) -> List:
    """What a stage trained on ``name`` depends on: its json file's path, size and mtime."""
    json_file = MetadataCatalog.get(name).get("json_file") if name in MetadataCatalog.list() else None
    if json_file and os.path.isfile(json_file):
        st = os.stat(json_file)
        return [name, os.path.abspath(json_file), st.st_size, int(st.st_mtime)]
    return [name]


def proposal_settings(cfg) -> Dict[str, object]:
    """What training the proposal network reads: a ``ProposalNetwork`` reads no ``MODEL.VILD`` key
    but the trainer's (:data:`vild_d2.config.TRAINER_KEYS`)."""
    if cfg.MODEL.META_ARCHITECTURE != "ProposalNetwork":  # a detector with ViLD heads reads them all
        return settings_read(cfg)
    read = settings_read(cfg, ignore=("MODEL.VILD.",))
    read.update({k: v for k, v in settings_read(cfg).items() if k in TRAINER_KEYS})
    return read


def run_stages(stages: List[Stage]) -> Dict[str, Tuple[float, str]]:
    """Run each stage that is not done, in order; {name: (seconds, "ran" | "cached")}.

    Rank 0 decides whether a stage is done and every process follows it: processes that looked at
    the artifacts at different moments (another machine, a rank that started late) must not
    disagree, or one would skip a stage whose collective calls the others wait in."""
    timings = {}
    for stage in stages:
        t0 = time.perf_counter()
        # every process has passed the previous stage's synchronize: rank 0 looks, all follow
        done = comm.all_gather(stage.done if comm.is_main_process() else None)[0]
        logger.info("stage %s: %s", stage.name, "cached, skipped" if done else "running")
        if not done:
            stage.run()
        comm.synchronize()
        timings[stage.name] = (time.perf_counter() - t0, "cached" if done else "ran")
    return timings


def inside_output(settings: Dict[str, object], out: Path) -> Dict[str, object]:
    """``settings`` with every path inside the output folder ``out`` written relative to it
    (``<output>/rpn_.../model_final.pth``): the stage folders' keys then stay when the folder is moved,
    renamed or mounted at another path."""
    prefix = str(out) + os.sep

    def relative(value):
        if isinstance(value, str) and value.startswith(prefix):
            return "<output>" + os.sep + value[len(prefix):]
        return type(value)(relative(x) for x in value) if isinstance(value, (list, tuple)) else value

    return {k: relative(v) for k, v in settings.items()}


class Recipe:
    """Plans (configs, folders) in any process; runs the stages inside ``launch``."""

    def __init__(self, out, settings: RecipeSettings):
        self.out, self.settings = Path(out), settings
        self.vild_cfg = load_config(settings.vild_config, settings.opts, settings.overlays)
        self.proposal_cfg = load_config(settings.proposal_config, settings.proposal_opts, settings.overlays)
        v = self.vild_cfg.MODEL.VILD
        if not self.vild_cfg.DATASETS.TRAIN:
            raise ValueError(f"{settings.vild_config}: DATASETS.TRAIN is empty")
        self.train_set = self.vild_cfg.DATASETS.TRAIN[0]
        self.test_set = self.vild_cfg.DATASETS.TEST[0] if self.vild_cfg.DATASETS.TEST else ""
        text_dir = self.out / "text_classifiers"
        vocabularies = (("TEXT_EMBEDDINGS", self.train_set), ("TEST_TEXT_EMBEDDINGS", self.test_set))
        self.classifiers = {key: (dataset, Path(getattr(v, key)) if getattr(v, key) else
                                  text_classifier_path(text_dir, dataset, v.CLIP_MODEL, v.PROMPT_TEMPLATES or None))
                            for key, dataset in vocabularies if dataset or getattr(v, key)}
        self.vild_cfg.merge_from_list([x for k, (_, path) in self.classifiers.items()
                                       for x in (f"MODEL.VILD.{k}", str(path))])

        p = self.proposal_cfg
        self._train_proposals_on_vild_data(p)
        if p.MODEL.META_ARCHITECTURE != "ProposalNetwork":  # a detector with ViLD heads needs the vocabulary
            p.merge_from_list(["MODEL.VILD.CLIP_MODEL", v.CLIP_MODEL,
                               "MODEL.VILD.TEXT_EMBEDDINGS", str(v.TEXT_EMBEDDINGS)])
        data = settings.data_key or _dataset_fingerprint(p.DATASETS.TRAIN[0] if p.DATASETS.TRAIN else "")
        self.rpn_dir = self.out / f"rpn_{cache_key(proposal_settings(p), data, settings.proposal_weights)}"
        p.OUTPUT_DIR = str(self.rpn_dir)
        self.rpn_weights = settings.proposal_weights or str(self.rpn_dir / "model_final.pth")

        self.cache_settings = RegionCacheSettings(num_proposals=v.NUM_CACHED_PROPOSALS, scales=tuple(v.CROP_SCALES),
                                                  shard_size=settings.cache_shard_size)
        self.cache_dir: Optional[Path] = None
        # A finished cache named by the config is used as it is; otherwise the recipe builds its own.
        if v.MODE != "text" and not (v.REGION_CACHE_DIR and (Path(v.REGION_CACHE_DIR) / "manifest.json").is_file()):
            data = settings.data_key or _dataset_fingerprint(self.train_set)
            self.cache_dir = self.out / ("region_cache_" + cache_key(
                FORMAT_VERSION, self.rpn_dir.name, settings.proposal_weights, v.CLIP_MODEL,
                dataclasses.asdict(self.cache_settings), data))
            self.vild_cfg.MODEL.VILD.REGION_CACHE_DIR = str(self.cache_dir)
        if settings.init_from_proposals and not self.vild_cfg.MODEL.WEIGHTS:
            check_same_backbone(p, self.vild_cfg)
            self.vild_cfg.MODEL.WEIGHTS = self.rpn_weights
        data = settings.data_key or _dataset_fingerprint(self.train_set)
        self.vild_dir = self.out / f"vild_{cache_key(inside_output(settings_read(self.vild_cfg), self.out), data)}"
        self.vild_cfg.OUTPUT_DIR = str(self.vild_dir)
        self.recall_file = self.rpn_dir / f"recall_{self.test_set}.json"

    def _train_proposals_on_vild_data(self, p) -> None:
        """The proposal network learns the base boxes of the ViLD config's DATASETS.TRAIN, registered
        as that config registers them: a dataset of one's own is named in one config only."""
        v = self.vild_cfg.DATASETS
        if tuple(p.DATASETS.TRAIN) != tuple(v.TRAIN):
            logger.info("the proposal network trains on %s, the ViLD config's DATASETS.TRAIN (its own config names "
                        "%s)", tuple(v.TRAIN), tuple(p.DATASETS.TRAIN))
        names = {entry[0] for entry in v.VILD.REGISTER}
        register = [list(e) for e in v.VILD.REGISTER] + [list(e) for e in p.DATASETS.VILD.REGISTER if e[0] not in names]
        p.merge_from_list(["DATASETS.TRAIN", tuple(v.TRAIN), "DATASETS.VILD.REGISTER", register,
                           "DATASETS.VILD.NOVEL_CLASSES", list(v.VILD.NOVEL_CLASSES)])

    def stages(self) -> List[Stage]:
        stages = [Stage("text classifiers", tuple(p for _, p in self.classifiers.values()), self.build_classifiers)]
        if not self.settings.proposal_weights:
            stages.append(Stage("proposal network (base classes)", (Path(self.rpn_weights),),
                                lambda: self.train(self.proposal_cfg)))
        if self.cache_dir is not None:
            stages.append(Stage("region cache", (self.cache_dir / "manifest.json",), self.build_cache,
                                finished=self.cache_verifies))
        final = "eval_results.json" if self.test_set else "model_final.pth"
        stages.append(Stage("ViLD training + evaluation", (self.vild_dir / final,), lambda: self.train(self.vild_cfg)))
        if self.settings.recall_top_k and self.test_set:
            stages.append(Stage("proposal recall", (self.recall_file,), self.recall))
        return stages

    def run(self) -> Dict[str, Tuple[float, str]]:
        """Run the stages not yet done (every process of the job); stage timings (rank 0 writes
        them to ``<out>/timings.json`` and points ``<out>/latest`` at this run's ViLD folder)."""
        timings = run_stages(self.stages())
        if comm.is_main_process():
            write_json(self.out / "timings.json", timings)
            point_link(self.out / "latest", self.vild_dir)
        return timings

    def build_classifiers(self) -> None:
        v = self.vild_cfg.MODEL.VILD
        if comm.is_main_process():
            for dataset, path in self.classifiers.values():
                if not path.is_file():
                    cached_text_classifier(path.parent, dataset, v.CLIP_MODEL, v.PROMPT_TEMPLATES or None,
                                           device=self.vild_cfg.MODEL.DEVICE)

    @staticmethod
    def train(cfg) -> None:
        cfg = cfg.clone()
        cfg.freeze()
        if comm.is_main_process():  # the full config, for train_net.py --eval-only and reruns by hand
            Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
            write_text(Path(cfg.OUTPUT_DIR) / "config.yaml", cfg.dump())
        # as train_net.py's default_setup does: SEED (+ rank) for torch, numpy and random, so that a
        # stage rerun from scratch gives the same weights (given the same thread count)
        seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
        trainer = ViLDTrainer(cfg)
        trainer.resume_or_load(resume=True)  # a killed stage resumes from its last checkpoint
        trainer.train()

    def cache_verifies(self) -> bool:
        """The whole region cache checks out (its stamp, or every shard hashed here); a damaged one
        runs the stage again, which rebuilds the damaged shards. Rank 0 alone decides: no collective."""
        try:
            verify_region_cache(self.cache_dir, rank=0, world_size=1)
        except FileNotFoundError:  # not built yet (no manifest): nothing to warn about
            return False
        except CorruptArtifactError as e:  # the cache's own errors too
            logger.warning("region cache not usable (%s); running its stage again", e)
            return False
        return True

    def build_cache(self) -> None:
        device = self.vild_cfg.MODEL.DEVICE
        source = detector_proposal_source(self.proposal_cfg, self.rpn_weights, self.cache_settings.num_proposals,
                                          device)
        clip_spec = self.vild_cfg.MODEL.VILD.CLIP_MODEL
        build_region_cache(self.cache_dir, DatasetCatalog.get(self.train_set), source, load_clip(clip_spec, device),
                           clip_spec, self.cache_settings, dataset_name=self.train_set,
                           num_workers=self.vild_cfg.DATALOADER.NUM_WORKERS)

    def recall(self, iou: float = 0.5) -> None:
        """AR@top_k at IoU 0.5 of the proposal network on the test set's objects, novel vs base
        (images split across the processes of the job)."""
        source = detector_proposal_source(self.proposal_cfg, self.rpn_weights, self.settings.recall_top_k,
                                          self.vild_cfg.MODEL.DEVICE)
        novel = MetadataCatalog.get(self.test_set).get("novel_class_ids", [])
        records = DatasetCatalog.get(self.test_set)[comm.get_rank()::comm.get_world_size()]
        gathered = comm.gather(proposal_hits(source, records, novel, self.settings.recall_top_k, iou))
        if comm.is_main_process():
            hits = {k: [h for part in gathered for h in part[k]] for k in ("novel", "base")}
            write_json(self.recall_file, recall_summary(hits, self.settings.recall_top_k, iou))


def _worker(out: str, settings: RecipeSettings, threads: int) -> None:
    if comm.get_world_size() > 1:  # a spawned process: its own threads and logs (rank 0 prints)
        torch.set_num_threads(threads)
        setup_logger(name="vild_d2", distributed_rank=comm.get_rank())
        setup_logger(name="detectron2", distributed_rank=comm.get_rank())
    Recipe(out, settings).run()


def run_recipe(out, settings: RecipeSettings, num_gpus: int = 1, num_machines: int = 1, machine_rank: int = 0,
               dist_url: str = "auto") -> Recipe:
    """Run every stage in ``num_gpus`` processes per machine (on CPUs each takes an equal share of
    the cores); return the plan, whose folders then hold every artifact."""
    plan = Recipe(out, settings)  # fails here, before any process starts, on a bad config
    device = plan.vild_cfg.MODEL.DEVICE
    threads = torch.get_num_threads() if is_cuda(device) else max(1, (os.cpu_count() or 1) // num_gpus)
    # A second run into the same folder stops here. Only the first machine takes the lock: the
    # others of a multi-machine job share the folder (a shared filesystem) with it.
    with exclusive(plan.out, "recipe run") if machine_rank == 0 else contextlib.nullcontext():
        launch(_worker, num_gpus, device=device, num_machines=num_machines, machine_rank=machine_rank,
               dist_url=dist_url, args=(str(out), settings, threads))
    return plan


def summary(plan: Recipe) -> Dict:
    """The recipe's results as written by its stages: evaluation, recall, stage timings."""
    def read(path: Path):
        return json.loads(path.read_text()) if path.is_file() else None

    return {"results": read(plan.vild_dir / "eval_results.json"), "recall": read(plan.recall_file),
            "timings": read(plan.out / "timings.json"), "vild_dir": str(plan.vild_dir)}
