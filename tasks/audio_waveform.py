"""`audio.waveform`: an image of the audio's waveform, the min and max of the samples under each
pixel column drawn in the fill colour on the background."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from tasks.audio import check_complete, peaks, select_audio, stream_duration
from tasks.declare import COLOR, FLOAT, INTEGER, STRING, URL, Job, Kind, Output, Param, TaskError
from tasks.media import open_media

FORMATS = {"png": ("PNG", "png", "image/png"), "jpeg": ("JPEG", "jpg", "image/jpeg")}
MAX_WIDTH = 16384
MAX_HEIGHT = 4096
# Blocks per column the decoder reduces samples into; the columns are then cut along block
# boundaries, so a column's edge is placed within 1/8 of a column.
BLOCKS_PER_COLUMN = 8


def hex_rgb(color: str) -> tuple[int, int, int]:
    """`#RRGGBB` as an (r, g, b) tuple."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def columns(mins: np.ndarray, maxs: np.ndarray, block: int, samples: int, width: int):
    """The min and max under each of `width` columns spanning `samples` samples, from per-block
    extremes. A column narrower than a block takes the block its left edge falls in."""
    starts = (np.arange(width, dtype=np.int64) * samples) // (width * block)
    starts = np.minimum(starts, len(mins) - 1)
    return np.minimum.reduceat(mins, starts), np.maximum.reduceat(maxs, starts)


def draw(
    lows: np.ndarray,
    highs: np.ndarray,
    height: int,
    vmargin: int,
    fill: tuple[int, int, int],
    background: tuple[int, int, int],
) -> Image.Image:
    """Each column filled from its max down to its min (at least one pixel, so silence is a
    thin line through the middle), inside the vertical margins."""
    half = (height - 2 * vmargin) / 2.0
    centre = vmargin + half
    lowest, highest = vmargin, height - vmargin - 1
    top = np.floor(centre - highs * half).astype(np.int32).clip(lowest, highest)
    bottom = (np.ceil(centre - lows * half).astype(np.int32) - 1).clip(lowest, highest)
    bottom = np.maximum(bottom, top)
    rows = np.arange(height, dtype=np.int32)[:, None]
    mask = (rows >= top[None, :]) & (rows <= bottom[None, :])
    pixels = np.empty((height, len(lows), 3), dtype=np.uint8)
    pixels[:] = background
    pixels[mask] = fill
    return Image.fromarray(pixels, "RGB")


def run(job: Job) -> dict[str, Any]:
    p = job.params
    width, height, vmargin = p["width"], p["height"], p["vmargin"]
    if 2 * vmargin >= height:
        raise TaskError(f"vmargin ({vmargin}) leaves no room in a {height} pixel high image")
    start, end = p["start"], p.get("end")
    if end is not None and end <= start:
        raise TaskError(f"end ({end:g} s) must be after start ({start:g} s)")
    with open_media(job.inputs["url"], need="audio") as container:
        stream = select_audio(container)
        total = stream_duration(container, stream)
        if total > 0 and start >= total:
            raise TaskError(f"start ({start:g} s) is past the end of the audio ({total:.2f} s)")
        # Without `end`, decode to the end of the stream: a duration estimated from the bitrate
        # (ADTS, some MP3s) may be short or long, and the columns follow the samples found.
        stop = end if end is not None else math.inf
        span = (min(stop, total) - start) if total > 0 else None
        found = peaks(container, stream, start, stop, width * BLOCKS_PER_COLUMN, job.progress, span)
        if found.reached_end and found.samples:
            check_complete(job.inputs["url"], container, stream, start, found.decoded)
    if found.samples == 0:
        raise TaskError(f"the file has no audio between {start:g} s and the end")
    lows, highs = columns(found.mins, found.maxs, found.block, found.samples, width)
    image = draw(lows, highs, height, vmargin, hex_rgb(p["fill"]), hex_rgb(p["background"]))
    pil_format, extension, mime = FORMATS[p["format"]]
    name = f"waveform.{extension}"
    image.save(job.workdir / name, format=pil_format, quality=90)
    return {
        "duration": round(total if total > 0 else found.samples / found.rate, 2),
        "width": width,
        "height": height,
        "content_type": mime,
        "output": name,
    }


KIND = Kind(
    name="audio.waveform",
    help="Create a waveform image from an audio file.",
    params=(
        Param("url", URL, "URL of the audio file to be scanned.", required=True),
        Param(
            "width", INTEGER, "Width of the image, in pixels.", default=1024, min=1, max=MAX_WIDTH
        ),
        Param(
            "height", INTEGER, "Height of the image, in pixels.", default=60, min=1, max=MAX_HEIGHT
        ),
        Param("vmargin", INTEGER, "Vertical margin, in pixels.", default=0, min=0),
        Param("fill", COLOR, "Color of the wave-form.", default="#000000"),
        Param("background", COLOR, "Color of the background.", default="#FFFFFF"),
        Param("start", FLOAT, "Seconds to start from.", default=0.0, min=0),
        Param("end", FLOAT, "Generate waveform up to this point, in seconds.", min=0),
        Param("format", STRING, "Output image format.", default="jpeg", choices=tuple(FORMATS)),
    ),
    outputs=(
        Output("duration", "float", "Duration of the audio file in seconds."),
        Output("width", "integer", "Width of the image, in pixels."),
        Output("height", "integer", "Height of the image, in pixels."),
        Output("content_type", "string", "Mime-type of the image."),
    ),
    output_files=(Output("output", "file", "URL of the output file."),),
    run=run,
    time_limit=300.0,
)
