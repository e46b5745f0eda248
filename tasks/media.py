"""Opening untrusted audio and video with PyAV, shared by the media kinds.

Every FFmpeg failure becomes a `TaskError` whose message a person understands, and inputs over
the decompression-bomb limits (duration, frame size) are refused before any decoding.

For the video kinds: a stream's facts (`video_values`), its rotation (from the display matrix
FFmpeg attaches to decoded frames), `FrameReader` for the exact frame shown at given times
(seeking to the keyframe before each, decoding forward, never a frame twice), `frame_image` for
an upright, scaled Pillow image of a frame, `FrameShaper` to turn and scale frames for an
encoder inside FFmpeg, `DecodeGuard` against decoders that loop, and `Background` and
`read_in_parallel` to decode on other threads (PyAV decodes without holding the GIL).
"""

from __future__ import annotations

import bisect
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import av.container
import av.filter
from av.video.reformatter import VideoReformatter
from PIL import Image

from tasks.declare import TaskError
from tasks.geometry import Geometry

T = TypeVar("T")
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
    """The MIME type of an opened input, from its container format (and, for the ISO family,
    its major brand: QuickTime, 3GPP, or MP4 with or without video)."""
    names = container.format.name.split(",")
    if "mp4" in names:
        brand = (container.metadata.get("major_brand") or "").strip().lower()
        if brand == "qt":
            return "video/quicktime"
        if brand.startswith("3g"):
            return "video/3gpp"
        return "video/mp4" if container.streams.video else "audio/mp4"
    if "matroska" in names and _ebml_doctype(container) == b"webm":
        return "video/webm" if container.streams.video else "audio/webm"
    for name in names:
        if name in CONTENT_TYPES:
            return CONTENT_TYPES[name]
    return "application/octet-stream"


def _ebml_doctype(container: av.container.InputContainer) -> bytes | None:
    """`webm` or `matroska`, from the EBML header at the start of the file (FFmpeg's demuxer
    handles both under one name and does not say which)."""
    try:
        with open(container.name, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    at = head.find(b"\x42\x82")  # the DocType element
    if at < 0 or at + 3 > len(head):
        return None
    size = head[at + 2] & 0x7F  # a one-byte EBML size (0x80 | n)
    return head[at + 3 : at + 3 + size]


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
        for stream in (*container.streams.video, *container.streams.audio):
            if stream.codec_context is None:  # a damaged header names no codec
                raise TaskError(
                    f"the file's {stream.type} stream has no codec we can read: it is corrupt "
                    "or in a format we do not support"
                )
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
    if isinstance(error, av.error.EOFError):
        return "the file ended too early: it is empty, truncated, or not a media file"
    text = getattr(error, "strerror", None) or str(error)
    return f"the media could not be processed: {text}"


# --- Video streams: facts, rotation, exact frames, shaping -------------------------------------

# Every frame decoded by one kind is counted; a decoder that emits more than this many times the
# frames the header promises (plus slack) is looping on a corrupt file.
GUARD_FACTOR = 4
GUARD_SLACK = 2000
# Without a keyframe index, a wanted frame this many seconds past the decoder's position is
# reached by seeking rather than by decoding forward.
SEEK_GAP = 2.0
_EPS = 1e-4  # seconds: a frame at most this much after a wanted time still counts as at it


def video_stream(container: av.container.InputContainer, threads: bool = True) -> av.VideoStream:
    """The first video stream, with the decoder's own threading on (frame and slice), or off:
    frame threading pays a pipeline fill after each seek, a loss when only a few frames are
    decoded from each keyframe (a probe, a strip's frames decoded in parallel instead)."""
    stream = container.streams.video[0]
    if threads:
        stream.codec_context.thread_type = "AUTO"
    else:
        stream.codec_context.thread_count = 1
    return stream


def audio_stream(container: av.container.InputContainer) -> av.AudioStream | None:
    """The first audio stream, or None."""
    return container.streams.audio[0] if container.streams.audio else None


def codec_name(stream: av.stream.Stream | None) -> str | None:
    """FFmpeg's short name of a stream's codec (`h264`, `vp9`, `aac`), or None."""
    if stream is None:
        return None
    return stream.codec_context.codec.canonical_name


def rotation_of(frame: av.VideoFrame) -> float:
    """Counter-clockwise degrees (0 <= r < 360) that turn `frame` upright, from its display
    matrix (FFmpeg attaches the stream's matrix to every decoded frame)."""
    return float(frame.rotation % 360)


def quarter_turns(rotation: float) -> int:
    """`rotation` rounded to counter-clockwise quarter turns (0 to 3)."""
    return round(rotation / 90.0) % 4


def upright_size(width: int, height: int, rotation: float) -> tuple[int, int]:
    """The picture size once turned upright."""
    return (height, width) if quarter_turns(rotation) % 2 else (width, height)


def frame_rate(stream: av.VideoStream) -> float:
    """Frames per second: the average rate, else FFmpeg's guess; 0.0 when unknown."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def has_alpha(stream: av.VideoStream) -> bool:
    """Whether the video carries transparency (an alpha pixel format, or WebM's alpha side
    channel)."""
    pix_fmt = stream.codec_context.pix_fmt
    if pix_fmt and any(c.is_alpha for c in av.VideoFormat(pix_fmt).components):
        return True
    return stream.metadata.get("alpha_mode") == "1"


def video_values(
    container: av.container.InputContainer, stream: av.VideoStream, rotation: float
) -> dict[str, Any]:
    """The `video.info` output values of an opened file. Width and height are the stored
    picture's; `rotation` says how to turn it upright."""
    return {
        "content_type": content_type(container),
        "width": stream.codec_context.width,
        "height": stream.codec_context.height,
        "duration": round(duration(container), 6),
        "frame_rate": round(frame_rate(stream), 6),
        "alpha": has_alpha(stream),
        "rotation": rotation,
        "audio_codec": codec_name(audio_stream(container)),
        "video_codec": codec_name(stream),
    }


class DecodeGuard:
    """Stops a decoder that loops: counts decoded frames against what the header promises."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream) -> None:
        expected = max(duration(container), 1.0) * max(frame_rate(stream), 30.0)
        self.limit = int(expected * GUARD_FACTOR) + GUARD_SLACK
        self.frames = 0

    def count(self, n: int = 1) -> None:
        self.frames += n
        if self.frames > self.limit:
            raise TaskError(
                "the video decoder kept producing frames past the length of the file "
                "(it may be corrupt); stopped"
            )


class FrameReader:
    """The frames of one video stream at wanted times, taken the cheapest way the file allows.

    `at(t)` returns the frame shown at `t` seconds from the start: the last frame whose
    presentation time is at or before `t` (the first frame for earlier times). Wanted times
    should not decrease (an earlier one costs a seek back). Before decoding towards `t` the
    reader decides: if the keyframe before
    `t` lies past what it has decoded, it seeks there; otherwise it decodes forward. So no
    frame is decoded twice and a short span never costs the whole file. A packet that cannot be
    the wanted frame (a later picture, still at or before the wanted time, was already read)
    is skipped by the decoder when no other frame references it (`skip_frame = "NONREF"`).
    """

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream) -> None:
        self.container = container
        self.stream = stream
        self.ctx = stream.codec_context
        self.tb = float(stream.time_base)
        self.start = _stream_start(container, stream)
        self.guard = DecodeGuard(container, stream)
        self.keyframes = _indexed_keyframes(container, stream)  # seconds, or None
        self.seen_keyframes: list[float] = []
        self.decoded = 0  # frames out of the decoder so far (the tests and benchmark read it)
        self.seeks = 0
        self._restart(None)

    # Decoder state: packets come from `_packets`; decoded frames wait in `_pending` as
    # (time, frame) in presentation order; `_held` is the last frame at or before the current
    # wanted time and `_ahead` the first one after it, kept for the next wanted time.
    def _restart(self, seek_pts: int | None) -> None:
        if seek_pts is not None:
            self.container.seek(seek_pts, stream=self.stream, backward=True)
            self.seeks += 1
        self._packets = self.container.demux(self.stream)
        self._pending: list[tuple[float, av.VideoFrame]] = []
        self._eof = False
        self._held: tuple[float, av.VideoFrame] | None = None
        self._ahead: tuple[float, av.VideoFrame] | None = None
        self._position = -1.0  # time of the last frame out of the decoder; -1 before any
        self._latest_read: float | None = None  # latest packet time read, up to the wanted time

    def _frame_time(self, frame: av.VideoFrame) -> float:
        if frame.pts is not None:
            return frame.pts * self.tb
        step = 1.0 / (frame_rate(self.stream) or 25.0)
        return self._position + step if self._position >= 0 else self.start

    def _next(self, wanted: float) -> tuple[float, av.VideoFrame] | None:
        """The next frame out of the decoder, in presentation order; None at the end."""
        while not self._pending:
            if self._eof:
                return None
            packet = next(self._packets, None)
            if packet is None or packet.size == 0:
                self.ctx.skip_frame = "DEFAULT"
                frames = self.stream.decode(None)
                self._eof = True
            else:
                if packet.is_keyframe and packet.pts is not None:
                    self.seen_keyframes.append(packet.pts * self.tb)
                self.ctx.skip_frame = "NONREF" if self._cannot_be(packet, wanted) else "DEFAULT"
                frames = self.stream.decode(packet)
            self.guard.count(len(frames))
            self.decoded += len(frames)
            for frame in frames:
                self._position = self._frame_time(frame)
                self._pending.append((self._position, frame))
        return self._pending.pop(0)

    def _cannot_be(self, packet: av.Packet, wanted: float) -> bool:
        if packet.pts is None:
            return False
        t = packet.pts * self.tb
        if t > wanted + _EPS:
            return False
        if self._latest_read is None or t > self._latest_read:
            self._latest_read = t
            return False
        return t < self._latest_read

    def _seek_target(self, wanted: float) -> float | None:
        """Where to seek before decoding towards `wanted`, or None to decode forward."""
        backwards = self._held is not None and wanted + _EPS < self._held[0]
        if self.keyframes is not None:
            i = bisect.bisect_right(self.keyframes, wanted + _EPS) - 1
            key = self.keyframes[max(i, 0)]
            if backwards:
                return key
            if self._position < 0:  # nothing decoded yet: the first keyframe needs no seek
                return key if i > 0 else None
            return key if key > self._position + _EPS else None
        if backwards:
            return wanted
        base = self._position if self._position >= 0 else self.start
        gap = max(SEEK_GAP, 2 * _largest_gap(self.seen_keyframes))
        return wanted if wanted - base > gap else None

    def _seek(self, target: float, wanted: float) -> None:
        """Seeks to the keyframe at or before `target`; if the demuxer lands after `wanted`
        (a poor index), seeks further back."""
        back = 0.0
        for _ in range(6):
            goal = max(target - back, self.start)
            self._restart(round(goal / self.tb))
            first = self._next(wanted)
            if first is None or first[0] <= wanted + _EPS or goal <= self.start:
                if first is not None:
                    self._pending.insert(0, first)
                return
            back = back * 2 if back else 1.0
        self._restart(round(self.start / self.tb))

    def segments(self, times: list[float]) -> list[list[int]]:
        """The indices of increasing `times` grouped into runs that one reader decodes forward
        through: a new run starts where a reader would seek (the keyframe before the time lies
        past the frame after the previous time). Longest runs (most seconds to decode from
        their keyframe) first, so that readers sharing them out finish together. Without a
        keyframe index, one run: readers starting at guessed places could decode a frame
        twice."""
        if not times:
            return []
        if self.keyframes is None:
            return [list(range(len(times)))]
        step = 1.0 / (frame_rate(self.stream) or 25.0)
        runs: list[list[int]] = []
        keys: list[float] = []
        for i, t in enumerate(times):
            wanted = self.start + t
            key = self.keyframes[max(bisect.bisect_right(self.keyframes, wanted + _EPS) - 1, 0)]
            if not runs or key > self.start + times[i - 1] + step + _EPS:
                runs.append([])
                keys.append(key)
            runs[-1].append(i)
        cost = [self.start + times[run[-1]] - key for run, key in zip(runs, keys, strict=True)]
        order = sorted(range(len(runs)), key=lambda r: -cost[r])
        return [runs[r] for r in order]

    def at(self, t: float) -> av.VideoFrame:
        """The frame shown `t` seconds after the start of the video."""
        wanted = self.start + max(t, 0.0)
        target = self._seek_target(wanted)
        if target is not None:
            self._seek(target, wanted)
        elif self._ahead is not None:
            if self._ahead[0] > wanted + _EPS and self._held is not None:
                return self._held[1]
            self._held, self._ahead = self._ahead, None
        while (item := self._next(wanted)) is not None:
            if item[0] > wanted + _EPS and self._held is not None:
                self._ahead = item
                break
            self._held = item
            if item[0] >= wanted - _EPS:
                break  # exactly at the wanted time, or the wanted time is before the first frame
        if self._held is None:
            raise TaskError("no video frame could be decoded from the file")
        return self._held[1]

    def time_of(self, frame: av.VideoFrame) -> float:
        """Seconds from the start of the video to `frame` (one returned by `at`)."""
        for item in (self._held, self._ahead):
            if item is not None and item[1] is frame:
                return item[0] - self.start
        return (frame.pts or 0) * self.tb - self.start


PROBE_PACKETS = 1000


def first_frame(container: av.container.InputContainer, stream: av.VideoStream) -> av.VideoFrame:
    """The first frame, decoding as little as possible: after each packet the decoder is
    drained, so a decoder that holds frames back to reorder them (B-frames) gives the first one
    at once instead of after the next few packets."""
    for count, packet in enumerate(container.demux(stream)):
        if count > PROBE_PACKETS:
            break
        frames = stream.decode(packet) if packet.size else []
        if not frames:
            frames = stream.decode(None)
            stream.codec_context.flush_buffers()
        if frames:
            return frames[0]
        if not packet.size:
            break
    raise TaskError("no video frame could be decoded from the file")


def read_in_parallel(
    path: str | Path,
    times: list[float],
    runs: list[list[int]],
    convert: Callable[[av.VideoFrame], T],
    workers: int,
    progress: Callable[[int], None] = lambda done: None,
) -> list[tuple[float, T]]:
    """For each of `times`: (the time of the frame shown then, `convert(frame)`). `runs` (from
    `FrameReader.segments`) are shared out to `workers` threads, each with its own file handle
    and a single-threaded decoder (PyAV decodes without the GIL): short decodes from many
    keyframes go faster side by side than through one frame-threaded decoder, which refills its
    pipeline after every seek. `progress(done)` is called on this thread only."""
    pending: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    for run in runs:
        pending.put(run)
    done: queue.SimpleQueue[Any] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        try:
            with open_media(path, need="video") as container:
                stream = video_stream(container, threads=len(threads) == 1)
                reader = FrameReader(container, stream)
                while not stop.is_set():
                    try:
                        run = pending.get_nowait()
                    except queue.Empty:
                        return
                    for i in run:
                        frame = reader.at(times[i])
                        done.put((i, reader.time_of(frame), convert(frame)))
        except BaseException as e:  # raised on the calling thread
            done.put(_Raised(e))

    threads = [
        threading.Thread(target=work, name="frames", daemon=True)
        for _ in range(max(1, min(workers, len(runs))))
    ]
    for thread in threads:
        thread.start()
    results: list[Any] = [None] * len(times)
    try:
        for count in range(1, len(times) + 1):
            item = done.get()
            if isinstance(item, _Raised):
                raise item.error
            results[item[0]] = item[1:]
            progress(count)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return results


def _stream_start(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.start_time is not None:
        return float(stream.start_time * stream.time_base)
    if container.start_time is not None:
        return container.start_time / av.time_base
    return 0.0


def _indexed_keyframes(
    container: av.container.InputContainer, stream: av.VideoStream
) -> list[float] | None:
    """Keyframe times from the demuxer's index when it is known to be complete: MP4/MOV index
    every sample when they open; Matroska reads its cues on the first seek; AVI and ASF load
    theirs if the file has one. MPEG-PS/TS build theirs while reading: no help there."""
    names = set(container.format.name.split(","))
    shift = 0
    if names & {"mov", "mp4"}:
        trusted = 1
        # MP4 indexes decoding times; with B-frames a keyframe is shown a constant reorder
        # delay later, the gap between the first picture's time and the first entry's.
        entries = stream.index_entries
        if entries and stream.start_time is not None:
            shift = max(0, stream.start_time - entries[0].timestamp)
    elif names & {"matroska", "avi", "asf"}:
        trusted = 2
        if "matroska" in names:
            container.seek(0, stream=stream, backward=True)  # loads the cues
    else:
        return None
    tb = float(stream.time_base)
    times = sorted({(e.timestamp + shift) * tb for e in stream.index_entries if e.is_keyframe})
    return times if len(times) >= trusted else None


def _largest_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


_TRANSPOSE = {
    1: Image.Transpose.ROTATE_90,
    2: Image.Transpose.ROTATE_180,
    3: Image.Transpose.ROTATE_270,
}


def frame_image(
    frame: av.VideoFrame, rotation: float, geometry: Geometry, mode: str = "RGB"
) -> Image.Image:
    """A Pillow image of `frame` turned upright and shaped by `geometry` (planned on the upright
    size). The scaling and the colour conversion happen in one swscale pass on the stored
    picture; only the small result is turned and cropped."""
    turns = quarter_turns(rotation)
    width, height = geometry.scaled
    if turns % 2:
        width, height = height, width
    fmt = "rgba" if mode == "RGBA" else "rgb24"
    small = frame.reformat(width, height, fmt, interpolation="BICUBIC")
    image = Image.fromarray(small.to_ndarray(), mode) if mode == "RGBA" else small.to_image()
    if turns:
        image = image.transpose(_TRANSPOSE[turns])
    if geometry.crop is not None:
        image = image.crop(geometry.crop)
    return image


class FrameShaper:
    """Turns decoded frames upright, scales and crops them to `geometry` (planned on the
    upright size) and converts them to `pix_fmt`, all inside FFmpeg: a cached swscale context
    when only scaling is needed, else a filter graph (transpose, crop, scale, format). A frame
    that needs no change passes through untouched."""

    def __init__(
        self, first: av.VideoFrame, rotation: float, geometry: Geometry, pix_fmt: str
    ) -> None:
        self.size = geometry.size
        self.pix_fmt = pix_fmt
        self.graph: av.filter.Graph | None = None
        self.reformatter = VideoReformatter()
        turns = quarter_turns(rotation)
        if turns == 0 and geometry.crop is None:
            return
        graph = av.filter.Graph()
        nodes = [
            graph.add_buffer(
                width=first.width,
                height=first.height,
                format=first.format.name,
                time_base=first.time_base or Fraction(1, 1000),
            )
        ]
        if turns == 1:
            nodes.append(graph.add("transpose", "cclock"))
        elif turns == 3:
            nodes.append(graph.add("transpose", "clock"))
        elif turns == 2:
            nodes += [graph.add("hflip"), graph.add("vflip")]
        width, height = upright_size(first.width, first.height, rotation)
        if geometry.crop is not None:
            # Crop the source first (cheaper than scaling the overflow), in source pixels.
            sx, sy = width / geometry.scaled[0], height / geometry.scaled[1]
            left, top, right, bottom = geometry.crop
            cw = min(width, max(1, round((right - left) * sx)))
            ch = min(height, max(1, round((bottom - top) * sy)))
            cx = min(width - cw, round(left * sx))
            cy = min(height - ch, round(top * sy))
            nodes.append(graph.add("crop", f"w={cw}:h={ch}:x={cx}:y={cy}:exact=1"))
            width, height = cw, ch
        if (width, height) != self.size:
            nodes.append(graph.add("scale", f"w={self.size[0]}:h={self.size[1]}:flags=bicubic"))
        nodes.append(graph.add("format", pix_fmt))
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes).configure()
        self.graph = graph

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self.graph is None:
            return self.reformatter.reformat(
                frame, self.size[0], self.size[1], self.pix_fmt, interpolation="BICUBIC"
            )
        self.graph.push(frame)
        return self.graph.pull()


class Background:
    """Iterates `iterator` in a thread, up to `depth` items ahead of the consumer, so decoding
    (which PyAV runs without the GIL) overlaps encoding. An exception in the thread is raised
    to the consumer; `close()` stops the thread and waits for it."""

    _END = object()

    def __init__(self, iterator: Iterator[Any], depth: int = 8) -> None:
        self._iterator = iterator
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="decode", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for item in self._iterator:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Raised(e))

    def __iter__(self) -> Background:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)  # stays at the end for any later call
            raise StopIteration
        if isinstance(item, _Raised):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class _Raised:
    error: BaseException
