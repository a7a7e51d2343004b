"""The recipe's stage folders are keyed by what each stage reads: a setting that a stage ignores,
or a key added to the defaults, keeps its folder (and everything built in it)."""
import pytest

from vild_d2 import config
from vild_d2.kit.toy import TOY_PREFIX, toy_register_opts
from vild_d2.model_zoo import get_config_file
from vild_d2.recipe import Recipe, RecipeSettings


@pytest.fixture
def folders(toy_env, tmp_path):
    """(rpn, region cache, ViLD) folder names of the demo's recipe with extra overrides."""
    register = tuple(toy_register_opts(str(toy_env / TOY_PREFIX)))

    def plan(opts=(), proposal_opts=(), out="out"):
        settings = RecipeSettings(vild_config=get_config_file("toy/ViLD-Toy-ensemble.yaml"),
                                  proposal_config=get_config_file("toy/RPN-Toy-Lite-FPN.yaml"),
                                  opts=register + tuple(opts), proposal_opts=register + tuple(proposal_opts))
        recipe = Recipe(tmp_path / out, settings)
        return recipe.rpn_dir.name, recipe.cache_dir.name, recipe.vild_dir.name

    return plan


def test_a_key_added_to_the_defaults_keeps_every_folder(folders, monkeypatch):
    before = folders()
    original = config.add_vild_config

    def with_new_keys(cfg):
        original(cfg)
        cfg.MODEL.VILD.SOME_NEW_HEAD_KEY = 0.5
        cfg.DATASETS.VILD.SOME_NEW_DATA_KEY = ""
        cfg.SOLVER.SOME_NEW_DETECTRON2_KEY = 1

    monkeypatch.setattr(config, "add_vild_config", with_new_keys)
    assert folders() == before
    # the new key set away from its default is a setting like any other
    assert folders(opts=("MODEL.VILD.SOME_NEW_HEAD_KEY", "0.7")) != before


def test_each_stage_keeps_its_folder_when_a_setting_it_ignores_changes(folders):
    rpn, cache, vild = folders()
    # ViLD's head settings: only the ViLD stage reads them
    temperature = folders(opts=("MODEL.VILD.TEMPERATURE", "0.02"))
    assert temperature[:2] == (rpn, cache) and temperature[2] != vild
    # a ProposalNetwork reads no MODEL.VILD key but the trainer's
    assert folders(proposal_opts=("MODEL.VILD.NUM_CACHED_PROPOSALS", "7"))[0] == rpn
    assert folders(proposal_opts=("MODEL.VILD.OPTIMIZER", "SGD"))[0] != rpn
    # the cache reads its number of proposals; the ViLD model reads the cache
    more = folders(opts=("MODEL.VILD.NUM_CACHED_PROPOSALS", "20"))
    assert more[0] == rpn and more[1] != cache and more[2] != vild
    # the proposal network's schedule: every stage built on it changes
    lr = folders(proposal_opts=("SOLVER.BASE_LR", "0.0005"))
    assert lr[0] != rpn and lr[1] != cache and lr[2] != vild


def test_an_output_folder_moved_elsewhere_keeps_its_stage_folders(folders, tmp_path):
    # the stages' configs name paths inside the output folder (the proposal network's weights, the
    # region cache, the text classifiers): keys hold them relative to it
    assert folders(out="somewhere/else/out") == folders()
    assert folders(out=str(tmp_path.parent / "moved")) == folders()


def test_settings_read_lists_only_values_away_from_the_defaults():
    cfg = config.vild_defaults()
    assert config.settings_read(cfg) == {}
    cfg.MODEL.VILD.TEMPERATURE = 0.02
    cfg.OUTPUT_DIR = "elsewhere"
    assert config.settings_read(cfg) == {"MODEL.VILD.TEMPERATURE": 0.02}
    assert config.settings_read(cfg, ignore=("MODEL.VILD.",)) == {}
