"""Small real media generated with PyAV and Pillow for the tests: moving colour patterns with a
frame counter encoded in the picture, and tones whose frequency is known."""

from __future__ import annotations

import atexit
import shutil
import tempfile
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
    noise: int = 0,
) -> Path:
    """A video of `seconds` at `fps` in the container of `path`'s extension; frame `i` is
    `pattern(width, height, i)`. `frame_times` (seconds) makes a variable-frame-rate video
    instead; `options` go to the video encoder (libvpx-vp9 gets fast ones by default); `noise`
    adds that much random noise (seeded) to each frame, to make it costly to compress."""
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
        rng = np.random.default_rng(7)
        for i, pts in enumerate(stamps):
            picture = pattern(width, height, i)
            if noise:
                grain = rng.integers(-noise, noise + 1, picture.shape, dtype=np.int16)
                picture = np.clip(picture + grain, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
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


# Small videos shared by the video tests, made once per test session on first use: 160x120 (but
# for the odd sizes), 2 s at 25 fps, frame i drawn with `pattern(..., i)`.
VIDEO_SAMPLES: dict[str, dict] = {
    "h264.mp4": {"codec": "libx264", "audio_codec": "aac", "gop": 10},
    "vp9.mkv": {"codec": "libvpx-vp9", "audio_codec": "libopus", "gop": 10},
    "vp9.webm": {"codec": "libvpx-vp9", "audio_codec": "libopus", "gop": 12},
    # MP2 rather than MP3 or AAC: the AVI muxer shifts video by the encoder delay of those.
    "mpeg4.avi": {"codec": "mpeg4", "audio_codec": "mp2", "gop": 10, "options": {"b": "2M"}},
    "mpeg2.mpg": {"codec": "mpeg2video", "audio_codec": "mp2", "gop": 10, "options": {"b": "2M"}},
    "rotated.mov": {"codec": "libx264", "audio_codec": "aac", "rotation": 90},
    "rotated270.mp4": {"codec": "libx264", "audio_codec": None, "rotation": 270, "seconds": 0.4},
    "rotated180.mp4": {"codec": "libx264", "audio_codec": None, "rotation": 180, "seconds": 0.4},
    "odd.mkv": {
        "codec": "libvpx-vp9",
        "audio_codec": None,
        "width": 721,
        "height": 405,
        "seconds": 1.0,
    },
    "odd.mp4": {
        "codec": "libx264",
        "audio_codec": None,
        "width": 721,
        "height": 405,
        "pix_fmt": "yuv444p",
        "seconds": 0.4,
        "options": {"preset": "ultrafast"},
    },
    "vfr.mp4": {"codec": "libx264", "audio_codec": None, "frame_times": vfr_times(2.0)},
    "mono22k.mp4": {"codec": "libx264", "audio_codec": "aac", "channels": 1, "audio_rate": 22050},
    # Fixed B-frames (x264 turns them into P-frames on the pattern's fades otherwise), and
    # keyframes exactly every 50 frames.
    "long_gop.mp4": {
        "codec": "libx264",
        "audio_codec": None,
        "seconds": 4.0,
        "gop": 50,
        "options": {"x264-params": "b-adapt=0:weightp=0:scenecut=0"},
    },
    "noisy.mp4": {"codec": "libx264", "audio_codec": None, "seconds": 3.0, "noise": 40},
    "alpha.webm": {
        "codec": "libvpx-vp9",
        "audio_codec": None,
        "pix_fmt": "yuva420p",
        "seconds": 0.4,
    },
    "alpha.mov": {"codec": "png", "audio_codec": None, "pix_fmt": "rgba", "seconds": 0.4},
}
_samples_dir: Path | None = None


def video_sample(name: str) -> Path:
    """The path of the sample video `name` (a key of VIDEO_SAMPLES), made on first use."""
    global _samples_dir
    if _samples_dir is None:
        _samples_dir = Path(tempfile.mkdtemp(prefix="taskstream-videos-"))
        atexit.register(shutil.rmtree, _samples_dir, True)
    path = _samples_dir / name
    if not path.exists():
        spec = {"width": 160, "height": 120, **VIDEO_SAMPLES[name]}
        make_video(path.with_name("part-" + name), **spec).rename(path)
    return path


def frame_index(seconds: float, fps: int = 25) -> int:
    """The index of the frame shown at `seconds` in a constant-rate sample."""
    return int(seconds * fps + 1e-9)


def picture_level(picture: np.ndarray) -> float:
    """The mean green level of an RGB picture: `level(i)` for pattern frame i, give or take
    the codecs' rounding (a few units; frames next to each other differ by 7)."""
    return float(picture[:, :, 1].mean())


def video_levels(path: Path) -> list[float]:
    """`picture_level` of every frame of a video, in presentation order."""
    with av.open(str(path)) as container:
        return [
            picture_level(frame.to_ndarray(format="rgb24"))
            for frame in container.decode(container.streams.video[0])
        ]


def image_level(path: Path) -> float:
    """`picture_level` of an image file."""
    with Image.open(path) as image:
        return picture_level(np.asarray(image.convert("RGB")))
