"""``python -m benchmarks.gpu_check``'s report: after a GPU run with failed steps or variants it still prints
every table, the ratio-less rows when the baseline failed, and every traceback and parameter without a
gradient. (The whole --smoke run takes ~1 min on 2 idle cores, too long for the suite.)"""
from benchmarks.gpu_check import failures, report


def _variant(**kw):
    return dict({"min_s": 0.5, "median_s": 0.5, "all_s": [0.5], "images_per_s": 8.0, "losses": {"loss_cls": 1.25},
                 "trainable_params": 10, "missing_grads": [], "nonfinite_grads": 0, "grad_scale": 32768.0}, **kw)


def _run_record():
    train = {"batch": 4, "input_size": [1024, 1024], "ok": False,
             "variant_errors": {"mask_rcnn": "Traceback ...\nRuntimeError: CUDA out of memory"},
             "variants": {"text": _variant(peak_mb=20480.0, resident_before_mb=1024.0),
                          "image": _variant(missing_grads=["roi_heads.box_predictor.bias"], grad_scale=None)}}
    return {"device_name": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "settings": {"batch": 4, "smoke": False},
            "total_wall_s": 300.0, "steps": {
                "cache": {"ok": False, "wall_s": 1.5, "result": None,
                          "error": "Traceback (most recent call last):\nRuntimeError: Input type (float) and bias "
                                   "type (c10::Half) should be the same\n"},
                "train": {"ok": False, "wall_s": 60.0, "result": train, "error": "a check failed: see the figures"}}}


def test_report_survives_failed_steps_and_a_failed_baseline():
    out = _run_record()
    text = report(out)
    assert "| cache | FAILED | 1.5 | RuntimeError: Input type (float) and bias type (c10::Half) should be the same |" \
        in text
    assert "| train | FAILED | 60.0 | 2 variants timed, failed: ['mask_rcnn'] |" in text
    # no baseline: no ratio; peak memory only where measured (CUDA); no GradScaler: "-"
    assert "| text | 8.00 | 0.500 | - | 20,480 (1,024) | 0 / 10 | 0 | 32768.0 | loss_cls 1.25 |" in text
    assert "| image | 8.00 | 0.500 | - | - | 1 / 10 | 0 | - | loss_cls 1.25 |" in text
    assert "Inference" not in text  # no infer step in this record


def test_failures_name_every_traceback_and_missing_gradient():
    lines = failures(_run_record())
    assert "--- cache FAILED ---\nTraceback (most recent call last):\nRuntimeError: Input type" in lines
    assert "--- train / mask_rcnn FAILED ---\nTraceback ...\nRuntimeError: CUDA out of memory" in lines
    assert "--- train / image: no gradient for ['roi_heads.box_predictor.bias']" in lines
