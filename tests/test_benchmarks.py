"""benchmarks/toy_paper_table.py's command line: rows and config overrides combine."""
import functools
import importlib.util

import pytest

from .conftest import REPO


def _table_module():
    spec = importlib.util.spec_from_file_location("toy_paper_table", REPO / "benchmarks/toy_paper_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_and_opts_combine():
    p = _table_module().make_parser()
    args = p.parse_args(["--rows", "vild", "text", "--opts", "MODEL.VILD.IMAGE_LOSS_WEIGHT", "0.1"])
    assert args.rows == ["vild", "text"] and args.opts == ["MODEL.VILD.IMAGE_LOSS_WEIGHT", "0.1"]
    assert len(p.parse_args([]).rows) == 10 and p.parse_args([]).opts == []


def test_demo_is_the_table_model_at_half_width_on_as_many_images():
    from vild_d2.config import check_same_backbone
    from vild_d2.engine import load_config as _cfg
    from vild_d2.kit.pipeline import PipelineSettings

    module = _table_module()
    table, table_rpn = _cfg(module.TABLE_CONFIG, ()), _cfg(module.TABLE_RPN_CONFIG, ())  # --full-width
    demo, demo_rpn = _cfg(PipelineSettings().vild_config, ()), _cfg(PipelineSettings().rpn_config, ())
    # the default preset: the demo's detector on 1,000 steps of 2 images
    assert (str(module.HALF_CONFIG), str(module.HALF_RPN_CONFIG)) == (PipelineSettings().vild_config,
                                                                       PipelineSettings().rpn_config)
    assert module.HALF_SCHEDULE == ("SOLVER.MAX_ITER", "1000", "SOLVER.STEPS", "(850,)")
    images = lambda c: c.SOLVER.MAX_ITER * c.SOLVER.IMS_PER_BATCH  # noqa: E731
    assert images(table) == images(demo) == 4800
    assert (table.SOLVER.IMS_PER_BATCH, table.SOLVER.BASE_LR, table.SOLVER.STEPS) == (4, 0.001, (1000,))
    assert (table.MODEL.RESNETS.RES2_OUT_CHANNELS, demo.MODEL.RESNETS.RES2_OUT_CHANNELS) == (64, 32)
    check_same_backbone(table_rpn, table)
    check_same_backbone(demo_rpn, demo)
    changed = ["MODEL.BACKBONE.NAME", "MODEL.RESNETS.STEM_OUT_CHANNELS", "MODEL.RESNETS.RES2_OUT_CHANNELS",
               "MODEL.FPN.OUT_CHANNELS"] + [f"SOLVER.{k}" for k in ("IMS_PER_BATCH", "BASE_LR", "MAX_ITER", "STEPS")]
    for cfg, other in ((table, demo), (table_rpn, demo_rpn)):
        cfg.merge_from_list([v for k in changed for v in (k, functools.reduce(getattr, k.split("."), other))])
        assert cfg.dump() == other.dump()


def test_mismatched_backbones_are_refused():
    from vild_d2.config import check_same_backbone
    from vild_d2.engine import load_config as _cfg
    from vild_d2.kit.pipeline import PipelineSettings

    table = _table_module()
    rpn = _cfg(table.TABLE_RPN_CONFIG, ())
    with pytest.raises(ValueError, match="RES2_OUT_CHANNELS"):
        check_same_backbone(rpn, _cfg(PipelineSettings().vild_config, ()))
    with pytest.raises(ValueError, match="MODEL.RESNETS.NUM_GROUPS"):  # any key under RESNETS / FPN counts
        check_same_backbone(rpn, _cfg(table.TABLE_CONFIG, ("MODEL.RESNETS.NUM_GROUPS", "2")))
    check_same_backbone(rpn, _cfg(table.TABLE_CONFIG, ()))


def test_orderings_are_judged_against_the_spread():
    spec = importlib.util.spec_from_file_location("toy_table_report", REPO / "benchmarks/toy_table_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)

    def runs(*aps):
        return [{"seed": s, "segm": {"APr": v}} for s, v in enumerate(aps)]

    # means 20 and 10, deviations 1 and 4: a gap of 10 beyond 4
    c = report.compare({"a": runs(19, 20, 21), "b": runs(6, 10, 14)}, "a", "b", "APr")
    assert c == {"gap": 10.0, "spread": 4.0, "wins": 3, "seeds": 3, "verdict": "holds"}
    c = report.compare({"a": runs(10, 20, 30), "b": runs(16, 15, 14)}, "a", "b", "APr")  # gap 5, std 10
    assert (c["verdict"], c["wins"]) == ("within the spread", 2)
    assert report.compare({"a": runs(1, 2, 3), "b": runs(10, 11, 12)}, "a", "b", "APr")["verdict"] == "reversed"
    assert report.cell([1.0, 2.0, 3.0]) == "2.0 ± 1.0" and report.cell([0.5], scale=100) == "50.0"
    assert report.cell([float("nan")]) == "-"
