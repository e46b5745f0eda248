"""`audio.info`: an audio file's duration, content type and codec, read from its headers."""

from __future__ import annotations

import math
from typing import Any

from tasks.audio import (
    check_complete,
    codec_name,
    content_type,
    peaks,
    select_audio,
    stream_duration,
)
from tasks.declare import URL, Job, Kind, Output, Param, TaskError
from tasks.media import open_media


def run(job: Job) -> dict[str, Any]:
    with open_media(job.inputs["url"], need="audio") as container:
        stream = select_audio(container)
        seconds = stream_duration(container, stream)
        if seconds <= 0:
            # Neither the container nor the stream tells (a raw stream without an index): count
            # the samples instead.
            found = peaks(container, stream, 0.0, math.inf, 1)
            seconds = found.samples / found.rate if found.rate else 0.0
            if seconds <= 0:
                raise TaskError("the file holds no audio we can decode")
        result = {
            "duration": round(seconds, 2),
            "content_type": content_type(container),
            "codec": codec_name(stream),
        }
        check_complete(job.inputs["url"], container, stream)
        return result


KIND = Kind(
    name="audio.info",
    help="Return duration and codec of an audio file.",
    params=(Param("url", URL, "URL of the audio file to be scanned.", required=True),),
    outputs=(
        Output(
            "duration", "float", "Duration of the audio file in seconds, rounded to 1/100th second."
        ),
        Output("content_type", "string", "Content-type of the audio file."),
        Output("codec", "string", "Codec of the audio file (FFmpeg's name: mp3, aac, vorbis...)."),
    ),
    run=run,
    time_limit=60.0,
)
