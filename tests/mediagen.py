"""Small real media generated with PyAV and Pillow for the tests: moving colour patterns with a
frame counter encoded in the picture, and tones whose frequency is known."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def level(index: int) -> int:
    """The green and blue level of pattern frame `index` (frames next to each other differ by 7)."""
    return (index * 7) % 200 + 30


def pattern(width: int, height: int, index: int) -> np.ndarray:
    """An RGB frame whose mean brightness encodes `index` (so a test can tell frames apart)
    over a horizontal gradient."""
    frame = np.full((height, width, 3), level(index), dtype=np.uint8)
    frame[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return frame


def vfr_times(seconds: float) -> list[float]:
    """Presentation times of a variable-frame-rate video: gaps of 20, 60 and 40 ms in turn."""
    gaps = (0.02, 0.06, 0.04)
    times, t, i = [], 0.0, 0
    while t < seconds - 1e-9:
        times.append(round(t, 3))
        t += gaps[i % 3]
        i += 1
    return times


def make_video(
    path: Path,
    *,
    codec: str = "libx264",
    width: int = 320,
    height: int = 240,
    seconds: float = 2.0,
    fps: int = 25,
    audio_codec: str | None = "aac",
    rotation: int | None = None,
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    frame_times: list[float] | None = None,
    options: dict[str, str] | None = None,
    audio_rate: int | None = None,
    channels: int = 2,
) -> Path:
    """A video of `seconds` at `fps` in the container of `path`'s extension; frame `i` is
    `pattern(width, height, i)`. `frame_times` (seconds) makes a variable-frame-rate video
    instead; `options` go to the video encoder (libvpx-vp9 gets fast ones by default)."""
    if options is None and codec == "libvpx-vp9":
        options = {"deadline": "realtime", "cpu-used": "8"}
    with av.open(str(path), "w") as out:
        time_base = Fraction(1, 1000) if frame_times is not None else Fraction(1, fps)
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if frame_times is not None:
            stream.codec_context.time_base = time_base
        if gop:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = None
        if audio_codec:
            rate = audio_rate or (48000 if "opus" in audio_codec else 44100)
            audio = out.add_stream(audio_codec, rate=rate)
            audio.layout = "stereo" if channels == 2 else "mono"
        if frame_times is None:
            stamps = list(range(int(seconds * fps)))
        else:
            stamps = [round(t * 1000) for t in frame_times]
        for i, pts in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(pattern(width, height, i), format="rgb24")
            frame.pts = pts
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if audio is not None:
            _write_tone(out, audio, seconds)
    return path


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate = stream.rate
    size = stream.codec_context.frame_size or 1024
    total = int(seconds * rate)
    fmt = stream.codec_context.format.name
    pts = 0
    while pts < total:
        n = min(size, total - pts)
        t = (np.arange(pts, pts + n) / rate).astype(np.float32)
        samples = 0.5 * np.sin(2 * np.pi * 440 * t)
        if fmt.endswith("p"):
            data = np.stack([samples] * len(stream.layout.channels))
        else:
            data = np.repeat(samples, len(stream.layout.channels))[None, :]
        if fmt.startswith("s16"):
            data = (data * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            data = (data * 2147483647).astype(np.int32)
        elif fmt.startswith("dbl"):
            data = data.astype(np.float64)
        else:
            data = data.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=stream.layout.name)
        frame.sample_rate = rate
        frame.pts = pts
        for packet in stream.encode(frame):
            out.mux(packet)
        pts += n
    for packet in stream.encode():
        out.mux(packet)


def make_audio(path: Path, *, codec: str, seconds: float = 2.0, rate: int = 44100) -> Path:
    """A 440 Hz tone in the container of `path`'s extension."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        _write_tone(out, stream, seconds)
    return path


def make_image(
    path: Path, *, width: int = 64, height: int = 48, fmt: str = "JPEG", exif_orientation=None
) -> Path:
    """A gradient image; JPEGs can carry an EXIF orientation."""
    image = Image.fromarray(pattern(width, height, 3))
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(path, format=fmt, exif=exif.tobytes() if exif_orientation else b"")
    return path
