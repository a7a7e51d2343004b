"""The markdown of ``python -m benchmarks.toy_paper_table``: every figure as mean ± standard deviation over
the seeds, the orderings the paper claims checked against that spread, base-class localisation
(AP50 / AP75) and the diagnostics. Pure functions over the rows' plain data ("runs": row kind ->
one dict per seed, see toy_paper_table.run_row)."""
import math
import statistics
from pathlib import Path
from typing import Dict, List, Sequence

from benchmarks.harness import table

# (higher, lower, metric, what the paper claims or the issue asks)
ORDERINGS = (
    ("clip_crops", "text", "APr", "CLIP on cropped regions names novel objects better than ViLD-text"),
    ("text_clip", "clip_crops", "AP", "ViLD-text + CLIP beats CLIP alone overall"),
    ("text_clip", "text", "APr", "ViLD-text + CLIP beats ViLD-text on novel classes"),
    ("image", "text", "APr", "distilling CLIP (ViLD-image) beats ViLD-text on novel classes"),
    ("vild", "text", "APr", "ViLD beats ViLD-text on novel classes"),
    ("vild", "image", "AP", "ViLD keeps the base-class AP that ViLD-image lacks"),
    ("ensemble", "vild", "APr", "ViLD-ensemble beats ViLD on novel classes"),
    ("ensemble", "vild", "AP", "ViLD-ensemble beats ViLD overall"),
    ("ensemble", "text_clip", "APr", "ViLD-ensemble against ViLD-text + CLIP (no CLIP at inference)"),
    ("supervised_all", "ensemble", "APr", "the supervised upper bound beats ViLD-ensemble on novel classes"),
    ("ensemble_one_head", "ensemble", "APr", "one box head (two projections) against ViLD-ensemble"),
    ("ensemble_one_head", "ensemble", "AP", "one box head (two projections) against ViLD-ensemble"),
    ("ensemble_one_head", "vild", "APr", "one box head (two projections) against ViLD"),
    ("ensemble_one_head", "vild", "AP", "one box head (two projections) against ViLD"),
)
# The localisation question: class-agnostic against class-specific box and mask heads.
LOCALISATION_ROWS = ("supervised_all", "supervised_all_specific", "supervised_base", "text", "vild", "ensemble")


def mean_std(vals: Sequence[float]):
    """Mean and sample standard deviation (n - 1); NaN when there is nothing to average."""
    vals = [float(v) for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def cell(vals: Sequence[float], digits: int = 1, scale: float = 1.0) -> str:
    """``mean ± std`` (sample standard deviation over seeds), or the value of a single seed."""
    m, s = mean_std([scale * v for v in vals if v is not None])
    if math.isnan(m):
        return "-"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if len(vals) > 1 else "")


def compare(runs: Dict, higher: str, lower: str, metric: str) -> Dict:
    """Mean gap between two rows on a segm ``metric``, the larger of their standard deviations,
    and on how many seeds (paired) ``higher`` is above ``lower``. The verdict "holds" needs the
    gap to exceed that larger deviation; "reversed" a gap as large the other way."""
    a = {r["seed"]: r["segm"][metric] for r in runs[higher]}
    b = {r["seed"]: r["segm"][metric] for r in runs[lower]}
    seeds = sorted(a.keys() & b.keys())
    (ma, sa), (mb, sb) = mean_std([a[s] for s in seeds]), mean_std([b[s] for s in seeds])
    gap, spread = ma - mb, max(sa, sb)
    verdict = "holds" if gap > spread else ("reversed" if -gap > spread else "within the spread")
    return {"gap": gap, "spread": spread, "wins": sum(a[s] > b[s] for s in seeds), "seeds": len(seeds),
            "verdict": verdict}


def render(runs: Dict, labels: Dict[str, str], val_gt: dict, args, base) -> str:
    """``labels``: row label -> kind, in table order."""
    order = [(label, kind) for label, kind in labels.items() if kind in runs]
    seeds = sorted({r["seed"] for rows in runs.values() for r in rows})
    lines = [f"Mask AP on the toy validation set, mean ± standard deviation over seeds {seeds} (box AP / APr "
             "alongside); (g) and (h) score the trained ViLD-text model of each seed another way (no training).", ""]
    lines += [table(["model", "mask AP", "APr (novel)", "APc", "APf", "box AP", "box APr"], [
        [label] + [cell([r["segm"][k] for r in runs[kind]]) for k in ("AP", "APr", "APc", "APf")]
        + [cell([r["bbox"][k] for r in runs[kind]]) for k in ("AP", "APr")] for label, kind in order])]
    kinds = {kind: label for label, kind in order}
    lines += ["", "Which orderings hold beyond one standard deviation (gap of the means larger than the larger of "
              "the two rows' deviations), and on how many seeds the first row is above the second:", ""]
    rows = []
    for hi, lo, metric, claim in ORDERINGS:
        if hi in runs and lo in runs:
            c = compare(runs, hi, lo, metric)
            rows.append([claim, f"{kinds[hi].split(' ')[0]} > {kinds[lo].split(' ')[0]}", metric,
                         f"{c['gap']:+.1f}", f"{c['spread']:.1f}", f"{c['wins']} / {c['seeds']}", c["verdict"]])
    lines += [table(["claim", "rows", "mask", "gap", "larger std", "seeds", "verdict"], rows)]
    loc = [(label, kind) for label, kind in order if kind in LOCALISATION_ROWS and "base_ap" in runs[kind][0]]
    if loc:
        lines += ["", "Localisation on the base classes (LVIS AP / AP50 / AP75 over the 16 base classes only, "
                  "all rows' detections of base classes; class-specific = Detectron2's default heads, a box and a "
                  "mask per class):", ""]
        lines += [table(["model", "box AP", "box AP50", "box AP75", "mask AP", "mask AP50", "mask AP75"], [
            [label] + [cell([r["base_ap"][t][k] for r in runs[kind]]) for t in ("bbox", "segm")
                       for k in ("AP", "AP50", "AP75")] for label, kind in loc])]
    lines += _diagnostics(runs, order)
    recall = next(iter(runs.values()))[0]["recall"]
    lines += ["", f"Proposal recall AR@300 (IoU 0.5) of the base-class RPN on validation objects: novel "
              f"{100 * recall['novel']:.1f}%, base {100 * recall['base']:.1f}%.", "",
              f"Config: {Path(base.vild_config).name} with {' '.join(base.opts) or 'no overrides'}; RPN "
              f"{Path(base.rpn_config).name}; extra overrides: {args.opts or 'none'}; one RPN and region cache per "
              "seed folder (the RPN's own seed is the config's, so they are the same networks)."]
    return "\n".join(lines) + "\n"


def _diagnostics(runs: Dict, order) -> List[str]:
    lines = ["", "Zero-shot accuracy of each region-embedding head on validation ground-truth boxes (argmax over "
             "all 24 classes), and how often the text head's softmax with background calls the object "
             "background:", ""]
    rows = []
    for label, kind in order:
        if "heads" in runs[kind][0]:
            for head, name in (("text", "text"), ("image", "image"), ("text_background", "text: background")):
                if head in runs[kind][0]["heads"]:
                    rows.append([label, name] + [cell([r["heads"][head][g] for r in runs[kind]], scale=100)
                                                 for g in ("novel", "base")])
    lines += [table(["model", "head", "novel", "base"], rows)]
    lines += ["", "How closely the distilled head fits its CLIP targets on its own training regions (cached regions "
              "of 300 training images, novel objects labelled for this only): mean cosine, and the share of "
              "object regions the model and CLIP name right:", ""]
    rows = []
    for label, kind in order:
        if "fit" in runs[kind][0]:
            fits = [r["fit"] for r in runs[kind]]
            rows.append([label] + [cell([f[g][k] for f in fits], digits=3 if k == "cosine" else 1,
                                        scale=1 if k == "cosine" else 100)
                                   for g in ("novel", "base") for k in ("cosine", "student_accuracy", "clip_accuracy")]
                        + [cell([f["background"]["cosine"] for f in fits], digits=3)])
    lines += [table(["model", "novel: cosine", "novel: model right", "novel: CLIP right", "base: cosine",
                     "base: model right", "base: CLIP right", "background: cosine"], rows)]
    lines += ["", "Where confident detections (score >= 0.3) land, by predicted class group: on an object of that "
              "class, on another object, on background (IoU >= 0.5 with the best-overlapping object):", ""]
    groups = [(g, w) for g in ("novel", "base") for w in ("right", "other object", "background")]
    lines += [table(["model"] + [f"{g}: {w}" for g, w in groups],
                    [[label] + [cell([r["landing"][g][w] for r in runs[kind]], digits=0) for g in ("novel", "base")
                                for w in ("right", "other_object", "background")] for label, kind in order])]
    lines += ["", "Novel validation objects found by a detection of any class at box IoU >= 0.5, and named right by "
              "the top-scoring such detection:", ""]
    lines += [table(["model", "novel objects", "found", "named right"], [
        [label, str(runs[kind][0]["naming"]["objects"])]
        + [cell([100 * r["naming"][k] / max(r["naming"]["objects"], 1) for r in runs[kind]]) + " %"
           for k in ("found", "named_right")] for label, kind in order])]
    return lines
