"""`video.reverse`: the video played backwards, at the requested size, as H.264 in MP4.

Memory stays bounded whatever the input's length: a first pass reads packets only (no decoding)
to find the keyframes; then each GOP, from the last to the first, is decoded from its keyframe,
turned upright and scaled (so only output-sized frames are kept), held in memory up to a budget
or spilled to a temporary file beyond it, and encoded in reverse order.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import av.container
import numpy as np

from tasks.declare import INTEGER, Job, Kind, Output, Param, TaskError
from tasks.geometry import Geometry, plan
from tasks.media import (
    Background,
    DecodeGuard,
    FrameShaper,
    frame_rate,
    rotation_of,
    upright_size,
    video_stream,
)
from tasks.video_convert import (
    RATE_CONTROL_PARAMS,
    SHAPE_PARAMS,
    VIDEO_CODEC_PARAM,
    Timestamps,
    add_h264,
    encode,
    open_output,
    result,
)

CHUNK_MEMORY = 48 * 1024 * 1024  # bytes of output-sized frames kept in memory per GOP
MAX_PACKETS = 10_000_000


class ChunkBuffer:
    """The output-sized frames of one GOP in decoding order, read back last first. Frames stay
    in memory up to `budget` bytes; past it, every frame of the chunk goes to a temporary file
    of raw YUV 4:2:0 pictures."""

    def __init__(self, size: tuple[int, int], folder: Path, budget: int = CHUNK_MEMORY) -> None:
        self.size = size
        self.frame_bytes = size[0] * size[1] * 3 // 2
        self.folder = folder
        self.budget = budget
        self.frames: list[tuple[int, av.VideoFrame]] = []
        self.spilled: list[int] = []  # pts of the frames in the file, in file order
        self.file: IO[bytes] | None = None

    def __len__(self) -> int:
        return len(self.frames) + len(self.spilled)

    def append(self, pts: int, frame: av.VideoFrame) -> None:
        self.frames.append((pts, frame))
        if self.file is not None or len(self.frames) * self.frame_bytes > self.budget:
            self._spill()

    def _spill(self) -> None:
        if self.file is None:
            self.file = tempfile.TemporaryFile(dir=self.folder)  # noqa: SIM115 - closed in clear
        for pts, frame in self.frames:
            self.file.write(frame.to_ndarray(format="yuv420p").tobytes())
            self.spilled.append(pts)
        self.frames = []

    def reversed(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """(pts, frame) pairs, last first."""
        yield from reversed(self.frames)
        w, h = self.size
        for i in range(len(self.spilled) - 1, -1, -1):
            self.file.seek(i * self.frame_bytes)  # type: ignore[union-attr]
            data = self.file.read(self.frame_bytes)  # type: ignore[union-attr]
            picture = np.frombuffer(data, dtype=np.uint8).reshape(h * 3 // 2, w)
            yield self.spilled[i], av.VideoFrame.from_ndarray(picture, format="yuv420p")

    def clear(self) -> None:
        self.frames = []
        self.spilled = []
        if self.file is not None:
            self.file.close()
            self.file = None


def keyframes(
    container: av.container.InputContainer, stream: av.VideoStream
) -> tuple[list[int], int]:
    """The keyframe timestamps and the last frame's, from reading packets (no decoding)."""
    keys: set[int] = set()
    first = last = None
    count = 0
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        count += 1
        if count > MAX_PACKETS:
            raise TaskError("the video has too many frames")
        if packet.is_keyframe:
            keys.add(packet.pts)
        first = packet.pts if first is None else min(first, packet.pts)
        last = packet.pts if last is None else max(last, packet.pts)
    if first is None or last is None:
        raise TaskError("no video frame could be read from the file")
    if not keys:  # no keyframe flags: one chunk from the first picture
        keys.add(first)
    return sorted(keys), last


@dataclass
class _Start:
    geometry: Geometry


class _Reverse:
    """One reversal. A background thread decodes GOPs, last first, into chunk buffers
    (`chunks`); this thread encodes each in reverse while the next is decoded (`run`). At
    most three chunks exist at once: being encoded, waiting, being decoded."""

    def __init__(self, job: Job, container: av.container.InputContainer) -> None:
        self.job = job
        self.input = container
        self.vin = video_stream(container)
        self.tb = self.vin.time_base or Fraction(1, 90000)
        self.guard = DecodeGuard(container, self.vin)
        self.path = job.workdir / "output.mp4"
        self.output: av.container.OutputContainer | None = None
        self.shaper: FrameShaper | None = None
        self.size: tuple[int, int] | None = None
        self.written = 0

    def chunks(self, keys: list[int]) -> Iterator[_Start | ChunkBuffer]:
        """A `_Start` once the first frame is decoded, then each GOP's frames, last GOP first."""
        bounds = [*keys[1:], None]
        for i in range(len(keys) - 1, -1, -1):
            chunk: ChunkBuffer | None = None
            for frame in self.decode_chunk(keys[i], bounds[i]):
                if self.shaper is None:
                    p = self.job.params
                    rotation = rotation_of(frame)
                    upright = upright_size(frame.width, frame.height, rotation)
                    geometry = plan(upright, p.get("width"), p.get("height"), p["crop"], even=True)
                    self.shaper = FrameShaper(frame, rotation, geometry, "yuv420p")
                    yield _Start(geometry)
                if chunk is None:
                    chunk = ChunkBuffer(self.shaper.size, self.job.workdir)
                chunk.append(frame.pts, self.shaper(frame))
            if chunk is not None:
                yield chunk

    def decode_chunk(self, begin: int, end: int | None) -> Iterator[av.VideoFrame]:
        """The frames with begin <= pts < end: seeks to the keyframe at `begin`, and further
        back if the demuxer lands after it."""
        second = max(1, round(1 / self.tb))
        floor = self.vin.start_time or 0
        back = 0
        while True:
            retry = back < 64 * second
            self.input.seek(max(begin - back, floor), stream=self.vin, backward=True)
            self.vin.codec_context.flush_buffers()
            frames = self._decode_from(begin, end)
            first = next(frames, None)
            if first is None:
                return
            if first.pts > begin and retry:
                frames.close()
                back = back * 2 if back else second
                continue
            for frame in itertools.chain([first], frames):
                if begin <= frame.pts and (end is None or frame.pts < end):
                    yield frame
            return

    def _decode_from(self, begin: int, end: int | None) -> Iterator[av.VideoFrame]:
        """Frames decoded from where the demuxer stands, until the GOP starting at `end`:
        after its keyframe (sent only for the open-GOP frames that may follow it and show
        before it), the decoder is drained."""
        ctx = self.vin.codec_context
        next_key_sent = False
        for packet in self.input.demux(self.vin):
            if end is not None and packet.pts is not None and packet.pts >= end:
                if next_key_sent:
                    break
                next_key_sent = packet.is_keyframe
            frames = self.vin.decode(packet) if packet.size else []
            self.guard.count(len(frames))
            yield from (f for f in frames if f.pts is not None)
        frames = self.vin.decode(None)
        ctx.flush_buffers()
        yield from (f for f in frames if f.pts is not None)

    def start(self, start: _Start) -> None:
        p = self.job.params
        rate = frame_rate(self.vin)
        max_kbps = p.get("video_bitrate")
        if max_kbps is None:
            source = self.vin.bit_rate or self.input.bit_rate
            max_kbps = round(source / 1000) if source else None
        self.output = open_output(self.path, "mp4")
        self.vout = add_h264(
            self.output, start.geometry.size, rate, self.tb, p["crf"], p["gop"], max_kbps
        )
        try:
            self.vout.codec_context.open()
        except av.FFmpegError as e:
            raise TaskError(
                f"the H.264 encoder refused these settings ({e.strerror or e})"
            ) from None
        self.stamps = Timestamps(0, round(1 / (rate or 25) / self.tb))

    def emit_chunk(self, chunk: ChunkBuffer, last: int) -> None:
        try:
            for pts, frame in chunk.reversed():
                frame.pts = self.stamps(last - pts)
                frame.time_base = self.tb
                frame.pict_type = av.video.frame.PictureType.NONE
                self.output.mux(self.vout.encode(frame))  # type: ignore[union-attr]
                self.written += 1
        finally:
            chunk.clear()

    def run(self) -> None:
        keys, last = keyframes(self.input, self.vin)
        items = Background(self.chunks(keys), depth=1)
        done = 0
        try:
            for item in items:
                if isinstance(item, _Start):
                    self.start(item)
                    continue
                self.emit_chunk(item, last)
                done += 1
                self.job.progress(100.0 * done / len(keys))
        finally:
            items.close()
        if self.output is None or not self.written:
            raise TaskError("no video frame could be decoded from the file")
        self.output.mux(self.vout.encode(None))
        self.job.progress(100.0)

    def close(self) -> None:
        if self.output is not None:
            self.output.close()


def run(job: Job) -> dict[str, Any]:
    reverse, original = encode(job, _Reverse)
    return result(reverse.path, original, None)


KIND = Kind(
    name="video.reverse",
    help="Create a reversed video file with custom dimensions, and return its video.info output "
    "values. The video is H.264 in MP4, turned upright, without sound.",
    params=(
        *SHAPE_PARAMS,
        VIDEO_CODEC_PARAM,
        Param(
            "video_bitrate",
            INTEGER,
            "Desired video bitrate, in kbps (the cap on the `crf` quality). Use source bitrate "
            "if left empty.",
            min=50,
            max=200000,
        ),
        *RATE_CONTROL_PARAMS,
    ),
    outputs=(
        Output("duration", "float", "Duration of the video file, in seconds."),
        Output("content_type", "string", "Mime-type of the output file."),
        Output("width", "integer", "Output width, in pixels."),
        Output("height", "integer", "Output height, in pixels."),
        Output("original_width", "integer", "Width of the input video, in pixels."),
        Output("original_height", "integer", "Height of the input video, in pixels."),
        Output("frame_rate", "float", "Output frame rate, in frames per second."),
        Output("alpha", "boolean", "Always false."),
        Output("rotation", "float", "Always 0: the output is upright."),
        Output("audio_codec", "string", "Always null: the reversed video has no sound."),
        Output("video_codec", "string", "Output video codec (`h264`)."),
    ),
    output_files=(Output("output", "file", "URL of the converted file."),),
    run=run,
    time_limit=3600.0,
)
