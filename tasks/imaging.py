"""Opening untrusted images with Pillow safely, shared by the image kinds."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tasks.declare import TaskError

# Decompression-bomb limit: an image with more pixels than this is refused before decoding.
MAX_IMAGE_PIXELS = 100_000_000


def open_image(path: Path) -> Image.Image:
    """Opens an image (headers only), refusing non-images and images over the pixel limit."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TaskError(f"image too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise TaskError("the file is not an image in a format we can read") from None
    except OSError as e:
        raise TaskError(f"the image could not be read: {e}") from None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise TaskError(
            f"image too large to decode safely ({image.width}x{image.height} pixels, "
            f"limit {MAX_IMAGE_PIXELS})"
        )
    return image
