"""`image.strip`: a film strip of images, each fitted into (or cropped to fill) a cell of
width x height, `wrap` cells per row."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from tasks.declare import BOOLEAN, INTEGER, STRING, URLS, Job, Kind, Output, Param, TaskError
from tasks.imaging import MAX_IMAGE_PIXELS
from tasks.pictures import MAX_SIDE, load_fitted, save, target_size

# Decoding threads: Pillow decodes and resizes without holding the GIL.
THREADS = min(4, os.cpu_count() or 2)
# format choice: Pillow's format, file extension, MIME type.
FORMATS = {"jpeg": ("JPEG", "jpg", "image/jpeg"), "png": ("PNG", "png", "image/png")}


def run(job: Job) -> dict[str, Any]:
    p = job.params
    paths = job.inputs["urls"]
    count = len(paths)
    cell = target_size(paths[0], p.get("width"), p.get("height"))
    per_row = min(count, p.get("wrap") or count)
    rows = math.ceil(count / per_row)
    size = per_row * cell[0], rows * cell[1]
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise TaskError(
            f"the strip would be {size[0]}x{size[1]} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS} pixels"
        )
    strip = Image.new("RGB", size, (0, 0, 0))

    def load(path: str) -> Image.Image:
        return load_fitted(path, cell[0], cell[1], p["crop"]).image

    # Pictures are decoded and resized on several cores at once, pasted in order.
    with ThreadPoolExecutor(THREADS) as pool:
        for i, picture in enumerate(pool.map(load, paths)):
            left = (i % per_row) * cell[0] + (cell[0] - picture.width) // 2
            top = (i // per_row) * cell[1] + (cell[1] - picture.height) // 2
            strip.paste(picture, (left, top), picture if picture.mode == "RGBA" else None)
            job.progress(100.0 * (i + 1) / count)
    fmt, extension, mime = FORMATS[p["format"]]
    name = f"strip.{extension}"
    save(strip, job.workdir / name, fmt)
    return {
        "count": count,
        "width": size[0],
        "height": size[1],
        "content_type": mime,
        "output": name,
    }


KIND = Kind(
    name="image.strip",
    help="Create an image strip of custom dimensions by concatenating images.",
    params=(
        Param("urls", URLS, "Array of the source images URLs.", required=True),
        Param(
            "width",
            INTEGER,
            "Pixel width of each frame stitched into film strip (default: from the first "
            "image, following height's aspect ratio).",
            min=1,
            max=MAX_SIDE,
        ),
        Param(
            "height",
            INTEGER,
            "Pixel height of each frame stitched into film strip (default: from the first "
            "image, following width's aspect ratio).",
            min=1,
            max=MAX_SIDE,
        ),
        Param(
            "crop",
            BOOLEAN,
            "If false, images fit each strip section (centred on black). If true, images fill "
            "each strip section, aligning centers.",
            default=False,
        ),
        Param(
            "wrap",
            INTEGER,
            "Number of images that can be stitched horizontally before stitching starts onto a "
            "new line. If left unspecified, all images are stitched on a single line.",
            min=1,
        ),
        Param(
            "format",
            STRING,
            "Output image file format.",
            default="jpeg",
            choices=tuple(FORMATS),
        ),
    ),
    outputs=(
        Output("count", "integer", "Actual number of frames in the output."),
        Output("width", "integer", "Width of the output image in pixels."),
        Output("height", "integer", "Height of the output image in pixels."),
        Output("content_type", "string", "Mime-type of the output image."),
    ),
    output_files=(Output("output", "file", "URL of the output image."),),
    run=run,
    time_limit=300.0,
)
