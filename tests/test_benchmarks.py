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


def test_table_config_doubles_the_demo_schedule_and_changes_nothing_else():
    from vild_d2.pipeline import PipelineSettings, _cfg

    table = _cfg(_table_module().make_parser().parse_args([]).config_file, ())
    demo = _cfg(PipelineSettings().vild_config, ())
    assert (table.SOLVER.MAX_ITER, table.SOLVER.STEPS) == (2 * demo.SOLVER.MAX_ITER, (2 * demo.SOLVER.STEPS[0],))
    table.merge_from_list(["SOLVER.MAX_ITER", demo.SOLVER.MAX_ITER, "SOLVER.STEPS", demo.SOLVER.STEPS])
    assert table.dump() == demo.dump()
