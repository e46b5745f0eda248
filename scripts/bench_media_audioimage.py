"""Times audio.waveform and image.strip in process (warm: after a warm-up run, as in a worker
that has already run a task) against the `ffmpeg` command doing the same job, in the same run,
and prints the ratio of wall times (ours / ffmpeg). ffmpeg pays its process start-up; a warm
worker does not, which is the comparison the targets are set for:

    audio.waveform  <= 0.7 x  ffmpeg -filter_complex showwavespic
    image.strip     <= 0.5 x  ffmpeg -vf scale,pad|crop,tile

Inputs are generated first (60 s of audio in four codecs, a 30 s video with sound, photo-like
JPEGs at 1080p and 720p, PNGs). Without ffmpeg on the PATH only our times are printed.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks import get  # noqa: E402
from tasks.declare import Job  # noqa: E402
from tests.media_audioimage import tone  # noqa: E402
from tests.mediagen import make_video  # noqa: E402

TARGETS = {"audio.waveform": 0.7, "image.strip": 0.5}


def photo(path: Path, width: int, height: int, seed: int) -> Path:
    """A photo-like picture: smooth gradients, a few shapes and sensor-like noise (so the JPEG
    or PNG is about as costly to decode as a real photo of that size)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / width * 3 + seed)
    g = 128 + 100 * np.cos(y / height * 4 + seed / 2)
    b = 128 + 80 * np.sin((x + y) / (width + height) * 6)
    pixels = np.stack([r, g, b], -1)
    for _ in range(12):
        cx, cy, rad = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, height / 4)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < rad**2
        pixels[mask] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    if path.suffix == ".png":
        image.save(path, optimize=False)
    else:
        image.save(path, quality=88)
    return path


def median_time(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ours(kind_name: str, definition: dict, inputs: dict, workdir: Path, runs: int) -> float:
    kind = get(kind_name)
    assert kind is not None
    params, errors = kind.validate(definition)
    assert not errors, errors
    job = Job(params, inputs, workdir)
    kind.run(job)  # warm-up: imports, codec tables, first allocations
    return median_time(lambda: kind.run(job), runs)


def theirs(command: list[str], runs: int) -> float:
    def run() -> None:
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)

    run()  # warm the page cache as ours was
    return median_time(run, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case (median)")
    parser.add_argument("--keep", type=Path, help="generate inputs into this folder and keep it")
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-audioimage-"))
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "work"
    work.mkdir(exist_ok=True)

    print("generating inputs ...", flush=True)
    audio = {
        "mp3 60s": tone(folder / "a.mp3", codec="libmp3lame", parts=((60.0, 0.6),), rate=44100),
        "aac 60s (m4a)": tone(folder / "a.m4a", codec="aac", parts=((60.0, 0.6),), rate=44100),
        "wav 60s": tone(folder / "a.wav", codec="pcm_s16le", parts=((60.0, 0.6),), rate=44100),
        "flac 60s": tone(folder / "a.flac", codec="flac", parts=((60.0, 0.6),), rate=44100),
        "mp3 10s": tone(folder / "s.mp3", codec="libmp3lame", parts=((10.0, 0.6),), rate=44100),
    }
    video = folder / "v.mp4"
    if not video.exists():
        make_video(video, width=640, height=360, seconds=30.0, fps=25)
    audio["mp4 30s video+aac"] = video
    strips: dict[str, tuple[list[Path], dict]] = {}
    for label, (w, h, ext, count) in {
        "10 x 1080p jpeg": (1920, 1080, "jpg", 10),
        "20 x 720p jpeg": (1280, 720, "jpg", 20),
        "6 x 1080p png": (1920, 1080, "png", 6),
    }.items():
        paths = []
        for i in range(count):
            path = folder / f"{w}x{h}-{i:03d}.{ext}"
            if not path.exists():
                photo(path, w, h, i)
            paths.append(path)
        strips[label] = (paths, {"width": 160, "height": 90, "wrap": 5})

    rows = []
    for label, path in audio.items():
        definition = {"url": "http://bench/a", "width": 1024, "height": 60, "format": "png"}
        mine = ours("audio.waveform", definition, {"url": str(path)}, work, args.runs)
        other = None
        if ffmpeg:
            command = [
                ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(path),
                "-filter_complex", "[0:a:0]showwavespic=s=1024x60:colors=black",
                "-frames:v", "1", str(work / "ffmpeg-wave.png"),
            ]  # fmt: skip
            other = theirs(command, args.runs)
        rows.append(("audio.waveform", label, mine, other))
    for label, (paths, cell) in strips.items():
        for crop in (False, True):
            definition = {"urls": ["http://bench/i"] * len(paths), "crop": crop, **cell}
            mine = ours("image.strip", definition, {"urls": [str(p) for p in paths]}, work, 5)
            other = None
            if ffmpeg:
                w, h = cell["width"], cell["height"]
                fit = (
                    f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}"
                    if crop
                    else f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
                    f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2"
                )
                rows_needed = -(-len(paths) // cell["wrap"])
                pattern = str(paths[0]).rsplit("-", 1)[0] + "-%03d." + paths[0].suffix[1:]
                command = [
                    ffmpeg, "-nostdin", "-v", "error", "-y", "-i", pattern,
                    "-vf", f"{fit},tile={cell['wrap']}x{rows_needed}",
                    "-frames:v", "1", "-q:v", "3", str(work / "ffmpeg-strip.jpg"),
                ]  # fmt: skip
                other = theirs(command, 5)
            rows.append(("image.strip", f"{label}{' crop' if crop else ''}", mine, other))

    print()
    print(f"{'kind':16} {'input':26} {'ours ms':>8} {'ffmpeg ms':>9} {'ratio':>6}  target")
    worst: dict[str, float] = {}
    for kind, label, mine, other in rows:
        if other:
            ratio = mine / other
            worst[kind] = max(worst.get(kind, 0.0), ratio)
            verdict = "ok" if ratio <= TARGETS[kind] else "OVER"
            print(
                f"{kind:16} {label:26} {mine * 1000:8.1f} {other * 1000:9.1f} {ratio:6.2f}  "
                f"<= {TARGETS[kind]} {verdict}"
            )
        else:
            print(f"{kind:16} {label:26} {mine * 1000:8.1f} {'-':>9} {'-':>6}")
    if not ffmpeg:
        print("\nffmpeg is not installed: no comparison (apt-get install ffmpeg)")
    for kind, ratio in worst.items():
        print(f"worst {kind}: {ratio:.2f} x ffmpeg (target {TARGETS[kind]})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak:.0f} MB")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
