"""`video.strip`: `count` frames taken at equal intervals between `start` and `end`, fitted or
cropped into cells, stitched in rows of `wrap` cells into one image.

The frames are read with `FrameReader`: it seeks when the next wanted frame lies past the next
keyframe and decodes forward otherwise, so no frame is decoded twice and a strip of a short span
never decodes the whole file. The runs between seeks are decoded side by side in threads.
"""

from __future__ import annotations

import math
import os
from typing import Any

import av
from PIL import Image

from tasks.declare import BOOLEAN, FLOAT, INTEGER, STRING, URL, Job, Kind, Output, Param, TaskError
from tasks.geometry import plan
from tasks.media import (
    FrameReader,
    duration,
    frame_image,
    frame_rate,
    open_media,
    read_in_parallel,
    rotation_of,
    upright_size,
    video_stream,
)

MAX_SIDE = 8192
MAX_COUNT = 1000
MAX_PIXELS = 100_000_000  # of the whole strip
MAX_THREADS = 4  # decoding threads, each reading its own runs of frames
FORMATS = {"jpeg": ("JPEG", "image/jpeg", "jpg"), "png": ("PNG", "image/png", "png")}


def wanted_times(start: float, end: float, count: int) -> list[float]:
    """`count` times at equal intervals from `start` to `end`, both included."""
    if count == 1:
        return [start]
    step = (end - start) / (count - 1)
    return [start + i * step for i in range(count)]


def run(job: Job) -> dict[str, Any]:
    p = job.params
    path = job.inputs["url"]
    with open_media(path, need="video") as container:
        stream = video_stream(container)
        total = duration(container)
        start = p["start"]
        end = p.get("end")
        if end is None or (total and end > total):
            end = total
        if total and start >= total:
            raise TaskError(f"start {start:g} s is past the end of the video ({total:.3f} s)")
        if end < start:
            raise TaskError(f"end ({end:g} s) is before start ({start:g} s)")
        times = wanted_times(start, end, p["count"])
        runs = FrameReader(container, stream).segments(times)
        original = (stream.codec_context.width, stream.codec_context.height)
        rate = frame_rate(stream)
    _check_size(original, p)

    def cell(frame: av.VideoFrame) -> Image.Image:
        rotation = rotation_of(frame)
        upright = upright_size(frame.width, frame.height, rotation)
        return frame_image(
            frame, rotation, plan(upright, p.get("width"), p.get("height"), p["crop"])
        )

    frames = read_in_parallel(
        path,
        times,
        runs,
        cell,
        workers=min(os.cpu_count() or 1, MAX_THREADS),
        progress=lambda done: job.progress(100.0 * done / len(times)),
    )
    # Fewer distinct frames than wanted times (a short span): each frame is shown once.
    cells = [image for i, (t, image) in enumerate(frames) if i == 0 or t != frames[i - 1][0]]
    cw, ch = cells[0].size
    wrap = min(p.get("wrap") or len(cells), len(cells))
    rows = math.ceil(len(cells) / wrap)
    strip = Image.new("RGB", (cw * wrap, ch * rows))
    for i, image in enumerate(cells):
        strip.paste(image, ((i % wrap) * cw, (i // wrap) * ch))
    fmt, mime, ext = FORMATS[p["format"]]
    name = f"strip.{ext}"
    strip.save(job.workdir / name, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return {
        "count": len(cells),
        "width": strip.width,
        "height": strip.height,
        "original_width": original[0],
        "original_height": original[1],
        "duration": round(total, 6),
        "frame_rate": round(rate, 6),
        "content_type": mime,
        "output": name,
    }


def _check_size(original: tuple[int, int], p: dict[str, Any]) -> None:
    """Refuses, before decoding anything, a strip over the pixel limit (with the cells of
    either orientation, as the rotation is not known yet)."""
    count = p["count"]
    wrap = min(p.get("wrap") or count, count)
    rows = math.ceil(count / wrap)
    for size in (original, original[::-1]):
        cw, ch = plan(size, p.get("width"), p.get("height"), p["crop"]).size
        if cw * wrap * ch * rows > MAX_PIXELS:
            raise TaskError(
                f"the strip would be larger than {MAX_PIXELS} pixels; ask for smaller cells or "
                "fewer frames"
            )


KIND = Kind(
    name="video.strip",
    help="Create a film strip image of custom dimensions showing stitched frames of a video, "
    "return video.info output values for original video.",
    params=(
        Param("url", URL, "URL of the source video.", required=True),
        Param(
            "width",
            INTEGER,
            "Pixel width of each frame stitched into film strip (with only `height`, it follows "
            "the aspect ratio; with neither, the video's own size).",
            min=1,
            max=MAX_SIDE,
        ),
        Param(
            "height",
            INTEGER,
            "Pixel height of each frame stitched into film strip.",
            min=1,
            max=MAX_SIDE,
        ),
        Param(
            "crop",
            BOOLEAN,
            "If false, video frames fit each strip section. If true, video frames fill each "
            "strip section, aligning centers.",
            default=False,
        ),
        Param(
            "wrap",
            INTEGER,
            "Number of video frames that can be stitched horizontally before stitching starts "
            "onto a new line. Use it to create a two dimensional film strip, with "
            "count = int * wrap. If left unspecified, all frames are stitched on a single line.",
            min=1,
            max=MAX_COUNT,
        ),
        Param(
            "start",
            FLOAT,
            "Time of first frame extracted from video - by default first frame of video.",
            default=0.0,
            min=0,
        ),
        Param(
            "end",
            FLOAT,
            "Time of last frame extracted from video - by default last frame of video.",
            min=0,
        ),
        Param(
            "count",
            INTEGER,
            "Number of frames extracted from video, at equal time intervals between start and "
            "end times.",
            default=10,
            min=1,
            max=MAX_COUNT,
        ),
        Param(
            "format", STRING, "Output image file format.", default="jpeg", choices=("jpeg", "png")
        ),
    ),
    outputs=(
        Output(
            "count",
            "integer",
            "Actual number of frames in the output (fewer than asked when the span holds fewer "
            "distinct frames).",
        ),
        Output("width", "integer", "Width of the output image in pixels."),
        Output("height", "integer", "Height of the output image in pixels."),
        Output("original_width", "integer", "Width of the input video file, in pixels."),
        Output("original_height", "integer", "Height of the input video file, in pixels."),
        Output("duration", "float", "Duration of the input video file, in seconds."),
        Output("frame_rate", "float", "Frame rate of the input video file, in frames per second."),
        Output("content_type", "string", "Mime-type of the output image."),
    ),
    output_files=(Output("output", "file", "URL of the output image."),),
    run=run,
    time_limit=300.0,
)
