"""The web page (vild_d2.serve, ``demo.py --serve``): vocabularies typed on the page, bad input
answered with a message while the server keeps serving, and, in headless Chromium, the detections
the page shows and downloads equal the predictor's own."""
import base64
import http.client
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from detectron2.data.detection_utils import read_image
from PIL import Image

from vild_d2.engine import load_config
from vild_d2.kit.toy import TOY_PREFIX
from vild_d2.predictor import VocabularyPredictor
from vild_d2.serve import WebDemo, decode_image, listen, vocabulary_from_text
from vild_d2.visualize import detections_to_json

from .helpers import INSTANT, REPO, subprocess_env

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), "/usr/bin/chromedriver"
VOCABULARY = "lemon,sheriff,ruby,daisy"  # toy names; sheriff, ruby and daisy are rare: novel to the model
OTHER = "cherry\nmedic, doctor\nclover"  # one class per line, synonyms after commas


def model_opts(toy_env, run, text_cache):
    return ["MODEL.WEIGHTS", str(run / "model_final.pth"), "MODEL.VILD.CLIP_MODEL", str(toy_env / "clip.pt"),
            "MODEL.VILD.TEXT_CACHE_DIR", str(text_cache), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
            "MODEL.DEVICE", "cpu", "TEST.DETECTIONS_PER_IMAGE", "10"]  # fewer to draw: faster


@pytest.fixture(scope="module")
def model_cfg(toy_env, instant_run, tmp_path_factory):
    return load_config(INSTANT, model_opts(toy_env, instant_run[0], tmp_path_factory.mktemp("text")), register=False)


@pytest.fixture(scope="module")
def predictor(model_cfg):
    return VocabularyPredictor(model_cfg, VOCABULARY)


def toy_images(toy_env, n=2):
    return sorted((toy_env / TOY_PREFIX / "images" / "val").glob("*.png"))[:n]


def expected(predictor, vocabulary, paths, threshold=0.0):
    """``{"image", "detections"}`` per path of the vocabulary typed as ``vocabulary``, from the
    predictor itself, as ``demo.py`` writes them."""
    with tempfile.TemporaryDirectory() as folder:
        predictor.set_vocabulary(vocabulary_from_text(vocabulary, folder))
    out = []
    for path in paths:
        inst = predictor(read_image(str(path), format="RGB"))
        out.append({"image": Path(path).name,
                    "detections": detections_to_json(inst[inst.scores >= threshold], predictor.class_names)})
    return out


def assert_same_detections(shown, wanted):
    """Same images, classes and order; scores and boxes as far as two processes' float sums agree."""
    assert [r["image"] for r in shown] == [r["image"] for r in wanted]
    for got, want in zip(shown, wanted):
        assert [d["class"] for d in got["detections"]] == [d["class"] for d in want["detections"]], got["image"]
        assert [d["score"] for d in got["detections"]] == pytest.approx([d["score"] for d in want["detections"]],
                                                                        abs=2e-3)
        assert [d["box_xyxy"] for d in got["detections"]] == [
            pytest.approx(d["box_xyxy"], abs=0.05) for d in want["detections"]]


def test_vocabulary_typed_on_the_page(tmp_path):
    assert vocabulary_from_text(" coco \n", str(tmp_path)) == "coco"
    one_line = Path(vocabulary_from_text("red circle, blue star", str(tmp_path)))
    assert one_line.name == "red_circle_blue_star.txt" and one_line.read_text() == "red circle\nblue star\n"
    lines = Path(vocabulary_from_text(OTHER, str(tmp_path)))
    assert lines.read_text() == "cherry\nmedic, doctor\nclover\n"
    # a name that is also a file on the server is a class name, never the file's contents
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read\n")
    assert Path(vocabulary_from_text(str(secret), str(tmp_path))).read_text() == f"{secret}\n"
    with pytest.raises(ValueError, match="empty vocabulary"):
        vocabulary_from_text(" \n\n", str(tmp_path))


def fifty_megapixels() -> bytes:
    """A 50-megapixel PNG of a few kilobytes (one bit per pixel, all zero)."""
    buf = io.BytesIO()
    Image.new("1", (8000, 6250)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_limits():
    big = fifty_megapixels()  # refused from its header, before its pixels are decoded
    with pytest.raises(ValueError, match=r"8000x6250 is 50\.0 megapixels, above this server's limit of 20"):
        decode_image(big, 20e6)
    with pytest.raises(ValueError, match="not an image"):
        decode_image(b"%PDF-1.4 not a picture", 20e6)
    with pytest.raises(ValueError, match="broken image"):
        decode_image(big[:200], 60e6)  # a header that reads, pixels that do not


def test_new_vocabulary_without_reloading_equals_a_fresh_model(predictor, model_cfg, toy_env, tmp_path):
    demo, paths = WebDemo(predictor, threshold=0.0, vocabulary=VOCABULARY), toy_images(toy_env, 2)
    files, model = [(p.name, p.read_bytes()) for p in paths], predictor.model
    first = demo.detect(VOCABULARY, files)
    assert first["novel"] == ["sheriff", "ruby", "daisy"]
    second = demo.detect(OTHER, files)
    assert predictor.model is model and second["vocabulary"] == ["cherry", "medic", "clover"]
    assert all(r["detections"] and r["png"].startswith("data:image/png;base64,") for r in second["results"])
    fresh = VocabularyPredictor(model_cfg, vocabulary_from_text(OTHER, str(tmp_path)))
    assert_same_detections(second["results"], expected(fresh, OTHER, paths))
    assert_same_detections(demo.detect(VOCABULARY, files)["results"], first["results"])


@contextmanager
def running(app):
    """``app`` served by uvicorn in a thread on a free loopback port; its URL."""
    sock, url = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def post(url, fields, files=()):
    """(status, JSON or text) of a multipart POST, as the page's FormData sends it."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for filename, data in files:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "api/detect", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            status, raw, kind = resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, raw, kind = e.code, e.read(), e.headers.get("content-type", "")
    return status, json.loads(raw) if "json" in kind else raw.decode()


def test_bad_input_gets_a_message_and_the_server_keeps_serving(predictor, toy_env):
    path = toy_images(toy_env, 1)[0]
    image = (path.name, path.read_bytes())
    with running(WebDemo(predictor, threshold=0.0, max_megapixels=20, max_upload_mb=1).app()) as url:
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'id="vocabulary"' in page and 'id="images"' in page
        bad = [({"vocabulary": ""}, [image], 400, "empty vocabulary"),
               ({"vocabulary": "lemon,ruby,lemon"}, [image], 400, r"names \['lemon'\] more than once"),
               ({"vocabulary": VOCABULARY}, [], 400, "no image"),
               ({"vocabulary": VOCABULARY, "threshold": "1.5"}, [image], 400, "outside")]
        for fields, files, status, message in bad:
            got, answer = post(url, fields, files)
            assert got == status, (fields, answer)
            assert re.search(message, answer["error"]), answer
            assert json.loads(urllib.request.urlopen(url + "api/info", timeout=10).read())["vocabulary"]
        # above max_upload_mb: refused from its Content-Length, before the body is read (a client still
        # sending the body then finds the connection closed, so this one sends none)
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=10)
        conn.request("POST", "/api/detect", headers={"Content-Length": str(2 * 2**20),
                                                     "Content-Type": "multipart/form-data; boundary=x"})
        assert conn.getresponse().status == 413
        conn.close()
        # files that cannot be used get their message; the others in the same request are detected
        strip = io.BytesIO()
        Image.new("RGB", (4000, 3)).save(strip, format="PNG")  # drawn upscaled to 480 px high, it would not fit
        files = [("notes.txt", b"hello"), ("big.png", fifty_megapixels()), image, ("strip.png", strip.getvalue())]
        status, answer = post(url, {"vocabulary": VOCABULARY}, files)
        assert status == 200, answer
        errors = [r.get("error", "") for r in answer["results"]]
        assert "not an image" in errors[0] and "50.0 megapixels" in errors[1] and errors[2:] == ["", ""]
        assert_same_detections(answer["results"][2:3], expected(predictor, VOCABULARY, [path]))
        drawn = [Image.open(io.BytesIO(base64.b64decode(r["png"].split(",", 1)[1]))).size
                 for r in answer["results"][2:]]
        assert min(drawn[0]) >= 480 and max(drawn[1]) <= 1600, drawn


def browser(download_dir):
    """Headless Debian chromium through its own chromedriver (never a downloaded one)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1000"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.mark.skipif(not CHROMIUM or not Path(CHROMEDRIVER).is_file(),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                           ".ci/run installs them)")
def test_page_in_chromium_shows_the_predictors_detections(predictor, toy_env, instant_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    log = tmp_path / "server.log"
    cmd = [str(REPO / "demo.py"), "--serve", "--port", "0", "--config-file", str(INSTANT), "--custom-vocabulary",
           "cherry,clover", "--confidence-threshold", "0.0", "--opts",
           *model_opts(toy_env, instant_run[0], tmp_path / "text")]
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, *cmd], env=subprocess_env(toy_env, threads=2), cwd=REPO,
                                  stdout=out, stderr=subprocess.STDOUT)
    driver = None
    try:
        deadline, url = time.time() + 120, None
        while url is None and server.poll() is None and time.time() < deadline:
            found = re.search(r"serving the detection page on (\S+)", log.read_text())
            url = found and found.group(1)
            time.sleep(0.05)
        assert url, f"demo.py --serve did not start:\n{log.read_text()[-3000:]}"
        driver = browser(tmp_path / "downloads")
        wait = WebDriverWait(driver, 120)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "vocabulary").get_attribute("value") == "cherry,clover")
        paths = toy_images(toy_env, 2)
        not_image = tmp_path / "notes.txt"
        not_image.write_text("not an image")
        big = tmp_path / "big.png"
        big.write_bytes(fifty_megapixels())
        driver.find_element(By.ID, "images").send_keys("\n".join(str(p) for p in [*paths, not_image, big]))

        def detect(vocabulary):
            box = driver.find_element(By.ID, "vocabulary")
            box.clear()
            box.send_keys(vocabulary)
            driver.execute_script("document.body.dataset.state = 'sent'")
            driver.find_element(By.ID, "detect").click()
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
            return json.loads(driver.find_element(By.ID, "json").get_attribute("textContent") or "null")

        shown = detect(VOCABULARY)
        assert_same_detections(shown["results"][:2], expected(predictor, VOCABULARY, paths))
        assert "not an image" in shown["results"][2]["error"] and "50.0 megapixels" in shown["results"][3]["error"]
        assert "2 of 4 file(s) could not be used" in driver.find_element(By.ID, "message").text
        shown_errors = driver.find_elements(By.CSS_SELECTOR, ".result .error")
        assert [e.text for e in shown_errors] == [r["error"] for r in shown["results"][2:]]
        pictures = driver.find_elements(By.CSS_SELECTOR, ".result img")
        assert len(pictures) == 2 and all(driver.execute_script("return arguments[0].naturalWidth", p) >= 480
                                          for p in pictures)
        assert shown["novel"] == ["sheriff", "ruby", "daisy"]
        novel_shown = [d for r in shown["results"][:2] for d in r["detections"] if d["class"] in shown["novel"]]
        assert len(driver.find_elements(By.CSS_SELECTOR, "tr.novel .badge")) == len(novel_shown) > 0

        # a duplicated vocabulary: a message, the last results stay
        assert detect("lemon,lemon") == shown
        assert "more than once" in driver.find_element(By.ID, "message").text

        # another vocabulary, same page, same server, same model
        shown = detect(OTHER)
        assert shown["vocabulary"] == ["cherry", "medic", "clover"]
        assert_same_detections(shown["results"][:2], expected(predictor, OTHER, paths))

        driver.find_element(By.ID, "download").click()
        target = tmp_path / "downloads" / "detections.json"
        deadline = time.time() + 30
        while not target.is_file() and time.time() < deadline:
            time.sleep(0.05)
        assert json.loads(target.read_text()) == shown
        assert server.poll() is None, "the server stopped"
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
