"""Audio helpers shared by the audio kinds: choosing the audio stream, its duration, and decoding
a time span into peak blocks (min/max per run of samples) with numpy.

Times given to these helpers are relative to the start of the file (the container's start
time), so a stream that starts at 1.4 s in an MPEG-TS file is read from its first sample.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import numpy as np

from tasks.declare import TaskError
from tasks.media import content_type as media_content_type
from tasks.media import duration as container_duration

# Samples are gathered into chunks of about this many before numpy reduces them, so the
# per-call overhead of numpy is paid once per chunk, not once per decoded frame.
CHUNK_SAMPLES = 1 << 16

# Full scale of each sample format, to bring integer peaks into [-1, 1].
_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def select_audio(container: av.container.InputContainer) -> av.AudioStream:
    """The first audio stream. Every other stream (video, subtitles, cover art) is discarded
    at the demuxer, so its packets are never read into Python or decoded."""
    if not container.streams.audio:
        raise TaskError("the file has no audio stream")
    stream = container.streams.audio[0]
    if not stream.codec_context.sample_rate or not stream.codec_context.channels:
        # FFmpeg found no frame it could read to learn the stream's parameters.
        raise TaskError("the file is not a media file we can read, or it is corrupt or truncated")
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all
    return stream


def origin(container: av.container.InputContainer) -> float:
    """The container's start time in seconds: time 0 as a person counts it."""
    start = container.start_time
    return start / av.time_base if start is not None and start > 0 else 0.0


def stream_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    """Seconds from the start of the file to the end of its audio stream (a soundtrack that
    starts late ends late), else the container's duration; 0.0 when unknown."""
    tb = stream.time_base
    if stream.duration and tb is not None and stream.duration > 0:
        offset = 0.0
        if stream.start_time is not None:
            offset = max(0.0, float(stream.start_time * tb) - origin(container))
        return offset + float(stream.duration * tb)
    return container_duration(container)


# The MIME types of containers that hold audio alone, where `tasks.media.content_type` (which
# names the container as a video one) would say video/...; and audio-only formats it lacks.
_AUDIO_ONLY_TYPES = {
    "mov": "audio/mp4",
    "mp4": "audio/mp4",
    "m4a": "audio/mp4",
    "matroska": "audio/x-matroska",
    "asf": "audio/x-ms-wma",
    "aiff": "audio/aiff",
    "caf": "audio/x-caf",
    "amr": "audio/amr",
    "ac3": "audio/ac3",
    "w64": "audio/x-w64",
}


def content_type(container: av.container.InputContainer) -> str:
    """The MIME type of an opened input, as an audio type when it holds no video."""
    found = media_content_type(container)
    if container.streams.video or (found != "application/octet-stream" and found[:6] != "video/"):
        return found
    for name in container.format.name.split(","):
        if name in _AUDIO_ONLY_TYPES:
            return _AUDIO_ONLY_TYPES[name]
    return found


def codec_name(stream: av.AudioStream) -> str:
    """The codec's canonical FFmpeg name (`mp3`, `aac`, `vorbis`, `flac`, `pcm_s16le`, ...),
    not the decoder's (`mp3float`)."""
    return stream.codec.canonical_name


@dataclass
class Peaks:
    """Per-block extremes of a decoded span: block `i` holds samples `i*block` to
    `(i+1)*block` (all channels), scaled to [-1, 1]. `samples` counts the span's samples."""

    mins: np.ndarray
    maxs: np.ndarray
    block: int
    samples: int
    rate: int
    reached_end: bool  # whether decoding ran into the end of the stream before `end`


def _planes(frame: av.AudioFrame) -> np.ndarray:
    """The frame's samples as stored: (channels, samples) for a planar format, (1, samples *
    channels) interleaved for a packed one. Either way a block of `b` samples is `b * step`
    consecutive elements of every row, where `step` is 1 (planar) or the channel count."""
    return frame.to_ndarray()


def _step(frame: av.AudioFrame) -> int:
    return 1 if frame.format.is_planar else len(frame.layout.channels)


def _scale(fmt: str) -> tuple[float, float]:
    """(offset, full scale) that bring a sample format's values into [-1, 1]."""
    base = fmt.rstrip("p")
    if base == "u8":
        return 128.0, 128.0
    return 0.0, _SCALE.get(base, 1.0)


class _BlockReducer:
    """Reduces a stream of sample arrays (as `_planes` gives them) to min/max per block of
    `block` samples over all channels, in chunks of about CHUNK_SAMPLES so numpy does the work
    in few calls. Rows stay contiguous, so a chunk reduces without any transposition."""

    def __init__(self, block: int, step: int) -> None:
        self.block = block
        self.width = block * step  # elements per block in each row
        self.step = step
        self.pending: list[np.ndarray] = []
        self.pending_elements = 0
        self.mins: list[np.ndarray] = []
        self.maxs: list[np.ndarray] = []
        self.samples = 0

    def add(self, planes: np.ndarray) -> None:
        self.pending.append(planes)
        self.pending_elements += planes.shape[1]
        self.samples += planes.shape[1] // self.step
        if self.pending_elements >= CHUNK_SAMPLES * self.step:
            self._reduce(final=False)

    def _reduce(self, final: bool) -> None:
        if not self.pending:
            return
        chunk = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending, 1)
        size = chunk.shape[1]
        whole = size - size % self.width
        self.pending = [chunk[:, whole:]] if whole < size else []
        self.pending_elements = size - whole
        if whole:
            blocks = chunk[:, :whole].reshape(chunk.shape[0], whole // self.width, self.width)
            self.mins.append(blocks.min(axis=(0, 2)))
            self.maxs.append(blocks.max(axis=(0, 2)))
        if final and self.pending:
            tail = self.pending[0]
            self.mins.append(tail.min(keepdims=True).reshape(1))
            self.maxs.append(tail.max(keepdims=True).reshape(1))
            self.pending, self.pending_elements = [], 0

    def finish(self, fmt: str) -> tuple[np.ndarray, np.ndarray]:
        self._reduce(final=True)
        if not self.mins:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        offset, scale = _scale(fmt)
        mins = (np.concatenate(self.mins).astype(np.float32) - offset) / scale
        maxs = (np.concatenate(self.maxs).astype(np.float32) - offset) / scale
        return np.clip(mins, -1.0, 1.0), np.clip(maxs, -1.0, 1.0)


def peaks(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    start: float,
    end: float,
    blocks_wanted: int,
    progress: Callable[[float], None] | None = None,
    span_hint: float | None = None,
) -> Peaks:
    """Decodes the audio between `start` and `end` seconds (seeking to `start`; `end` may be
    `math.inf`: up to the end of the stream) and returns the min/max of every block of samples,
    about `blocks_wanted` blocks for a span of `span_hint` seconds (default `end - start`).
    Progress is reported as a percentage of that span.

    Samples before `start` in the first decoded frames are dropped, and a gap between `start`
    and the first sample (a stream that starts late) counts as silence, so the span is placed
    by time; after the first frame, samples are counted, so timestamp jitter cannot shift
    them."""
    base = origin(container)
    rate = stream.codec_context.sample_rate or stream.rate or 44100
    expected = sys.maxsize if math.isinf(end) else max(1, round((end - start) * rate))
    if span_hint is None and not math.isinf(end):
        span_hint = end - start
    if span_hint:
        hinted = max(1, round(span_hint * rate))
        block = int(min(4096, max(1, hinted // max(1, blocks_wanted))))
    else:
        hinted, block = 0, 64
    if start > 0 and stream.time_base is not None:
        container.seek(int((base + start) / stream.time_base), stream=stream, backward=True)
    fmt = ""
    last_report = -1.0
    reducer: _BlockReducer | None = None
    reached_end = True
    for frame in container.decode(stream):
        if frame.samples == 0:
            continue
        planes = _planes(frame)
        if reducer is None:
            fmt = frame.format.name
            rate = frame.sample_rate or rate
            at = 0  # where this frame starts, in samples from `start`
            if frame.pts is not None and frame.time_base is not None:
                at = round((float(frame.pts * frame.time_base) - base - start) * rate)
            if at >= expected:
                reached_end = False
                break
            if at + frame.samples <= 0:
                continue  # wholly before `start`: the seek landed earlier
            reducer = _BlockReducer(block, _step(frame))
            if at > 0:
                _add_silence(reducer, at, planes, fmt)
            lo = max(0, -at)
        else:
            lo = 0
        hi = min(frame.samples, lo + expected - reducer.samples)
        step = reducer.step
        reducer.add(planes[:, lo * step : hi * step] if lo or hi < frame.samples else planes)
        if reducer.samples >= expected:
            reached_end = False
            break
        if progress is not None and hinted:
            done = min(100.0, 100.0 * reducer.samples / hinted)
            if done - last_report >= 1.0:
                last_report = done
                progress(done)
    if reducer is None:
        return Peaks(np.zeros(0, np.float32), np.zeros(0, np.float32), block, 0, rate, reached_end)
    mins, maxs = reducer.finish(fmt)
    return Peaks(mins, maxs, block, reducer.samples, rate, reached_end)


def _add_silence(reducer: _BlockReducer, samples: int, like: np.ndarray, fmt: str) -> None:
    """Adds `samples` silent samples shaped like `like`, a chunk at a time."""
    silent = 128 if fmt.rstrip("p") == "u8" else 0
    piece = np.full((like.shape[0], CHUNK_SAMPLES * reducer.step), silent, dtype=like.dtype)
    for done in range(0, samples, CHUNK_SAMPLES):
        reducer.add(piece[:, : min(CHUNK_SAMPLES, samples - done) * reducer.step])


# Containers whose header or index gives the exact duration, so that decoding ending well before
# it means the file was cut short. (Elsewhere FFmpeg estimates the duration from the bitrate.)
_EXACT_DURATION = {"flac", "mov", "mp4", "m4a", "matroska", "webm", "ogg"}
# How far before the announced end decoding may stop (encoder delay and padding, edit lists).
CUT_SLACK = 0.2  # seconds, or 5% of the duration if more


def check_complete(
    path: str | Path,
    container: av.container.InputContainer,
    stream: av.AudioStream,
    decoded_end: float | None = None,
) -> None:
    """Raises a TaskError when the file was cut short: a WAV whose RIFF header counts more
    bytes than the file holds, or a file whose header or index announces a duration (FLAC, MP4,
    Matroska, MP3 with a Xing or VBRI header) well past the last sample decoded.

    `decoded_end` is where decoding to the end of the stream stopped, in seconds from the start
    of the file; without it, the last second of the stream is decoded to find out."""
    names = set(container.format.name.split(","))
    if "wav" in names:
        _check_riff(Path(path))
        return
    exact = bool(names & _EXACT_DURATION) or ("mp3" in names and _has_vbr_header(Path(path)))
    declared = stream_duration(container, stream)
    if not exact or declared <= 0:
        return
    if decoded_end is None:
        decoded_end = _last_sample_time(container, stream, declared)
    if decoded_end < declared - max(CUT_SLACK, 0.05 * declared):
        raise TaskError(
            f"the file is truncated or corrupt: it announces {declared:.2f} s of audio, but "
            f"the audio stops at {decoded_end:.2f} s"
        )


def _last_sample_time(
    container: av.container.InputContainer, stream: av.AudioStream, declared: float
) -> float:
    """Where the stream's audio really ends, decoding only its last second or so."""
    base = origin(container)
    if stream.time_base is not None and declared > 1.0:
        container.seek(int((base + declared - 1.0) / stream.time_base), stream=stream)
    end = 0.0
    try:
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time_base is not None and frame.sample_rate:
                end = float(frame.pts * frame.time_base) - base + frame.samples / frame.sample_rate
    except av.FFmpegError:
        pass  # a cut in the middle of a frame: `end` is as far as it went
    return end


def _check_riff(path: Path) -> None:
    with path.open("rb") as f:
        header = f.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return
    declared = int.from_bytes(header[4:8], "little") + 8
    # Streaming writers leave 0 or 0xFFFFFFFF in the size; a pad byte may be missing at the end.
    if 8 < declared < 0xFFFFFFF0 and declared > path.stat().st_size + 1:
        raise TaskError(
            f"the file is truncated: its header counts {declared} bytes, but it holds "
            f"{path.stat().st_size}"
        )


def _has_vbr_header(path: Path) -> bool:
    """Whether an MP3 starts with a Xing, Info or VBRI frame, which counts its frames (so its
    duration is known, not estimated from the first frame's bitrate)."""
    with path.open("rb") as f:
        head = f.read(10)
        skip = 0
        if head[:3] == b"ID3" and len(head) == 10:
            size = head[6:10]
            skip = 10 + (size[0] << 21 | size[1] << 14 | size[2] << 7 | size[3])
        f.seek(skip)
        first = f.read(4096)
    return any(tag in first for tag in (b"Xing", b"Info", b"VBRI"))
