"""The table and plot of ``python -m benchmarks.toy_learning_curves``: APr and AP of every row at
every checkpoint, mean ± std over the seeds that finished; the full toy table at the last
checkpoint (orderings against the spread, base-class localisation, diagnostics: toy_table_report);
the distilled head's fit along the way; remedies beside their baseline; what is missing.

Reads benchmarks/results/toy_curves/<row>_seed<S>.json; writes toy_curves.md there and
docs/toy_learning_curves.png.
"""
import argparse
import json
import logging
import math
from pathlib import Path
from typing import Dict, List

from benchmarks.harness import REPO_ROOT, table
from benchmarks.toy_paper_table import HALF_CONFIG, HALF_RPN_CONFIG
from benchmarks.toy_paper_table import ROWS as TABLE_ROWS
from benchmarks.toy_table_report import cell, compare, mean_std, render
from vild_d2.artifacts import write_text

logger = logging.getLogger("vild_d2.toy_curves_report")
PLOT = REPO_ROOT / "docs" / "toy_learning_curves.png"
REMEDY_LABELS = {"image_loss_x4": "(e') ViLD, image loss weight 2.0 (paper 0.5)",
                 "regions_50": "(e'') ViLD, 50 distilled regions per image (make demo: 16)"}
LABELS = {kind: label for label, kind in TABLE_ROWS} | REMEDY_LABELS
EXPECTED_SEEDS = (0, 1, 2)
CURVE_ROWS = ("text", "vild", "ensemble", "ensemble_one_head", "image_loss_x4", "regions_50")


def load(folder: Path) -> Dict[str, List[dict]]:
    """row -> its finished seeds' results, by seed."""
    runs: Dict[str, List[dict]] = {}
    for path in sorted(folder.glob("*_seed*.json")):
        data = json.loads(path.read_text())
        runs.setdefault(data["row"], []).append(data)
    return {row: sorted(rs, key=lambda r: r["seed"]) for row, rs in runs.items()}


def missing(runs: Dict[str, List[dict]]) -> List[str]:
    return [f"{row} seed {s}" for row in list(LABELS) if row in CURVE_ROWS or row in runs
            for s in EXPECTED_SEEDS if s not in {r["seed"] for r in runs.get(row, [])}]


def curve_table(runs: Dict[str, List[dict]], metric: str) -> str:
    rows = [r for r in LABELS if r in runs and runs[r][0]["curve"]]
    images = sorted({int(i) for r in rows for run in runs[r] for i in run["curve"]})
    body = [[LABELS[r], str(len(runs[r]))] + [cell([run["curve"][str(i)]["segm"][metric] for run in runs[r]
                                                   if str(i) in run["curve"]]) for i in images] for r in rows]
    if "clip_crops" in runs:
        body.append([LABELS["clip_crops"] + " (ceiling, the ViLD-text model's last checkpoint)",
                     str(len(runs["clip_crops"]))] + ["" for _ in images[:-1]]
                    + [cell([run["final"]["segm"][metric] for run in runs["clip_crops"]])])
    return table(["model", "seeds"] + [f"{i:,} images" for i in images], body)


def fit_table(runs: Dict[str, List[dict]]) -> str:
    """The distilled head along the way: share of novel (and base) validation objects its image head
    names right, and its cosine to CLIP on novel training regions."""
    rows = []
    for r in LABELS:
        if r not in runs or not runs[r][0]["curve"]:
            continue
        for i in sorted(runs[r][0]["curve"], key=int):
            diags = [run["curve"][i].get("diagnostics", {}) for run in runs[r] if i in run["curve"]]
            if not diags or "fit" not in diags[0]:
                continue
            head = "image" if "image" in diags[0]["heads"] else "text"
            rows.append([LABELS[r], f"{int(i):,}"]
                        + [cell([d["heads"][head][g] for d in diags], scale=100) for g in ("novel", "base")]
                        + [cell([d["fit"]["novel"][k] for d in diags], digits=3 if k == "cosine" else 1,
                                scale=1 if k == "cosine" else 100) for k in ("cosine", "student_accuracy")])
    return table(["model", "images", "distilled head right: novel val %", "base val %",
                  "novel train regions: cosine to CLIP", "named right %"], rows)


def finals(runs: Dict[str, List[dict]]) -> Dict[str, List[dict]]:
    """The toy table's rows (toy_table_report.render's input) at the last checkpoint."""
    return {row: [r["final"] for r in rs] for row, rs in runs.items()}


def remedy_lines(runs: Dict[str, List[dict]]) -> List[str]:
    lines = []
    for remedy in REMEDY_LABELS:
        if remedy in runs and "vild" in runs:
            for metric in ("APr", "AP"):
                c = compare(finals(runs), remedy, "vild", metric)
                lines.append(f"- {REMEDY_LABELS[remedy]} against (e) ViLD at the last checkpoint, mask {metric}: "
                             f"{c['gap']:+.1f} (larger std {c['spread']:.1f}, above on {c['wins']} / {c['seeds']} "
                             f"seeds): {c['verdict']}.")
    return lines


def plot(runs: Dict[str, List[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, metric in zip(axes, ("APr", "AP")):
        for r in LABELS:
            if r not in runs or not runs[r][0]["curve"]:
                continue
            images = sorted({int(i) for run in runs[r] for i in run["curve"]})
            stats = [mean_std([run["curve"][str(i)]["segm"][metric] for run in runs[r] if str(i) in run["curve"]])
                     for i in images]
            m = [s[0] for s in stats]
            s = [0.0 if math.isnan(s[1]) else s[1] for s in stats]
            line, = ax.plot(images, m, marker="o", label=f"{LABELS[r]} (n={len(runs[r])})")
            ax.fill_between(images, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                            color=line.get_color(), alpha=0.15)
        if "clip_crops" in runs:
            m, s = mean_std([run["final"]["segm"][metric] for run in runs["clip_crops"]])
            ax.axhline(m, color="k", linestyle="--", label=f"CLIP on crops, the teacher ({m:.1f} ± {s:.1f})")
        ax.set_xlabel("training images seen")
        ax.set_xticks(sorted({int(i) for rs in runs.values() for run in rs for i in run["curve"]}))
        ax.set_ylabel(f"mask {metric}" + (" (novel classes)" if metric == "APr" else " (all classes)"))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Toy world, make demo's schedule: mean ± std over seeds")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_report(folder: Path, plot_path: Path = PLOT) -> str:
    runs = load(folder)
    if not runs:
        raise FileNotFoundError(f"no finished (row, seed) results in {folder}: run python -m "
                                "benchmarks.toy_learning_curves first")
    lines = ["Mask APr (novel classes) at each checkpoint, mean ± std over the seeds finished:", "",
             curve_table(runs, "APr"), "", "Mask AP (all classes):", "", curve_table(runs, "AP"), "",
             "The distilled head along the way (its own head: the image head, or the one head of ViLD):", "",
             fit_table(runs), ""]
    lines += remedy_lines(runs)
    base = argparse.Namespace(vild_config=str(HALF_CONFIG), rpn_config=str(HALF_RPN_CONFIG),
                              opts=("SOLVER.CHECKPOINT_PERIOD", "600"))
    val_gt = {"categories": []}
    lines += ["", "## At the last checkpoint (4,800 images): the toy table", "",
              render(finals(runs), {v: k for k, v in LABELS.items()}, val_gt, argparse.Namespace(opts=[]), base)]
    gaps = missing(runs)
    lines += ["", "Missing: " + (", ".join(gaps) if gaps else "nothing") + "."]
    text = "\n".join(lines) + "\n"
    write_text(folder / "toy_curves.md", text)
    plot(runs, plot_path)
    logger.info("wrote %s and %s", folder / "toy_curves.md", plot_path)
    return text
