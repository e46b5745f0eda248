"""`image.info`: an image's type, size, transparency and the EXIF values a photo carries."""

from __future__ import annotations

import struct
from fractions import Fraction
from typing import Any

from PIL import ExifTags, Image

from tasks.declare import URL, Job, Kind, Output, Param, TaskError
from tasks.imaging import open_image

# Counter-clockwise degrees that show the picture as shot, per EXIF orientation; None where
# a flip is needed (2, 4, 5, 7).
ROTATION_BY_ORIENTATION = {1: 0.0, 3: 180.0, 6: 270.0, 8: 90.0}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(Fraction(value.numerator, value.denominator))
    except (AttributeError, ZeroDivisionError):
        pass
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )


# Pillow reads some metadata lazily (a PNG's eXIf chunk may follow the pixels, EXIF IFDs are
# parsed on demand), so a damaged file can fail after open_image has accepted it.
_DAMAGED = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def run(job: Job) -> dict[str, Any]:
    with open_image(job.inputs["url"]) as image:
        try:
            return _describe(image)
        except _DAMAGED as e:
            raise TaskError(f"the image could not be read: {e}") from None


def _describe(image: Image.Image) -> dict[str, Any]:
    exif = image.getexif()
    details = exif.get_ifd(ExifTags.IFD.Exif)
    orientation = exif.get(ExifTags.Base.Orientation)
    flash = details.get(ExifTags.Base.Flash)
    date_time = details.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    iso = details.get(ExifTags.Base.ISOSpeedRatings)
    if isinstance(iso, tuple):
        iso = iso[0] if iso else None
    return {
        "content_type": Image.MIME.get(image.format or "", "application/octet-stream"),
        "type": "image",
        "width": image.width,
        "height": image.height,
        "alpha": _has_alpha(image),
        "exif_orientation": orientation,
        "rotation": ROTATION_BY_ORIENTATION.get(orientation) if orientation else None,
        "date_time": date_time.strip("\x00 ") if isinstance(date_time, str) else None,
        "flash": bool(flash & 1) if isinstance(flash, int) else None,
        "focal_length": _number(details.get(ExifTags.Base.FocalLength)),
        "iso_speed": _number(iso),
        "exposure_time": _number(details.get(ExifTags.Base.ExposureTime)),
    }


KIND = Kind(
    name="image.info",
    help="Return image file information.",
    params=(Param("url", URL, "URL of the image file to be scanned.", required=True),),
    outputs=(
        Output("content_type", "string", "Content-Type of the image file."),
        Output("type", "string", "Type of the file (`image`)."),
        Output("width", "integer", "Width in pixels."),
        Output("height", "integer", "Height in pixels."),
        Output("alpha", "boolean", "Whether the image has an alpha channel."),
        Output("exif_orientation", "integer", "EXIF orientation (1 to 8), null without EXIF."),
        Output(
            "rotation",
            "float",
            "Counter-clockwise rotation, in degrees, to see the image as shot; null if a flip "
            "is required or the EXIF orientation is missing.",
        ),
        Output("date_time", "string", "EXIF date the photo was taken."),
        Output("flash", "boolean", "Whether the flash fired."),
        Output("focal_length", "float", "EXIF focal length, in mm."),
        Output("iso_speed", "float", "EXIF ISO speed."),
        Output("exposure_time", "float", "EXIF exposure time, in seconds."),
    ),
    run=run,
    time_limit=30.0,
)
