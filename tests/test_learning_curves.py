"""``python -m benchmarks.toy_learning_curves``: its job order, workers sharing the jobs through claims
and resuming from finished results, and the report's curve table, missing runs and plot."""
import argparse
import json

from benchmarks import toy_curves_report as report
from benchmarks import toy_learning_curves as curves
from vild_d2.locking import exclusive


def _args(tmp_path, rows, remedies=(), seeds=(0, 1)):
    return argparse.Namespace(rows=list(rows), remedies=list(remedies), seeds=list(seeds), results=str(tmp_path))


def _result(row, seed, apr_by_images):
    point = {n: {"segm": {"AP": 50.0 + seed, "APr": apr}, "bbox": {"AP": 40.0, "APr": apr}}
             for n, apr in apr_by_images.items()}
    return {"row": row, "seed": seed, "curve": point,
            "final": {"segm": {"AP": 50.0 + seed, "APr": list(apr_by_images.values())[-1]}}}


def test_jobs_run_seed_by_seed_with_the_ceiling_beside_its_text_model(tmp_path):
    jobs = curves.jobs(_args(tmp_path, ["text", "clip_crops", "vild"], ["image_loss_x4"]))
    assert jobs == [(0, ["text", "clip_crops"]), (0, ["vild"]), (1, ["text", "clip_crops"]), (1, ["vild"]),
                    (0, ["image_loss_x4"]), (1, ["image_loss_x4"])]
    assert curves.jobs(_args(tmp_path, ["clip_crops"], seeds=[2])) == [(2, ["clip_crops"])]


def test_workers_skip_claimed_and_finished_jobs(tmp_path):
    args = _args(tmp_path, ["text", "vild"])
    calls = []

    def run(row, seed):
        calls.append((row, seed))
        return _result(row, seed, {1200: 1.0})

    with exclusive(tmp_path / ".claims", "another worker", name="vild_seed0.lock"):  # held elsewhere
        curves.run_jobs(args, run)
    assert calls == [("text", 0), ("text", 1), ("vild", 1)]
    assert json.loads((tmp_path / "vild_seed1.json").read_text())["row"] == "vild"
    curves.run_jobs(args, run)  # the claim is gone: only the job that was left runs
    assert calls[3:] == [("vild", 0)]
    curves.run_jobs(args, run)
    assert len(calls) == 4


def test_report_gives_mean_and_spread_per_checkpoint_and_names_what_is_missing(tmp_path):
    for seed, aprs in ((0, {1200: 0.0, 4800: 10.0}), (1, {1200: 2.0, 4800: 12.0})):
        (tmp_path / f"vild_seed{seed}.json").write_text(json.dumps(_result("vild", seed, aprs)))
    runs = report.load(tmp_path)
    assert list(runs) == ["vild"] and [r["seed"] for r in runs["vild"]] == [0, 1]
    text = report.curve_table(runs, "APr")
    assert "| 1,200 images | 4,800 images |" in text
    assert f"| {report.LABELS['vild']} | 2 | 1.0 ± 1.4 | 11.0 ± 1.4 |" in text
    gaps = report.missing(runs)
    assert "vild seed 2" in gaps and "text seed 0" in gaps and "vild seed 0" not in gaps
    report.plot(runs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
