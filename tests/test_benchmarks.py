"""benchmarks/toy_paper_table.py's command line: rows and config overrides combine."""
import importlib.util

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
    assert len(p.parse_args([]).rows) == 6 and p.parse_args([]).opts == []


def test_table_config_doubles_the_demo_images_and_changes_only_the_schedule():
    from vild_d2.pipeline import PipelineSettings, _cfg

    table = _cfg(_table_module().make_parser().parse_args([]).config_file, ())
    demo = _cfg(PipelineSettings().vild_config, ())
    images = lambda c: c.SOLVER.MAX_ITER * c.SOLVER.IMS_PER_BATCH  # noqa: E731
    assert images(table) == 2 * images(demo) == 4800
    assert (table.SOLVER.IMS_PER_BATCH, table.SOLVER.BASE_LR, table.SOLVER.STEPS) == (4, 0.001, (1000,))
    schedule = ("IMS_PER_BATCH", "BASE_LR", "MAX_ITER", "STEPS")
    table.merge_from_list([v for k in schedule for v in (f"SOLVER.{k}", demo.SOLVER[k])])
    assert table.dump() == demo.dump()
