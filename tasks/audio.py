"""Audio helpers shared by the audio kinds: choosing the audio stream, its duration, and decoding
a time span into peak blocks (min/max per run of samples) with numpy.

Times given to these helpers are relative to the start of the file (the container's start
time), so a stream that starts at 1.4 s in an MPEG-TS file is read from its first sample.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
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
# Packets the decoder may reject (skipped, as the ffmpeg tool does) before the file counts as
# corrupt: a damaged frame or two in a long file should not lose the whole file.
MAX_BAD_PACKETS = 16
# Seconds decoded before a seek target and thrown away, so the decoder is primed at the target.
SEEK_PREROLL = 0.1

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


def _stream_offset(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    """Seconds from the start of the file to the stream's first sample."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return max(0.0, float(stream.start_time * stream.time_base) - origin(container))


def stream_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    """Seconds from the start of the file to the end of its audio stream (a soundtrack that
    starts late ends late), else the container's duration; 0.0 when unknown."""
    if stream.duration and stream.time_base is not None and stream.duration > 0:
        return _stream_offset(container, stream) + float(stream.duration * stream.time_base)
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


def decode(
    container: av.container.InputContainer, stream: av.AudioStream
) -> Iterator[av.AudioFrame]:
    """The stream's frames from the current position. Packets the decoder rejects are skipped,
    up to MAX_BAD_PACKETS; past that, or when it rejects every one, the file is reported
    corrupt."""
    bad = good = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise TaskError(
                    f"the audio is corrupt: the decoder rejected more than {MAX_BAD_PACKETS} of "
                    f"its packets"
                ) from None
            continue
        good += len(frames)
        yield from frames
    if bad and not good:
        raise TaskError("the audio is corrupt or truncated: the decoder could read none of it")


class _Conformer:
    """Resamples frames to one sample format, channel layout and rate (the stream's first
    frame's), for streams that change midway, such as two files joined end to end. The frames
    it returns carry no timestamp: they are placed by count."""

    def __init__(self, fmt: str, layout: str, rate: int) -> None:
        self.target = (fmt, layout, rate)
        self.resamplers: dict[tuple[str, str, int], av.AudioResampler] = {}

    def __call__(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if kind not in self.resamplers:
            self.resamplers[kind] = av.AudioResampler(*self.target)
        frames = self.resamplers[kind].resample(frame)
        for resampled in frames:
            resampled.pts = None
        return frames


def uniform(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    """The frames, all in the first one's sample format, channel layout and rate (see
    `_Conformer`)."""
    first = conform = None
    for frame in frames:
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if first is None:
            first, conform = kind, _Conformer(*kind)
        if kind == first:
            yield frame
        else:
            yield from conform(frame)  # type: ignore[misc]


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
    silence: int = 0  # samples of silence put where the stream had none (a late start, gaps)

    @property
    def decoded(self) -> float:
        """Seconds of audio really decoded."""
        return (self.samples - self.silence) / self.rate


# numpy types of FFmpeg's sample formats (planar ones end in "p").
_DTYPES = {
    "u8": np.uint8,
    "s16": np.int16,
    "s32": np.int32,
    "s64": np.int64,
    "flt": np.float32,
    "dbl": np.float64,
}


def _planes(frame: av.AudioFrame, dtype: type, per_sample: int) -> list[np.ndarray]:
    """Views of the frame's samples, without copying: one array per channel for a planar
    format (`per_sample` 1), one interleaved array for a packed one (`per_sample` the channel
    count). Cheaper than `to_ndarray`, which stacks the planes into a new array, a cost paid on
    every frame."""
    count = frame.samples * per_sample
    return [np.frombuffer(plane, dtype, count) for plane in frame.planes]


def _scale(fmt: str) -> tuple[float, float]:
    """(offset, full scale) that bring a sample format's values into [-1, 1]."""
    base = fmt.rstrip("p")
    if base == "u8":
        return 128.0, 128.0
    return 0.0, _SCALE.get(base, 1.0)


class _BlockReducer:
    """Reduces a stream of sample arrays (as `_planes` gives them) to min/max per block of
    `block` samples over all channels, in chunks of about CHUNK_SAMPLES so numpy does the work
    in few calls. `step` is the number of values per sample in each array: 1 for planar audio,
    the channel count for interleaved audio."""

    def __init__(self, block: int, step: int, planes: int) -> None:
        self.block = block
        self.step = step
        self.width = block * step  # values per block in each array
        self.pending: list[list[np.ndarray]] = [[] for _ in range(planes)]
        self.pending_values = 0
        self.mins: list[np.ndarray] = []
        self.maxs: list[np.ndarray] = []
        self.samples = 0

    def add(self, planes: list[np.ndarray]) -> None:
        for store, plane in zip(self.pending, planes, strict=True):
            store.append(plane)
        self.pending_values += len(planes[0])
        self.samples += len(planes[0]) // self.step
        if self.pending_values >= CHUNK_SAMPLES * self.step:
            self.reduce()

    def reduce(self, final: bool = False) -> None:
        """Reduces the whole blocks pending (and with `final`, the last partial one too). The
        pending lists are emptied in place: `peaks` appends to them directly."""
        size = self.pending_values
        if not size:
            return
        whole = size - size % self.width
        count = whole // self.width
        chunks = [store[0] if len(store) == 1 else np.concatenate(store) for store in self.pending]
        if count:
            blocks = [chunk[:whole].reshape(count, self.width) for chunk in chunks]
            self.mins.append(np.minimum.reduce([b.min(axis=1) for b in blocks]))
            self.maxs.append(np.maximum.reduce([b.max(axis=1) for b in blocks]))
        rest = [chunk[whole:] for chunk in chunks]
        self.pending_values = size - whole
        for store, leftover in zip(self.pending, rest, strict=True):
            store.clear()
            if self.pending_values and not final:
                store.append(leftover)
        if final and self.pending_values:
            self.mins.append(np.array([min(r.min() for r in rest)]))
            self.maxs.append(np.array([max(r.max() for r in rest)]))
            self.pending_values = 0

    def finish(self, fmt: str) -> tuple[np.ndarray, np.ndarray]:
        self.reduce(final=True)
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
    by time. After that, samples are counted (timestamp jitter cannot shift them), and where
    the timestamps jump ahead by half a frame or more (packets the decoder rejected, a hole in
    the stream) the hole is filled with silence, so what follows stays in its place."""
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
        # A little before `start`: the first frames after a seek prime the decoder (MP3's bit
        # reservoir, AAC's overlap) and are cut off below, before `start`.
        target = max(0.0, base + start - SEEK_PREROLL)
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
    frames = decode(container, stream)
    reducer: _BlockReducer | None = None
    fmt, dtype, per_sample = "", np.float32, 1
    for frame in frames:
        # Until the first frame that reaches into the span: place it in time.
        if frame.samples == 0:
            continue
        rate = frame.sample_rate or rate
        at = 0  # where this frame starts, in samples from `start`
        if frame.pts is not None and frame.time_base is not None:
            at = round((float(frame.pts * frame.time_base) - base - start) * rate)
        if at >= expected:
            break
        if at + frame.samples <= 0:
            continue  # wholly before `start`: the seek landed earlier
        first, fmt = frame, frame.format.name
        dtype = _DTYPES[fmt.rstrip("p")]
        per_sample = 1 if frame.format.is_planar else frame.layout.nb_channels
        planes = _planes(frame, dtype, per_sample)
        reducer = _BlockReducer(block, per_sample, len(planes))
        if at > 0:
            _add_silence(reducer, at, dtype, fmt)
        lo = max(0, -at)
        hi = min(frame.samples, lo + expected - reducer.samples)
        reducer.add([plane[lo * per_sample : hi * per_sample] for plane in planes])
        break
    if reducer is None:
        empty = np.zeros(0, np.float32)
        return Peaks(empty, empty, block, 0, rate, reached_end=True)

    # The rest of the span: one frame after another, as little Python per frame as possible
    # (this loop runs some 40 times per second of audio).
    silence = max(0, at)
    remaining = expected - reducer.samples
    reached_end = remaining > 0
    report_every = max(1, hinted // 100)
    next_report = reducer.samples + report_every
    seconds_per_tick = float(stream.time_base) if stream.time_base is not None else 0.0
    offset = base + start
    jitter = math.ceil(seconds_per_tick * rate) + 1  # how far timestamps may stray, rounded
    layout, channels = first.layout.name, first.layout.nb_channels
    conform = _Conformer(fmt, layout, rate)
    stores, frombuffer = reducer.pending, np.frombuffer
    threshold = CHUNK_SAMPLES * per_sample
    for frame in frames if remaining > 0 else ():
        count = frame.samples
        if (
            frame.format.name != fmt
            or frame.sample_rate != rate
            or frame.layout.nb_channels != channels
        ):
            for conformed in conform(frame):
                if remaining > 0:
                    conformed_planes = _planes(conformed, dtype, per_sample)
                    reducer.add([p[: remaining * per_sample] for p in conformed_planes])
                    remaining = expected - reducer.samples
        else:
            pts = frame.pts
            if pts is not None and seconds_per_tick:
                # Half a frame or more missing (packets the decoder rejected, a hole in the
                # stream): silence keeps what follows in its place.
                gap = round((pts * seconds_per_tick - offset) * rate) - reducer.samples
                if gap * 2 > count and gap > jitter:
                    gap = min(gap, remaining)
                    _add_silence(reducer, gap, dtype, fmt)
                    silence += gap
                    remaining -= gap
            if 0 < remaining <= count:
                planes = _planes(frame, dtype, per_sample)
                reducer.add([plane[: remaining * per_sample] for plane in planes])
                remaining = 0
            elif remaining > 0:
                values = count * per_sample
                for store, plane in zip(stores, frame.planes, strict=True):
                    store.append(frombuffer(plane, dtype, values))
                reducer.samples += count
                reducer.pending_values += values
                remaining -= count
                if reducer.pending_values >= threshold:
                    reducer.reduce()
        if remaining <= 0:
            reached_end = False
            break
        if progress is not None and hinted and reducer.samples >= next_report:
            next_report = reducer.samples + report_every
            progress(min(100.0, 100.0 * reducer.samples / hinted))
    mins, maxs = reducer.finish(fmt)
    return Peaks(mins, maxs, block, reducer.samples, rate, reached_end, silence)


def _add_silence(reducer: _BlockReducer, samples: int, dtype: type, fmt: str) -> None:
    """Adds `samples` silent samples, a chunk at a time."""
    silent = 128 if fmt.rstrip("p") == "u8" else 0
    piece = np.full(CHUNK_SAMPLES * reducer.step, silent, dtype=dtype)
    for done in range(0, samples, CHUNK_SAMPLES):
        part = piece[: min(CHUNK_SAMPLES, samples - done) * reducer.step]
        reducer.add([part] * len(reducer.pending))


# Containers whose header or index gives the exact duration, so that decoding ending well before
# it means the file was cut short. (Elsewhere FFmpeg estimates the duration from the bitrate.)
_EXACT_DURATION = {"flac", "mov", "mp4", "m4a", "matroska", "webm", "ogg"}
# How far before the announced end decoding may stop (encoder delay and padding, edit lists).
CUT_SLACK = 0.2  # seconds, or 5% of the duration if more


def check_complete(
    path: str | Path,
    container: av.container.InputContainer,
    stream: av.AudioStream,
    start: float = 0.0,
    decoded: float | None = None,
) -> None:
    """Raises a TaskError when the file was cut short or lost much of its audio to corruption:
    a WAV whose RIFF header counts more bytes than the file holds, or a file whose header or
    index announces a duration (FLAC, MP4, Matroska, MP3 with a Xing or VBRI header) that the
    audio decoded falls well short of.

    `decoded` is how many seconds of audio were decoded from `start` to the end of the stream;
    without it, the last second of the stream is decoded to find where the audio ends."""
    names = set(container.format.name.split(","))
    if "wav" in names:
        _check_riff(Path(path))
        return
    exact = bool(names & _EXACT_DURATION) or ("mp3" in names and _has_vbr_header(Path(path)))
    declared = stream_duration(container, stream)
    if not exact or declared <= 0:
        return
    slack = max(CUT_SLACK, 0.05 * declared)
    if decoded is None:
        end = _last_sample_time(container, stream, declared)
        if end < declared - slack:
            raise TaskError(
                f"the file is truncated or corrupt: it announces {declared:.2f} s of audio, but "
                f"the audio stops at {end:.2f} s"
            )
        return
    expected = declared - max(start, _stream_offset(container, stream))
    if decoded < expected - slack:
        raise TaskError(
            f"the file is truncated or corrupt: it announces {expected:.2f} s of audio"
            f"{f' after {start:g} s' if start else ''}, but only {decoded:.2f} s could be decoded"
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
        for frame in decode(container, stream):
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
