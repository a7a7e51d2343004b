"""A web page around a :class:`~vild_d2.predictor.VocabularyPredictor`: ``demo.py --serve``.

Type a vocabulary, drop images, get them back drawn (boxes, masks, names, scores; novel classes
marked) with ``demo.py``'s JSON; a new vocabulary swaps the text classifier, the model stays
loaded. Starlette + uvicorn serve one static page (``serve.html``) and one JSON endpoint. Bad input
(not an image, too many pixels, an empty or repeated vocabulary) is answered with a message and
the server goes on serving.
"""
import base64
import io
import logging
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import MetadataCatalog
from PIL import Image, ImageOps, UnidentifiedImageError

from .predictor import VocabularyPredictor, vocabulary_source
from .visualize import default_scale, detections_to_json, draw_detections
from .vocabularies import builtin_vocabulary, load_vocabulary

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.formparsers import MultiPartException
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route
except ImportError as e:  # the web page is optional: detection itself needs none of these
    raise ImportError(f"the web page needs starlette, uvicorn and python-multipart ({e}): "
                      "pip install 'starlette==1.10.0' 'uvicorn==0.55.0' 'python-multipart==0.0.34' "
                      "(the versions requirements.txt pins), or pip install 'vild_d2[web]'") from e

logger = logging.getLogger(__name__)

__all__ = ["WebDemo", "decode_image", "vocabulary_from_text", "serve", "listen"]

PAGE = Path(__file__).with_name("serve.html")
MAX_MEGAPIXELS = 20.0
MAX_UPLOAD_MB = 200
MAX_FILES = 32
# The page shows pictures under ~1000 px wide: larger drawings only cost memory, time and bandwidth.
MAX_DRAWN_SIDE = 1600


def vocabulary_from_text(text: str, folder: str) -> str:
    """What ``load_vocabulary`` should read for a vocabulary typed on the page: ``lvis``, ``coco`` or a
    registered dataset's name as is; one line as ``class a,class b``; several lines as a vocabulary file
    (one class per line, synonyms after commas), written into ``folder``. Typed text is always written
    to a file of its own, so that a name that happens to be a path on the server is never read."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty vocabulary: type 'class a,class b', one class per line (synonyms after commas), "
                         "lvis, coco or a registered dataset's name")
    if len(lines) == 1 and (builtin_vocabulary(lines[0]) is not None
                            or (lines[0] in MetadataCatalog.list()
                                and MetadataCatalog.get(lines[0]).get("thing_classes"))):
        return lines[0]
    rows = lines if len(lines) > 1 else lines[0].split(",")
    # named as demo.py's --custom-vocabulary string would be, so that both find one cached classifier
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", ",".join(row.split(",")[0].strip() for row in rows))[:40]
    path = Path(folder) / f"{stem or 'vocabulary'}.txt"
    path.write_text("".join(f"{row.strip()}\n" for row in rows))
    return str(path)


def decode_image(data: bytes, max_pixels: float) -> np.ndarray:
    """H x W x 3 RGB array of an uploaded file (EXIF orientation applied, as detectron2's
    ``read_image``); ValueError saying what is wrong with it otherwise. The size is checked from the
    header, before the pixels are decoded."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:  # its message names a BytesIO object, nothing the user knows
        raise ValueError("not an image, or of a format that cannot be read: send png, jpg, bmp, webp or tif") from e
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"not an image that can be read: {e}") from e
    w, h = img.size
    if w * h > max_pixels:
        raise ValueError(f"{w}x{h} is {w * h / 1e6:.1f} megapixels, above this server's limit of "
                         f"{max_pixels / 1e6:g}: downscale the image (or restart with a larger --max-megapixels)")
    try:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:  # a header that reads but pixels that do not
        raise ValueError(f"a broken image: {e}") from e


def draw_scale(height: int, width: int) -> float:
    """``draw_detections``' own scale, and large images drawn down to ``MAX_DRAWN_SIDE`` (pictures
    sent to the browser stay small)."""
    return min(default_scale(height, width), MAX_DRAWN_SIDE / max(height, width))


def png_data_url(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class WebDemo:
    """What the page asks of the predictor, without HTTP: :meth:`detect` and :meth:`info`."""

    def __init__(self, predictor: VocabularyPredictor, threshold: float = 0.3,
                 max_megapixels: float = MAX_MEGAPIXELS, vocabulary: Optional[str] = None,
                 max_upload_mb: float = MAX_UPLOAD_MB):
        """``vocabulary``: the source ``predictor`` was built with, if known (a page asking for the same
        classes then needs no new classifier). ``max_upload_mb``: the largest request :meth:`app` takes."""
        self.predictor = predictor
        self.threshold = threshold
        self.max_pixels = max_megapixels * 1e6
        self.max_upload_mb = max_upload_mb
        self._vocabulary = load_vocabulary(vocabulary) if vocabulary else None  # (names, synonyms) detected now
        self._lock = threading.Lock()  # one request at a time uses (and may re-vocabulary) the model

    def info(self) -> Dict:
        names = self.predictor.class_names
        return {"vocabulary": list(names), "novel": [names[i] for i in self.predictor.novel_ids],
                "threshold": self.threshold, "max_megapixels": self.max_pixels / 1e6, "max_files": MAX_FILES,
                "max_upload_mb": self.max_upload_mb,
                "weights": self.predictor.cfg.MODEL.WEIGHTS}

    def set_vocabulary(self, text: str) -> None:
        """Detect the vocabulary typed on the page from now on (ValueError: why it cannot be)."""
        with tempfile.TemporaryDirectory(prefix="vild_vocabulary_") as folder:
            source = vocabulary_from_text(text, folder)
            try:
                wanted = load_vocabulary(source)
                if wanted != self._vocabulary or wanted[0] != list(self.predictor.class_names):
                    self.predictor.set_vocabulary(source)
            except ValueError as e:  # the temporary file's name means nothing to the user
                raise ValueError(str(e).replace(repr(source), "typed on the page")) from e
            self._vocabulary = wanted

    def detect(self, vocabulary: str, files: Sequence[Tuple[str, bytes]],
               threshold: Optional[float] = None) -> Dict:
        """``{"vocabulary", "novel", "results"}``: per file ``{"image", "detections", "png"}`` (the
        detections as ``demo.py`` writes them, the drawn image as a data URL) or ``{"image", "error"}``.
        ValueError for a request that cannot run at all (vocabulary, threshold, no files)."""
        threshold = self.threshold if threshold is None else threshold
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"confidence threshold {threshold} is outside [0, 1]")
        if not files:
            raise ValueError("no image: drop or choose one or more images")
        if len(files) > MAX_FILES:
            raise ValueError(f"{len(files)} images at once: send at most {MAX_FILES}")
        with self._lock:
            self.set_vocabulary(vocabulary)
            names, novel = list(self.predictor.class_names), list(self.predictor.novel_ids)
            results: List[Dict] = []
            for name, data in files:
                start = time.perf_counter()
                try:
                    image = decode_image(data, self.max_pixels)
                except ValueError as e:
                    logger.warning("%s: %s", name, e)
                    results.append({"image": name, "error": str(e)})
                    continue
                inst = self.predictor(image)
                inst = inst[inst.scores >= threshold]
                results.append({"image": name, "detections": detections_to_json(inst, names),
                                "png": png_data_url(draw_detections(image, inst, names, novel,
                                                                    scale=draw_scale(*image.shape[:2]))),
                                "seconds": round(time.perf_counter() - start, 3)})
                logger.info("%s: %d detections", name, len(inst))
        return {"vocabulary": names, "novel": [names[i] for i in novel], "threshold": threshold, "results": results}

    def app(self) -> Starlette:
        """The ASGI app: ``GET /`` the page, ``GET /api/info``, ``POST /api/detect`` (multipart form:
        ``vocabulary``, ``threshold``, ``images``)."""
        page = PAGE.read_text()

        async def index(request):
            return HTMLResponse(page)

        async def info(request):
            return JSONResponse(self.info())

        async def detect(request):
            try:
                async with request.form(max_files=MAX_FILES, max_fields=8) as form:
                    files = [(f.filename or "image", await f.read()) for f in form.getlist("images")
                             if not isinstance(f, str)]
                    vocabulary = str(form.get("vocabulary", ""))
                    threshold = float(form.get("threshold") or self.threshold)
                # the model runs in a worker thread: the page and /api/info keep answering meanwhile
                return JSONResponse(await run_in_threadpool(self.detect, vocabulary, files, threshold))
            except (ValueError, MultiPartException) as e:
                logger.warning("refused a request: %s", e)
                return JSONResponse({"error": str(e)}, status_code=400)

        routes = [Route("/", index), Route("/api/info", info),
                  Route("/api/detect", detect, methods=["POST"], max_body_size=int(self.max_upload_mb * 2**20))]
        return Starlette(routes=routes)


def serve(cfg, vocabulary: str = "custom", custom_vocabulary: str = "", host: str = "127.0.0.1", port: int = 8000,
          threshold: float = 0.3, max_megapixels: float = MAX_MEGAPIXELS, max_upload_mb: float = MAX_UPLOAD_MB) -> int:
    """Load the model of ``cfg`` once and serve the page until interrupted (``demo.py --serve``). The
    first vocabulary: ``vocabulary``/``custom_vocabulary`` as ``demo.py`` reads them, else the
    classes of the config's first test dataset. ``port`` 0: any free port (the log says which)."""
    if vocabulary == "custom" and not custom_vocabulary and cfg.DATASETS.TEST:
        vocabulary = cfg.DATASETS.TEST[0]
    source = vocabulary_source(vocabulary, custom_vocabulary)
    app = WebDemo(VocabularyPredictor(cfg, source), threshold, max_megapixels, source, max_upload_mb).app()
    sock, url = listen(host, port)
    logger.info("serving the detection page on %s (Ctrl-C stops it)", url)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


def listen(host: str = "127.0.0.1", port: int = 0) -> Tuple[socket.socket, str]:
    """A socket bound to ``host``:``port`` for ``uvicorn.Server.run(sockets=...)``, and its URL: bound
    before the server starts, so that port 0 (any free one) is known."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock, f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}/"
