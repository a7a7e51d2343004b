"""Image formats and reading errors of dataset images."""
import contextlib
from typing import Iterator

import numpy as np
from PIL import UnidentifiedImageError

__all__ = ["convert_rgb", "image_errors_named", "ImageReadError"]


class ImageReadError(RuntimeError):
    """A dataset image is missing, truncated or not an image."""


@contextlib.contextmanager
def image_errors_named(record: dict) -> Iterator[None]:
    """Turn the errors of reading the record's image (a missing, truncated or garbage file) into
    one that names it and says what to do."""
    try:
        yield
    except (UnidentifiedImageError, OSError, SyntaxError) as e:  # PIL raises SyntaxError on some corrupt files
        raise ImageReadError(f"cannot read image {record.get('file_name')} (image id {record.get('image_id')}): "
                             f"{type(e).__name__}: {e}. Restore the file, or remove the image from the dataset's "
                             "json") from e


def convert_rgb(image: np.ndarray, fmt: str) -> np.ndarray:
    """An H x W x 3 RGB image in the channel order a model was trained on (``INPUT.FORMAT``)."""
    if fmt == "RGB":
        return image
    if fmt == "BGR":
        return np.ascontiguousarray(image[:, :, ::-1])
    raise ValueError(f"INPUT.FORMAT {fmt!r} is not supported here; use RGB or BGR")
