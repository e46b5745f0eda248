"""`video.info`: a video file's container type, picture size, duration, frame rate, alpha,
rotation and codecs."""

from __future__ import annotations

from typing import Any

from tasks.declare import URL, Job, Kind, Output, Param
from tasks.media import first_frame, open_media, rotation_of, video_stream, video_values


def run(job: Job) -> dict[str, Any]:
    with open_media(job.inputs["url"], need="video") as container:
        # The rotation lives in the display matrix FFmpeg attaches to decoded frames, so one
        # frame is decoded (which also proves the file decodes), without frame threading,
        # which would decode several to fill its pipeline first.
        stream = video_stream(container, threads=False)
        first = first_frame(container, stream)
        return video_values(container, stream, rotation_of(first))


INFO_OUTPUTS = (
    Output("content_type", "string", "Mime-type of the video file."),
    Output("width", "integer", "Video width, in pixels (as stored, before any rotation)."),
    Output("height", "integer", "Video height, in pixels (as stored, before any rotation)."),
    Output("duration", "float", "Video duration, in seconds."),
    Output("frame_rate", "float", "Video frame rate, in frames per second."),
    Output("alpha", "boolean", "Whether the video has an alpha channel."),
    Output(
        "rotation",
        "float",
        "The counter-clockwise rotation, in degrees (0, 90, 180 or 270), that should be "
        "applied to the video to see it as it was shot.",
    ),
    Output("audio_codec", "string", "Audio codec name (null without an audio stream)."),
    Output("video_codec", "string", "Video codec name."),
)

KIND = Kind(
    name="video.info",
    help="Return video file information.",
    params=(Param("url", URL, "URL of the video file to be scanned.", required=True),),
    outputs=INFO_OUTPUTS,
    run=run,
    time_limit=60.0,
)
