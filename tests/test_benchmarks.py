"""``python -m benchmarks.toy_paper_table``'s command line and presets, its report, and the
benchmark harness; every benchmark script runs as a module from the repository root."""
import functools
import importlib
import subprocess
import sys
import time

import pytest

from benchmarks import harness
from benchmarks import toy_paper_table as table_script

from .helpers import REPO

SCRIPTS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_rows_and_opts_combine():
    p = table_script.make_parser()
    args = p.parse_args(["--rows", "vild", "text", "--opts", "MODEL.VILD.IMAGE_LOSS_WEIGHT", "0.1"])
    assert args.rows == ["vild", "text"] and args.opts == ["MODEL.VILD.IMAGE_LOSS_WEIGHT", "0.1"]
    assert len(p.parse_args([]).rows) == 10 and p.parse_args([]).opts == []


def test_demo_is_the_table_model_at_half_width_on_as_many_images():
    from vild_d2.config import check_same_backbone
    from vild_d2.engine import load_config as _cfg
    from vild_d2.kit.pipeline import PipelineSettings

    module = table_script
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

    table = table_script
    rpn = _cfg(table.TABLE_RPN_CONFIG, ())
    with pytest.raises(ValueError, match="RES2_OUT_CHANNELS"):
        check_same_backbone(rpn, _cfg(PipelineSettings().vild_config, ()))
    with pytest.raises(ValueError, match="MODEL.RESNETS.NUM_GROUPS"):  # any key under RESNETS / FPN counts
        check_same_backbone(rpn, _cfg(table.TABLE_CONFIG, ("MODEL.RESNETS.NUM_GROUPS", "2")))
    check_same_backbone(rpn, _cfg(table.TABLE_CONFIG, ()))


def test_orderings_are_judged_against_the_spread():
    from benchmarks import toy_table_report as report

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


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_imports_as_a_module_of_the_package(name):
    assert "sys.path" not in (REPO / "benchmarks" / f"{name}.py").read_text()  # `python -m` from the root instead
    importlib.import_module(f"benchmarks.{name}")


def test_a_script_runs_with_python_m_from_the_repository_root(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_cache_verify", "--gb", "0.0001", "--images", "4",
                          "--regions", "50", "--dim", "64", "--out", str(tmp_path / "cache")],  # 4 shards
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "1. full verification, no stamp:" in out and "3. rank 0 of 2" in out


def test_interleaved_rounds_order_warm_up_and_failures():
    calls = []
    runners = {v: (lambda v=v: calls.append(v)) for v in "abc"}
    rounds = harness.interleave(runners, 2, warmup=1, order="rotate")
    assert calls == list("abc" "bca" "cab") and all(len(t) == 2 for t in rounds.wall.values())
    calls.clear()
    harness.interleave(runners, 2, order="alternate")
    assert calls == list("abc" "cba")

    def fails():
        raise RuntimeError("out of memory")
    rounds = harness.interleave({"base": lambda: None, "bad": fails}, 3, keep_going=True)
    assert list(rounds.stats("base")) == ["base"] and "RuntimeError: out of memory" in rounds.errors["bad"]
    with pytest.raises(RuntimeError, match="out of memory"):
        harness.interleave({"bad": fails}, 1)
    with pytest.raises(ValueError, match="rotate"):
        harness.round_order(["a"], 0, "random")


def test_a_runner_may_time_only_part_of_its_work():
    def runner():
        time.sleep(0.05)  # set-up, not timed
        with harness.Stopwatch() as sw:
            pass
        return sw
    assert harness.interleave({"a": runner}, 2).wall["a"][0] < 0.04


def test_stats_give_ratios_to_the_baseline_of_the_same_rounds():
    s = harness.stats([2.0, 4.0, 9.0], base=[1.0, 2.0, 3.0])
    assert (s["min_s"], s["median_s"], s["ratio_median"], s["ratio_min"], s["paired_ratio_median"]) == (2, 4, 2, 2, 2)
    assert "ratio_median" not in harness.stats([1.0], base=[])
    rounds = harness.Rounds(wall={"base": [1.0, 3.0], "v": [2.0, 9.0]})
    assert rounds.stats("base", scale=0.5)["v"] == harness.stats([1.0, 4.5], [0.5, 1.5])


def test_timers_time_modules_by_hooks_and_functions_by_wrapping_and_undo_both():
    import torch

    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.01)
            return x

    class Holder:
        def work(self, x):
            return x + 1

    module, holder, seen = Slow(), Holder(), []
    timers = harness.Timers().hook(module, "module").wrap(holder, "work", "work", before=seen.append)
    module(torch.zeros(1))
    assert holder.work(1) == 2 and seen == [1]
    assert timers.spent["module"] >= 0.01 and set(timers.spent) == {"module", "work"}
    timers.remove()
    timers.reset()
    module(torch.zeros(1))
    assert "work" not in vars(holder) and timers.spent == {}


def test_table_and_results_file(tmp_path):
    assert harness.table(["a", "b"], [[1, "x"]]) == "| a | b |\n| --- | --- |\n| 1 | x |"
    path = harness.write_results(tmp_path / "sub" / "r.json", {"x": [1.5]})
    assert path.read_text() == '{\n "x": [\n  1.5\n ]\n}'
