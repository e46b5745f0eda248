"""Opening untrusted audio and video with PyAV, shared by the media kinds.

Every FFmpeg failure becomes a `TaskError` whose message a person understands, and inputs over
the decompression-bomb limits (duration, frame size) are refused before any decoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import av.container

from tasks.declare import TaskError

MAX_DURATION = 4 * 3600.0  # seconds
MAX_FRAME_PIXELS = 8192 * 8192

# MIME types of the containers FFmpeg reports (its format names, comma-separated aliases).
CONTENT_TYPES = {
    "mov": "video/quicktime",
    "mp4": "video/mp4",
    "m4a": "audio/mp4",
    "3gp": "video/3gpp",
    "matroska": "video/x-matroska",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
    "mpeg": "video/mpeg",
    "mpegts": "video/mp2t",
    "flv": "video/x-flv",
    "asf": "video/x-ms-asf",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "aac": "audio/aac",
    "gif": "image/gif",
}


def content_type(container: av.container.InputContainer) -> str:
    """The MIME type of an opened input, from its container format."""
    names = container.format.name.split(",")
    if "mp4" in names and container.streams.video:
        return "video/mp4"
    for name in names:
        if name in CONTENT_TYPES:
            return CONTENT_TYPES[name]
    return "application/octet-stream"


def duration(container: av.container.InputContainer) -> float:
    """Seconds, from the container or else its longest stream; 0.0 when unknown."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    best = 0.0
    for stream in container.streams:
        if stream.duration is not None and stream.time_base is not None:
            best = max(best, float(stream.duration * stream.time_base))
    return best


@contextmanager
def open_media(path: str | Path, need: str | None = None) -> Iterator[av.container.InputContainer]:
    """Opens a media file for reading. `need` ("video" or "audio") requires such a stream."""
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        raise TaskError(describe(e)) from None
    try:
        if need == "video" and not container.streams.video:
            raise TaskError("the file has no video stream")
        if need == "audio" and not container.streams.audio:
            raise TaskError("the file has no audio stream")
        if duration(container) > MAX_DURATION:
            raise TaskError(f"the media is longer than the {MAX_DURATION / 3600:g} hour limit")
        for stream in container.streams.video:
            ctx = stream.codec_context
            if ctx.width * ctx.height > MAX_FRAME_PIXELS:
                raise TaskError(
                    f"the video frames are too large to decode safely "
                    f"({ctx.width}x{ctx.height}, limit {MAX_FRAME_PIXELS} pixels)"
                )
        yield container
    except av.FFmpegError as e:
        raise TaskError(describe(e)) from None
    finally:
        container.close()


def describe(error: av.FFmpegError) -> str:
    """A person's sentence for an FFmpeg error."""
    if isinstance(error, av.InvalidDataError):
        return "the file is not a media file we can read, or it is corrupt or truncated"
    text = getattr(error, "strerror", None) or str(error)
    return f"the media could not be processed: {text}"
