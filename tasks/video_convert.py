"""`video.convert`: the video transcoded to H.264 at the requested size, with its audio in the
requested codec, in MP4 (or ASF for the WMA codecs), and its video.info values.

Decoded frames stream straight into the encoder: FrameShaper turns, scales and crops them in
FFmpeg (no Pillow or numpy copies), the codecs' own threading is on, and nothing but the
encoders' look-ahead is held in memory, whatever the input's length. The keyframe interval
follows `gop`: the decoder's picture types are cleared so the source's keyframes do not leak
into the output.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container

from tasks.declare import BOOLEAN, INTEGER, STRING, URL, Job, Kind, Output, Param, TaskError
from tasks.geometry import Geometry, plan
from tasks.media import (
    Background,
    DecodeGuard,
    FrameShaper,
    audio_stream,
    duration,
    frame_rate,
    open_media,
    rotation_of,
    upright_size,
    video_stream,
    video_values,
)

MAX_SIDE = 7680
# Encoder, container format and file extension per `audio_codec`. The WMA codecs need ASF;
# FFmpeg's MP4 muxer takes MP2 (MPEG-1 Layer II) as well as MP3 and AAC.
AUDIO_CODECS = {
    "mp2": ("mp2", "mp4", "mp4"),
    "mp3": ("libmp3lame", "mp4", "mp4"),
    "aac": ("aac", "mp4", "mp4"),
    "wmav1": ("wmav1", "asf", "wmv"),
    "wmav2": ("wmav2", "asf", "wmv"),
}
CONTAINER_OPTIONS = {"mp4": {"movflags": "+faststart"}, "asf": {}}
PROGRESS_FRAMES = 10  # report progress every this many video frames
RC_LOOKAHEAD = 15  # frames; see add_h264


def open_output(path: Path, fmt: str) -> av.container.OutputContainer:
    """An output file; MP4 gets its index at the front so players can start before the end."""
    return av.open(str(path), "w", format=fmt, options=CONTAINER_OPTIONS.get(fmt, {}))


def add_h264(
    output: av.container.OutputContainer,
    size: tuple[int, int],
    rate: float,
    time_base: Fraction,
    crf: int,
    gop: int,
    max_kbps: int | None,
) -> av.VideoStream:
    """An H.264 stream: quality from `crf`, capped at `max_kbps` (x264's VBV, `maxrate` with a
    two-second buffer) when given, a keyframe at least every `gop` frames. Otherwise x264's
    `medium` preset, but for a 15-frame rate-control look-ahead (between the `veryfast` and
    `faster` presets') instead of 40: x264 holds each look-ahead frame in memory at full size,
    and this keeps a 1080p conversion's worker under 400 MB for a small loss of compression."""
    options = {"crf": str(crf), "rc-lookahead": str(RC_LOOKAHEAD)}
    if max_kbps:
        options |= {"maxrate": f"{max_kbps}k", "bufsize": f"{2 * max_kbps}k"}
    stream = output.add_stream(
        "libx264", rate=Fraction(rate or 25).limit_denominator(1001000), options=options
    )
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    ctx = stream.codec_context
    ctx.time_base = time_base
    ctx.gop_size = gop
    ctx.thread_type = "AUTO"
    return stream


class Timestamps:
    """Output timestamps for one stream: shifted so the file starts at zero, strictly
    increasing (encoders refuse anything else), invented from the frame rate when missing."""

    def __init__(self, origin: int, step: int) -> None:
        self.origin = origin
        self.step = max(step, 1)
        self.last: int | None = None

    def __call__(self, pts: int | None) -> int:
        if pts is None:
            out = 0 if self.last is None else self.last + self.step
        else:
            out = pts - self.origin
            if self.last is not None and out <= self.last:
                out = self.last + 1
        self.last = out
        return out


@dataclass
class _Start:
    """What the first video frame tells: how to shape the frames, and the input's values."""

    geometry: Geometry
    values: dict[str, Any]


class _Transcode:
    """One conversion. A background thread demuxes, decodes, turns and scales (`decoded`);
    this thread encodes and muxes (`run`). The output is opened when the first video frame
    tells the rotation, hence the output size."""

    def __init__(self, job: Job, container: av.container.InputContainer) -> None:
        p = job.params
        self.job = job
        self.input = container
        self.vin = video_stream(container)
        self.ain = audio_stream(container)
        if self.ain is not None:
            self.ain.codec_context.thread_type = "AUTO"
        self.total = duration(container)
        self.guard = DecodeGuard(container, self.vin)
        origin = container.start_time / av.time_base if container.start_time else 0.0
        self.origin = max(origin, 0.0)
        self.encoder, fmt, ext = AUDIO_CODECS[p["audio_codec"]]
        self.path = job.workdir / f"output.{ext}"
        self.format = fmt
        self.output: av.container.OutputContainer | None = None
        self.vout: av.VideoStream | None = None
        self.aout: av.AudioStream | None = None
        self.waiting_audio: list[av.AudioFrame] = []  # decoded before the first video frame
        self.next_sample: int | None = None
        self.frames = 0

    def decoded(self) -> Iterator[tuple[str, Any, float]]:
        """(what, item, input seconds) in decoding order: a `_Start` before the first video
        frame, then video frames ready for the encoder and audio frames as decoded."""
        p = self.job.params
        tb = self.vin.time_base or Fraction(1, 90000)
        shaper = stamps = None
        streams = [s for s in (self.vin, self.ain) if s is not None]
        for packet in self.input.demux(*streams):
            if packet.stream is not self.vin:
                for frame in packet.decode():
                    yield "audio", frame, 0.0
                continue
            frames = packet.decode()
            self.guard.count(len(frames))
            for frame in frames:
                if shaper is None:
                    rotation = rotation_of(frame)
                    upright = upright_size(frame.width, frame.height, rotation)
                    geometry = plan(upright, p.get("width"), p.get("height"), p["crop"], even=True)
                    shaper = FrameShaper(frame, rotation, geometry, "yuv420p")
                    rate = frame_rate(self.vin)
                    stamps = Timestamps(round(self.origin / tb), round(1 / (rate or 25) / tb))
                    yield (
                        "start",
                        _Start(geometry, video_values(self.input, self.vin, rotation)),
                        0.0,
                    )
                out = shaper(frame)
                out.pts = stamps(frame.pts)  # type: ignore[misc]
                out.time_base = tb
                out.pict_type = av.video.frame.PictureType.NONE  # gop decides the keyframes
                seconds = float(frame.pts * tb) - self.origin if frame.pts is not None else 0.0
                yield "video", out, seconds

    def start(self, start: _Start) -> None:
        p = self.job.params
        size = start.geometry.size
        self.output = open_output(self.path, self.format)
        self.vout = add_h264(
            self.output,
            size,
            start.values["frame_rate"],
            self.vin.time_base or Fraction(1, 90000),
            p["crf"],
            p["gop"],
            p["video_bitrate"],
        )
        if self.ain is not None:
            self.aout = self.output.add_stream(self.encoder, rate=p["sample_rate"])
            self.aout.layout = "mono" if self.ain.codec_context.channels == 1 else "stereo"
            self.aout.bit_rate = p["audio_bitrate"] * 1000
            try:
                self.aout.codec_context.open()
            except av.FFmpegError as e:
                raise TaskError(
                    f"the {p['audio_codec']} encoder refused {p['audio_bitrate']} kbps at "
                    f"{p['sample_rate']} Hz ({e.strerror or e})"
                ) from None
        try:
            self.vout.codec_context.open()
        except av.FFmpegError as e:
            raise TaskError(
                f"the H.264 encoder refused these settings ({e.strerror or e})"
            ) from None
        values = start.values
        self.job.progress(
            0.0,
            partial={
                "duration": values["duration"],
                "frame_rate": values["frame_rate"],
                "original_width": values["width"],
                "original_height": values["height"],
                "width": size[0],
                "height": size[1],
                "video_codec": "h264",
                "audio_codec": p["audio_codec"] if self.ain is not None else None,
                "alpha": False,
                "rotation": 0.0,
            },
        )
        for frame in self.waiting_audio:
            self.audio(frame)
        self.waiting_audio = []

    def video(self, frame: av.VideoFrame, seconds: float) -> None:
        self.output.mux(self.vout.encode(frame))  # type: ignore[union-attr]
        self.frames += 1
        if self.frames % PROGRESS_FRAMES == 0 and self.total:
            self.job.progress(max(0.0, min(99.0, 100.0 * seconds / self.total)))

    def audio(self, frame: av.AudioFrame) -> None:
        if self.output is None:
            self.waiting_audio.append(frame)
            if len(self.waiting_audio) > 20000:
                raise TaskError("no video frame could be decoded from the file")
            return
        # Audio timestamps are counted in samples at the input rate (the encoder resamples and
        # re-frames them): from the frame's time, never overlapping the previous frame.
        rate = frame.sample_rate
        if frame.pts is not None and frame.time_base is not None:
            pts = round((float(frame.pts * frame.time_base) - self.origin) * rate)
        else:
            pts = self.next_sample or 0
        if self.next_sample is not None and pts < self.next_sample:
            pts = self.next_sample
        frame.pts, frame.time_base = pts, Fraction(1, rate)
        self.next_sample = pts + frame.samples
        self.output.mux(self.aout.encode(frame))  # type: ignore[union-attr]

    def run(self) -> None:
        items = Background(self.decoded(), depth=4)
        try:
            for what, item, seconds in items:
                if what == "video":
                    self.video(item, seconds)
                elif what == "audio":
                    self.audio(item)
                else:
                    self.start(item)
        finally:
            items.close()
        if self.output is None:
            raise TaskError("no video frame could be decoded from the file")
        self.output.mux(self.vout.encode(None))  # type: ignore[union-attr]
        if self.aout is not None:
            self.output.mux(self.aout.encode(None))

    def close(self) -> None:
        if self.output is not None:
            self.output.close()


def result(path: Path, original: tuple[int, int], audio_codec: str | None) -> dict[str, Any]:
    """The video.info values of a written file plus the input's size."""
    with open_media(path, need="video") as written:
        values = video_values(written, written.streams.video[0], 0.0)
    values["audio_codec"] = audio_codec  # MP4 files name MP2 audio "mp3"; say what was written
    values["original_width"], values["original_height"] = original
    values["output"] = path.name
    return values


def encode(job: Job, writer_class: Any) -> tuple[Any, tuple[int, int]]:
    """Opens the input video, runs a writer over it (its output is closed whatever happens),
    and returns the writer with the source's size. video.reverse writes through it too."""
    with open_media(job.inputs["url"], need="video") as container:
        writer = writer_class(job, container)
        try:
            writer.run()
        finally:
            writer.close()
        return writer, (writer.vin.codec_context.width, writer.vin.codec_context.height)


def run(job: Job) -> dict[str, Any]:
    transcode, original = encode(job, _Transcode)
    job.progress(100.0)
    audio_codec = job.params["audio_codec"] if transcode.aout is not None else None
    return result(transcode.path, original, audio_codec)


# Parameters video.convert shares with video.reverse, declared once.
SHAPE_PARAMS = (
    Param("url", URL, "URL of the source video", required=True),
    Param(
        "width",
        INTEGER,
        "Output width, in pixels (rounded down to even). With only `height`, it follows the "
        "aspect ratio; with neither, the source's size.",
        min=2,
        max=MAX_SIDE,
    ),
    Param(
        "height",
        INTEGER,
        "Output height, in pixels (rounded down to even).",
        min=2,
        max=MAX_SIDE,
    ),
    Param("crop", BOOLEAN, "Allows croping the video to fit in the output size", default=False),
)
VIDEO_CODEC_PARAM = Param(
    "video_codec", STRING, "Desired video codec.", default="h264", choices=("h264",)
)
RATE_CONTROL_PARAMS = (
    Param(
        "crf",
        INTEGER,
        "Output constant rate factor (video): lower is better quality.",
        default=23,
        min=0,
        max=51,
    ),
    Param(
        "gop",
        INTEGER,
        "Output group of picture (GOP) size: the largest number of frames between keyframes.",
        default=250,
        min=1,
        max=1000,
    ),
)


KIND = Kind(
    name="video.convert",
    help="Create transcoded video file with custom dimensions, and return its video.info output "
    "values. The video is H.264, turned upright, in MP4 (ASF `.wmv` for the WMA audio codecs).",
    params=(
        *SHAPE_PARAMS,
        Param(
            "audio_codec",
            STRING,
            "Desired audio codec.",
            default="aac",
            choices=tuple(AUDIO_CODECS),
        ),
        VIDEO_CODEC_PARAM,
        Param(
            "video_bitrate",
            INTEGER,
            "Desired video bitrate, in kbps: the cap on the `crf` quality.",
            default=3000,
            min=50,
            max=200000,
        ),
        Param(
            "audio_bitrate",
            INTEGER,
            "Desired audio bitrate, in kbps.",
            default=128,
            min=8,
            max=320,
        ),
        Param(
            "sample_rate",
            INTEGER,
            "Desired audio sample rate, in Hz.",
            default=44100,
            choices=(22050, 44100, 48000),
        ),
        *RATE_CONTROL_PARAMS,
    ),
    outputs=(
        Output("content_type", "string", "Output file content type."),
        Output("width", "integer", "Output width, in pixels (upright)."),
        Output("height", "integer", "Output height, in pixels (upright)."),
        Output("original_width", "integer", "Width of the input video, in pixels (as stored)."),
        Output("original_height", "integer", "Height of the input video, in pixels (as stored)."),
        Output("duration", "float", "Duration of the video file, in seconds."),
        Output("frame_rate", "float", "Output frame rate, in frames per second."),
        Output("audio_codec", "string", "Output audio codec (null when the input has no sound)."),
        Output("video_codec", "string", "Output video codec (`h264`)."),
        Output("alpha", "boolean", "Whether the output has an alpha channel (never for H.264)."),
        Output(
            "rotation",
            "float",
            "The counter clockwise rotation that should be applied to the video to see it as it "
            "was shot, in degrees: 0, as the output is already turned upright.",
        ),
    ),
    output_files=(Output("output", "file", "URL of the converted file."),),
    run=run,
    time_limit=3600.0,
)
