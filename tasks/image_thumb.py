"""`image.thumb`: a new image of custom dimensions and orientation from an original image."""

from __future__ import annotations

from typing import Any

from tasks.declare import BOOLEAN, INTEGER, STRING, URL, Job, Kind, Output, Param
from tasks.geometry import draw_play_icon
from tasks.pictures import MAX_SIDE, load_fitted, save

# format choice: Pillow's format, file extension.
FORMATS = {"jpeg": ("JPEG", "jpg"), "gif": ("GIF", "gif"), "png": ("PNG", "png")}


def run(job: Job) -> dict[str, Any]:
    p = job.params
    fitted = load_fitted(
        job.inputs["url"], p.get("width"), p.get("height"), p["crop"], p["rotation"]
    )
    image = fitted.image
    if p["poster"]:
        image = draw_play_icon(image)
    fmt, extension = FORMATS[p["format"]]
    name = f"thumb.{extension}"
    save(image, job.workdir / name, fmt)
    return {
        "width": image.width,
        "height": image.height,
        "original_width": fitted.original_size[0],
        "original_height": fitted.original_size[1],
        "output": name,
    }


KIND = Kind(
    name="image.thumb",
    help="Create a new image of custom dimensions and orientation from an original image. The "
    "EXIF orientation is applied first, then the rotation, then the image is fitted into (or, "
    "with crop, fills) width x height.",
    params=(
        Param("url", URL, "URL of the source image.", required=True),
        Param("width", INTEGER, "Desired thumbnail width, in pixels.", min=1, max=MAX_SIDE),
        Param("height", INTEGER, "Desired thumbnail height, in pixels.", min=1, max=MAX_SIDE),
        Param(
            "crop",
            BOOLEAN,
            "If crop is true, original image fills new image dimensions. If crop is false, "
            "original image fits new image dimensions.",
            default=False,
        ),
        Param(
            "rotation",
            INTEGER,
            "A counter clockwise rotation to apply to the thumbnail, in degrees.",
            default=0,
            choices=(0, 90, 180, 270),
        ),
        Param("poster", BOOLEAN, "If true, a play icon is added in the center.", default=False),
        Param("format", STRING, "The output format.", default="jpeg", choices=tuple(FORMATS)),
    ),
    outputs=(
        Output("width", "integer", "Thumbnail width."),
        Output("height", "integer", "Thumbnail height."),
        Output("original_width", "integer", "Original image width, as stored in the file."),
        Output("original_height", "integer", "Original image height, as stored in the file."),
    ),
    output_files=(Output("output", "file", "URL of the thumbnail."),),
    run=run,
    time_limit=60.0,
)
