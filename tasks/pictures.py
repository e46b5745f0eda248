"""Pictures for the image kinds' outputs: loading an untrusted image as shown (EXIF orientation,
rotation) at the size an output needs, and saving it as JPEG, GIF or PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image

from tasks.declare import TaskError
from tasks.geometry import apply, plan
from tasks.imaging import open_image

MAX_SIDE = 8192  # the largest width or height an image kind accepts as a parameter
JPEG_QUALITY = 90


# Pillow's transpositions that show a picture as shot, by EXIF orientation (1 needs none).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# The EXIF transpositions that swap width and height.
_SWAPS = (
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
)
# Counter-clockwise rotations in degrees, as Pillow transpositions.
ROTATE_CCW = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}
# A JPEG is decoded at a reduced scale (1/2, 1/4, 1/8: the DCT does the downscaling for almost
# nothing) as long as it stays at least this many times the size it is resized to afterwards;
# the final resize then smooths what the DCT scaling left. Pillow's `thumbnail` uses 2 as well.
DRAFT_GAP = 2.0


@dataclass(frozen=True)
class Fitted:
    """A picture resized for an output: the pixels, and the input's size as stored."""

    image: Image.Image
    original_size: tuple[int, int]


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8), 1 when absent or invalid."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError):
        return 1
    return value if value in ORIENTATION_TRANSPOSE else 1


def load_fitted(
    path: Path,
    width: int | None,
    height: int | None,
    crop: bool = False,
    rotation: int = 0,
) -> Fitted:
    """Opens an image and returns it shown as shot (EXIF orientation applied), turned `rotation`
    degrees counter-clockwise, and fitted into (or, with `crop`, filling) width x height; RGB,
    or RGBA when it has transparency. Only the first frame of an animation is read.

    The geometry is planned in the file's own orientation, so the resize works on the stored
    pixels (a JPEG is decoded at a reduced scale when much larger than the output) and the
    turns are applied to the small result."""
    image = open_image(path)
    try:
        original = image.size
        transpose = ORIENTATION_TRANSPOSE.get(orientation(image))
        turns = (transpose in _SWAPS) != (rotation in (90, 270))
        want = (height, width) if turns else (width, height)
        layout = plan(original, *want, crop=crop)
        if image.format == "JPEG" and (width or height):
            gap = int(layout.scaled[0] * DRAFT_GAP), int(layout.scaled[1] * DRAFT_GAP)
            if gap[0] < original[0] and gap[1] < original[1]:
                image.draft(None, gap)
                if image.size != original:
                    layout = plan(image.size, *want, crop=crop)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        image.close()
        raise TaskError(f"the image is corrupt or truncated ({e})") from None
    with image:
        # Resized before the file closes: `to_rgb` hands back the decoded image itself when it
        # is RGB already, sparing a copy of every full-size picture.
        pixels = apply(to_rgb(image), layout)
        if pixels is image:
            pixels = image.copy()
    if transpose is not None:
        pixels = pixels.transpose(transpose)
    if rotation in ROTATE_CCW:
        pixels = pixels.transpose(ROTATE_CCW[rotation])
    return Fitted(pixels, original)


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as RGB (itself if it is RGB already), or RGBA when it has transparency; 16-bit
    greys are scaled down, not clipped."""
    if "transparency" in image.info or image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return image.convert("RGBA")
    if image.mode.startswith("I;16") or (image.mode == "I" and image.getextrema()[1] > 255):
        image = image.convert("I").point(lambda v: v / 257).convert("L")
    return image if image.mode == "RGB" else image.convert("RGB")


def target_size(path: str | Path, width: int | None, height: int | None) -> tuple[int, int]:
    """An output's size (a GIF's, a strip cell's): width x height when both are given; with
    one, the other follows the image's aspect ratio; with neither, the image's size as shown
    (EXIF orientation applied)."""
    if width and height:
        return width, height
    with open_image(path) as first:
        size = first.size
        if ORIENTATION_TRANSPOSE.get(orientation(first)) in _SWAPS:
            size = size[1], size[0]
    return plan(size, width, height).size


def flatten(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """An RGBA image laid on a solid background (for formats without transparency)."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    base = Image.new("RGB", image.size, background)
    base.paste(image, mask=image.getchannel("A"))
    return base


def save(image: Image.Image, path: Any, fmt: str) -> None:
    """Writes `image` as JPEG (flattened on white), GIF (an adaptive palette, keeping full
    transparency) or PNG (as is)."""
    if fmt == "JPEG":
        flatten(image).save(path, "JPEG", quality=JPEG_QUALITY)
    elif fmt == "GIF":
        gif_frame(image).save(path, "GIF")
    else:
        image.save(path, "PNG")


def gif_frame(image: Image.Image) -> Image.Image:
    """A palette image for GIF: 255 adaptive colours, plus a transparent index when the image
    has transparent pixels."""
    if image.mode != "RGBA" or image.getchannel("A").getextrema()[0] >= 128:
        return image.convert("RGB").quantize(256)
    alpha = image.getchannel("A")
    paletted = image.convert("RGB").quantize(255)
    transparent = alpha.point(lambda a: 255 if a < 128 else 0)
    paletted.paste(255, mask=transparent)
    paletted.info["transparency"] = 255
    return paletted
