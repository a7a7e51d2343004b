"""demo.py: a custom vocabulary of novel names on toy images, PNG + JSON per image."""
import json

import pytest
from PIL import Image

from vild_d2.kit.toy import TOY_PREFIX

from .helpers import INSTANT, run_script


@pytest.mark.parametrize("scores", [[], ["--scores", "text+clip"]], ids=["model", "text+clip"])
def test_custom_novel_vocabulary(toy_env, instant_run, tmp_path, scores):
    run, _ = instant_run
    images = toy_env / TOY_PREFIX / "images" / "val"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    vocab = ["ruby", "medic", "daisy"]  # rare classes: never labelled in training
    log = run_script("demo.py", toy_env, "--config-file", str(INSTANT), "--input", str(images), str(broken),
                     "--output", str(tmp_path / "out"), "--vocabulary", "custom",
                     "--custom-vocabulary", ",".join(vocab), "--confidence-threshold", "0.0", *scores,
                     "--opts", "MODEL.WEIGHTS", str(run / "model_final.pth"),
                     "MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt"),
                     "MODEL.VILD.TEXT_CACHE_DIR", str(tmp_path / "text"), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    assert "skipping" in log and "broken.png" in log
    names = []
    for src in sorted(images.glob("*.png")):
        out = json.loads((tmp_path / "out" / f"{src.stem}.json").read_text())
        names += [d["class"] for d in out["detections"]]
        (w, h), (w0, h0) = Image.open(tmp_path / "out" / f"{src.stem}.png").size, Image.open(src).size
        assert min(w, h) >= 480 and abs(w / h - w0 / h0) < 0.01  # small images are drawn upscaled
    assert names and set(names) <= set(vocab)
    assert not (tmp_path / "out/broken.json").exists()
    assert all(0.0 <= d["score"] <= 1.0 for src in images.glob("*.png")
               for d in json.loads((tmp_path / "out" / f"{src.stem}.json").read_text())["detections"])


def test_batches_and_workers_write_the_results_of_one_image_at_a_time(toy_env, instant_run, tmp_path):
    run, _ = instant_run
    images = toy_env / TOY_PREFIX / "images"
    outputs, logs = [], []
    for batching in (["--batch-size", "1", "--workers", "0"], ["--batch-size", "3", "--workers", "2"]):
        out = tmp_path / f"out{len(outputs)}"
        logs.append(run_script("demo.py", toy_env, "--config-file", str(INSTANT), "--input", str(images / "train"),
                               str(images / "val"), "--output", str(out), "--vocabulary", "custom",
                               "--custom-vocabulary", "ruby,medic,daisy", "--confidence-threshold", "0.05",
                               *batching, "--opts", "MODEL.WEIGHTS", str(run / "model_final.pth"),
                               "MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt"),
                               "MODEL.VILD.TEXT_CACHE_DIR", str(tmp_path / "text")))
        outputs.append({p.name: json.loads(p.read_text())["detections"] for p in out.glob("*.json")})
    alone, batched = outputs
    assert len(alone) == 14 and alone.keys() == batched.keys() and any(alone.values())
    for name, detections in alone.items():
        assert [d["class"] for d in batched[name]] == [d["class"] for d in detections], name
        assert [d["score"] for d in batched[name]] == pytest.approx([d["score"] for d in detections], abs=2e-4)
        assert [d["box_xyxy"] for d in batched[name]] == [pytest.approx(d["box_xyxy"], abs=0.02) for d in detections]
    for log in logs:  # stderr is a pipe, not a terminal: progress lines, no bar redraws
        assert "detecting: 14/14 (100%) done in" in log and "\r" not in log
