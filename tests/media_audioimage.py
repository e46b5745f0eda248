"""Test media for the audio and image kinds, generated with PyAV and Pillow: tones with loud and
silent parts, pictures with a colour in each quadrant (so flips and turns show), broken files;
and a helper that runs a kind in process."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from tasks import get
from tasks.declare import Job

# Quadrant colours of `marked_image`: top-left, top-right, bottom-left, bottom-right.
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def tone(
    path: Path,
    *,
    codec: str,
    parts: tuple[tuple[float, float], ...] = ((1.0, 0.9),),
    rate: int = 22050,
    layout: str = "stereo",
    freq: float = 440.0,
    fmt: str | None = None,
    live: bool = False,
) -> Path:
    """A sine tone in the container of `path`'s extension, made of `parts`, each (seconds,
    amplitude): ((1, 0.9), (1, 0.0)) is a loud second then a silent one. `live` writes a
    Matroska file as a live stream, with no duration in its header."""
    amplitudes = np.concatenate([np.full(round(s * rate), a, np.float64) for s, a in parts])
    t = np.arange(len(amplitudes)) / rate
    signal = amplitudes * np.sin(2 * np.pi * freq * t)
    options = {"live": "1"} if live else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        if codec.startswith("wmav"):
            stream.bit_rate = 64000  # the WMA encoders refuse to guess one
        if fmt:
            stream.format = fmt
        channels = len(stream.layout.channels)
        sample_fmt = stream.codec_context.format.name
        size = stream.codec_context.frame_size or 1024
        for at in range(0, len(signal), size):
            chunk = signal[at : at + size]
            if sample_fmt.endswith("p"):
                data = np.tile(chunk, (channels, 1))
            else:
                data = np.repeat(chunk, channels)[None, :]
            base = sample_fmt.rstrip("p")
            if base == "s16":
                data = np.round(data * 32767).astype(np.int16)
            elif base == "s32":
                data = np.round(data * 2147483647).astype(np.int32)
            elif base == "u8":
                data = np.round(data * 127 + 128).astype(np.uint8)
            elif base == "dbl":
                data = data.astype(np.float64)
            else:
                data = data.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(data, format=sample_fmt, layout=stream.layout.name)
            frame.sample_rate = rate
            frame.pts = at
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def marked_image(
    path: Path,
    *,
    width: int = 80,
    height: int = 60,
    fmt: str = "PNG",
    exif_orientation: int | None = None,
    mode: str = "RGB",
) -> Path:
    """A picture with a solid colour in each quadrant (RED top-left, GREEN top-right, BLUE
    bottom-left, YELLOW bottom-right), stored as is with an optional EXIF orientation."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = RED
    pixels[: height // 2, width // 2 :] = GREEN
    pixels[height // 2 :, : width // 2] = BLUE
    pixels[height // 2 :, width // 2 :] = YELLOW
    image = Image.fromarray(pixels).convert(mode)
    options: dict[str, Any] = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        options["exif"] = exif.tobytes()
    if fmt == "JPEG":
        options["quality"] = 95
    image.save(path, format=fmt, **options)
    return path


def solid_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    """A picture of one colour, in the format of `path`'s extension."""
    Image.new("RGB", size, color).save(path)
    return path


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header declares width x height pixels (its data is a token few bytes): what a
    decompression bomb looks like before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
    path.write_bytes(data + chunk(b"IEND", b""))
    return path


def broken_files(folder: Path, good: Path) -> dict[str, Path]:
    """Three broken inputs: the first half of `good`, random bytes, zero bytes."""
    data = good.read_bytes()
    rng = np.random.default_rng(7)
    files = {
        "truncated": data[: len(data) // 2],
        "random": rng.integers(0, 256, 20000, dtype=np.uint8).tobytes(),
        "empty": b"",
    }
    out = {}
    for name, content in files.items():
        path = folder / f"{name}{good.suffix}"
        path.write_bytes(content)
        out[name] = path
    return out


class Progress:
    """A progress callback that records what it was told."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def __call__(self, pct: float, partial: dict[str, Any] | None = None) -> None:
        self.values.append(pct)


def run_kind(
    name: str, definition: dict[str, Any], inputs: dict[str, Any], workdir: Path, progress=None
) -> dict[str, Any]:
    """Validates `definition` (URL parameters get a placeholder URL) and runs kind `name` in
    process on local `inputs`."""
    kind = get(name)
    assert kind is not None, name
    full = dict(definition)
    for param in kind.url_params:
        if param.name in inputs:
            local = inputs[param.name]
            placeholder = "http://origin.test/file"
            full[param.name] = (
                [placeholder] * len(local) if isinstance(local, list) else placeholder
            )
    params, errors = kind.validate(full)
    assert not errors, errors
    workdir.mkdir(parents=True, exist_ok=True)
    local = {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in inputs.items()}
    job = Job(params, local, workdir)
    if progress is not None:
        job.progress = progress
    return kind.run(job)


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    """The RGB colour of one pixel."""
    return image.convert("RGB").getpixel(xy)  # type: ignore[return-value]


def near(color: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    """Whether two colours match within `tolerance` per channel (JPEG is lossy)."""
    return all(abs(a - b) <= tolerance for a, b in zip(color, expected, strict=True))


def late_audio_video(path: Path, *, seconds: float = 2.0, audio_from: float = 1.0) -> Path:
    """A small video whose loud sound (0.9) only starts at `audio_from` seconds: the audio
    stream begins later than the file."""
    rate, fps = 22050, 10
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        samples = round((seconds - audio_from) * rate)
        signal = 0.9 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)
        start = round(audio_from * rate)
        for at in range(0, samples, 2048):
            data = np.round(signal[None, at : at + 2048] * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start + at, Fraction(1, rate)
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path


def damaged(good: Path, out: Path, spots: tuple[float, ...], size: int = 64) -> Path:
    """A copy of `good` with `size` random bytes written at each of `spots` (fractions of its
    length): a file with a few corrupt frames in the middle."""
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(3)
    for spot in spots:
        at = int(len(data) * spot)
        data[at : at + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out
