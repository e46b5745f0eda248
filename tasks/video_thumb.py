"""`video.thumb`: the frame shown at `time`, exactly (seek to the keyframe before it, then
decode forward), turned upright, fitted or cropped to the requested size, as JPEG or PNG."""

from __future__ import annotations

from typing import Any

from tasks.declare import BOOLEAN, FLOAT, INTEGER, STRING, URL, Job, Kind, Output, Param, TaskError
from tasks.geometry import draw_play_icon, plan
from tasks.media import (
    FrameReader,
    duration,
    frame_image,
    has_alpha,
    open_media,
    rotation_of,
    upright_size,
    video_stream,
)

MAX_SIDE = 8192
FORMATS = {"jpeg": ("JPEG", "image/jpeg", "jpg"), "png": ("PNG", "image/png", "png")}


def run(job: Job) -> dict[str, Any]:
    p = job.params
    with open_media(job.inputs["url"], need="video") as container:
        stream = video_stream(container)
        total = duration(container)
        if total and p["time"] > total + 1e-3:
            raise TaskError(f"time {p['time']:g} s is past the end of the video ({total:.3f} s)")
        frame = FrameReader(container, stream).at(p["time"])
        rotation = rotation_of(frame)
        geometry = plan(
            upright_size(frame.width, frame.height, rotation),
            p.get("width"),
            p.get("height"),
            p["crop"],
        )
        fmt, mime, ext = FORMATS[p["format"]]
        mode = "RGBA" if fmt == "PNG" and has_alpha(stream) else "RGB"
        image = frame_image(frame, rotation, geometry, mode)
        original = (stream.codec_context.width, stream.codec_context.height)
    if p["poster"]:
        image = draw_play_icon(image)
    name = f"thumb.{ext}"
    if fmt == "JPEG":
        image.save(job.workdir / name, fmt, quality=p["quality"])
    else:
        image.save(job.workdir / name, fmt)
    return {
        "width": image.width,
        "height": image.height,
        "original_width": original[0],
        "original_height": original[1],
        "duration": round(total, 6),
        "content_type": mime,
        "output": name,
    }


KIND = Kind(
    name="video.thumb",
    help="Create a thumbnail image of a video's frame at a given time, and return its size and "
    "the video's.",
    params=(
        Param("url", URL, "URL of the source video.", required=True),
        Param(
            "width",
            INTEGER,
            "Width of output image file, in pixels. The default is to use the original video "
            "width (or to follow `height`, keeping the aspect ratio).",
            min=1,
            max=MAX_SIDE,
        ),
        Param(
            "height",
            INTEGER,
            "Height of output image file, in pixels. The default is to use the original video "
            "height (or to follow `width`, keeping the aspect ratio).",
            min=1,
            max=MAX_SIDE,
        ),
        Param(
            "crop",
            BOOLEAN,
            "If false, video frame fits output image. If true, video frame fills output image "
            "and the overflow is cut around the centre.",
            default=False,
        ),
        Param(
            "time",
            FLOAT,
            "Timestamp of the video frame to extract, in seconds: the frame shown at that time "
            "is taken exactly, not the nearest keyframe.",
            default=0.0,
            min=0,
        ),
        Param(
            "format", STRING, "Output image file format.", default="jpeg", choices=("jpeg", "png")
        ),
        Param("poster", BOOLEAN, "If true, a play icon is added in the center.", default=False),
        Param(
            "quality", INTEGER, "Output quality (JPEG), from 1 to 95.", default=75, min=1, max=95
        ),
    ),
    outputs=(
        Output("width", "integer", "Width of the output image in pixels."),
        Output("height", "integer", "Height of the output image in pixels."),
        Output("original_width", "integer", "Width of the input video file."),
        Output("original_height", "integer", "Height of the input video file."),
        Output("duration", "float", "Duration of the input video file, in seconds."),
        Output("content_type", "string", "Mime-type of the output image."),
    ),
    output_files=(Output("output", "file", "URL of the output image."),),
    run=run,
    time_limit=120.0,
)
