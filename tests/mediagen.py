"""Small real media generated with PyAV and Pillow for the tests: moving colour patterns with a
frame counter encoded in the picture, and tones whose frequency is known."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def pattern(width: int, height: int, index: int) -> np.ndarray:
    """An RGB frame whose mean brightness encodes `index` (so a test can tell frames apart)
    over a horizontal gradient."""
    level = (index * 7) % 200 + 30
    frame = np.full((height, width, 3), level, dtype=np.uint8)
    frame[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return frame


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
) -> Path:
    """A video of `seconds` at `fps` in the container of `path`'s extension."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = None
        if audio_codec:
            audio = out.add_stream(audio_codec, rate=48000 if "opus" in audio_codec else 44100)
            audio.layout = "stereo"
        frames = int(seconds * fps)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(width, height, i), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
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
