"""Times audio.waveform and image.strip in process (warm: after a warm-up run, as in a worker
that has already run a task) against the `ffmpeg` command doing the same job, in the same run,
and prints the ratio of wall times (ours / ffmpeg). ffmpeg pays its process start-up; a warm
worker does not, which is the comparison the targets are set for:

    audio.waveform  <= 0.7 x  ffmpeg -filter_complex showwavespic
    image.strip     <= 0.5 x  ffmpeg -vf scale,pad|crop,tile

Our runs and ffmpeg's alternate, so a machine busy with something else slows both alike; the
ratio of the medians and the ratio of the best runs are printed. Inputs are generated first
(60 s of audio in four codecs, a 30 s video with sound, a 10 min MP3, photo-like JPEGs at 1080p
and 720p, PNGs). Without ffmpeg on the PATH only our times are printed.
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
from dataclasses import dataclass
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


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@dataclass
class Row:
    kind: str
    label: str
    ours: list[float]
    theirs: list[float]


def compare(kind_name: str, label: str, definition: dict, inputs: dict, work: Path,
            command: list[str] | None, runs: int) -> Row:  # fmt: skip
    """Runs the kind (warm) and the ffmpeg command `runs` times each, alternating."""
    kind = get(kind_name)
    assert kind is not None
    params, errors = kind.validate(definition)
    assert not errors, errors
    job = Job(params, inputs, work)
    kind.run(job)  # warm-up: imports, codec tables, first allocations

    def ffmpeg() -> None:
        assert command is not None
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)

    if command:
        ffmpeg()  # the same warm page cache for both
    row = Row(kind_name, label, [], [])
    for _ in range(runs):
        row.ours.append(timed(lambda: kind.run(job)))
        if command:
            row.theirs.append(timed(ffmpeg))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case")
    parser.add_argument("--keep", type=Path, help="generate inputs into this folder and keep it")
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-audioimage-"))
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "work"
    work.mkdir(exist_ok=True)

    print("generating inputs ...", flush=True)

    def audio(name: str, codec: str, seconds: float) -> Path:
        path = folder / name
        if not path.exists():
            tone(path, codec=codec, parts=((seconds, 0.6),), rate=44100)
        return path

    sounds = {
        "mp3 60s": audio("a.mp3", "libmp3lame", 60.0),
        "aac 60s (m4a)": audio("a.m4a", "aac", 60.0),
        "wav 60s": audio("a.wav", "pcm_s16le", 60.0),
        "flac 60s": audio("a.flac", "flac", 60.0),
        "mp3 10s": audio("s.mp3", "libmp3lame", 10.0),
        "mp3 10min": audio("long.mp3", "libmp3lame", 600.0),
    }
    video = folder / "v.mp4"
    if not video.exists():
        make_video(video, width=640, height=360, seconds=30.0, fps=25)
    sounds["mp4 30s video+aac"] = video
    pictures: dict[str, list[Path]] = {}
    for label, (w, h, ext, count) in {
        "10 x 1080p jpeg": (1920, 1080, "jpg", 10),
        "20 x 720p jpeg": (1280, 720, "jpg", 20),
        "6 x 1080p png": (1920, 1080, "png", 6),
    }.items():
        pictures[label] = []
        for i in range(count):
            path = folder / f"{w}x{h}-{i:03d}.{ext}"
            if not path.exists():
                photo(path, w, h, i)
            pictures[label].append(path)

    rows = []
    for label, path in sounds.items():
        definition = {"url": "http://bench/a", "width": 1024, "height": 60, "format": "png"}
        command = None
        if ffmpeg:
            command = [
                ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(path),
                "-filter_complex", "[0:a:0]showwavespic=s=1024x60:colors=black",
                "-frames:v", "1", str(work / "ffmpeg-wave.png"),
            ]  # fmt: skip
        runs = max(3, args.runs // 2) if "min" in label else args.runs
        row = compare("audio.waveform", label, definition, {"url": str(path)}, work, command, runs)
        rows.append(row)
    cell, wrap = (160, 90), 5
    for label, paths in pictures.items():
        for crop in (False, True):
            definition = {
                "urls": ["http://bench/i"] * len(paths),
                "width": cell[0],
                "height": cell[1],
                "wrap": wrap,
                "crop": crop,
            }
            command = None
            if ffmpeg:
                w, h = cell
                fit = (
                    f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}"
                    if crop
                    else f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
                    f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2"
                )
                pattern = str(paths[0]).rsplit("-", 1)[0] + "-%03d" + paths[0].suffix
                command = [
                    ffmpeg, "-nostdin", "-v", "error", "-y", "-i", pattern,
                    "-vf", f"{fit},tile={wrap}x{-(-len(paths) // wrap)}",
                    "-frames:v", "1", "-q:v", "3", str(work / "ffmpeg-strip.jpg"),
                ]  # fmt: skip
            inputs = {"urls": [str(p) for p in paths]}
            name = f"{label}{' crop' if crop else ''}"
            rows.append(compare("image.strip", name, definition, inputs, work, command, args.runs))

    print()
    print(
        f"{'kind':15} {'input':24} {'ours ms':>8} {'ffmpeg ms':>9} {'ratio':>6} {'best':>6}"
        f"  target (median)"
    )
    worst: dict[str, float] = {}
    for row in rows:
        mine = statistics.median(row.ours)
        if row.theirs:
            other = statistics.median(row.theirs)
            ratio, best = mine / other, min(row.ours) / min(row.theirs)
            worst[row.kind] = max(worst.get(row.kind, 0.0), ratio)
            verdict = "ok" if ratio <= TARGETS[row.kind] else "OVER"
            print(
                f"{row.kind:15} {row.label:24} {mine * 1000:8.1f} {other * 1000:9.1f} "
                f"{ratio:6.2f} {best:6.2f}  <= {TARGETS[row.kind]} {verdict}"
            )
        else:
            print(f"{row.kind:15} {row.label:24} {mine * 1000:8.1f} {'-':>9}")
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
