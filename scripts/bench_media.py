"""Benchmark of the video kinds against the `ffmpeg` command line doing the same job.

Generates inputs (H.264 + AAC in MP4, 2-second GOPs, moving test pattern with grain) of a few
sizes, then runs every video kind on each in a warm worker process, as the server does (the
worker is started and warmed up on a tiny input first, so neither start-up nor imports are
timed), and the equivalent `ffmpeg`/`ffprobe` command (which does pay its process start-up),
in the same run, alternating the two. Prints the best wall times, their ratio (the targets of
issue 3 are on it), the ratio of CPU times (all threads; steadier than wall time when other work
shares the machine) and each worker's peak memory (a fresh worker per job, so the peak is that
job's).

    scripts/bench_media            # 360p 10 s, 720p 30 s, 1080p 60 s
    scripts/bench_media --quick    # 180p 4 s, 360p 8 s, and a 1080p 3 s convert for memory

Without `ffmpeg` on the PATH the comparison is skipped and only our times are printed. This is a
benchmark, not a test: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FULL = [("360p", 640, 360, 10), ("720p", 1280, 720, 30), ("1080p", 1920, 1080, 60)]
QUICK = [("180p", 320, 180, 4), ("360p", 640, 360, 8)]
QUICK_MEMORY = ("1080p", 1920, 1080, 3)
FPS = 30
GOP_SECONDS = 2
# Issue 3's targets, as the ratio of our wall time to FFmpeg's.
TARGETS = {"video.convert": 1.05, "video.thumb": 0.8, "video.strip": 0.8}
MEMORY_TARGET_MB = 400
LOOKAHEAD = [40]  # video.convert's x264 rc-lookahead, read from a child at start
# ffmpeg's `reverse` filter holds every frame in memory: skip it past this many bytes.
FFMPEG_REVERSE_LIMIT = 1 << 30


# --- inputs --------------------------------------------------------------------------------


def make_input(folder: Path, label: str, width: int, height: int, seconds: int) -> Path:
    """An MP4 (H.264 veryfast crf 20 with B-frames, AAC) of a moving test pattern with grain,
    made once and kept in `folder`."""
    import av

    path = folder / f"{label}-{width}x{height}-{seconds}s.mp4"
    if path.exists():
        return path
    part = path.with_suffix(".part.mp4")
    video_src = av.open(
        f"testsrc2=size={width}x{height}:rate={FPS}:duration={seconds},noise=alls=6:allf=t",
        format="lavfi",
    )
    audio_src = av.open(f"sine=frequency=440:sample_rate=48000:duration={seconds}", format="lavfi")
    with av.open(str(part), "w", options={"movflags": "+faststart"}) as out:
        vs = out.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "20"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.gop_size = FPS * GOP_SECONDS
        aus = out.add_stream("aac", rate=48000)
        aus.layout, aus.bit_rate = "stereo", 128000
        audio_frames = audio_src.decode(audio=0)
        audio_time = 0.0
        for frame in video_src.decode(video=0):
            t = float(frame.pts * frame.time_base)
            while audio_time <= t:  # interleave: audio up to the video frame's time
                audio = next(audio_frames, None)
                if audio is None:
                    audio_time = float("inf")
                    break
                audio.pts = None
                out.mux(aus.encode(audio))
                audio_time += audio.samples / 48000
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(vs.encode(frame))
        for audio in audio_frames:
            audio.pts = None
            out.mux(aus.encode(audio))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    video_src.close()
    audio_src.close()
    part.rename(path)
    return path


def versions() -> tuple[str, int]:
    """PyAV's versions, and the x264 look-ahead video.convert uses (for the same settings)."""
    import av

    from tasks.video_convert import RC_LOOKAHEAD

    libavcodec = ".".join(map(str, av.library_versions["libavcodec"]))
    return f"PyAV {av.__version__} (libavcodec {libavcodec}),", RC_LOOKAHEAD


# --- our side: a warm worker ---------------------------------------------------------------


def _worker(conn: Any) -> None:
    from tasks import registry
    from tasks.declare import Job

    kinds = registry()
    while True:
        message = conn.recv()
        if message is None:
            return
        name, params, source, workdir = message
        kind = kinds[name]
        checked, errors = kind.validate({"url": "http://bench.invalid/input", **params})
        if errors:
            conn.send((0.0, 0.0, None, f"bad parameters: {errors}", 0))
            continue
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        try:
            result, error = kind.run(Job(checked, {"url": source}, Path(workdir))), None
        except Exception as e:
            result, error = None, f"{type(e).__name__}: {e}"
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        conn.send((elapsed, cpu, result, error, after.ru_maxrss))


class Worker:
    """A worker process like the server's: started, warmed up, then given jobs."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()

    def run(self, name: str, params: dict, source: Path, workdir: Path) -> tuple[float, float, int]:
        """Wall time, CPU time (all threads) and the worker's peak RSS in kB so far."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.conn.send((name, params, str(source), str(workdir)))
        elapsed, cpu, _, error, peak_kb = self.conn.recv()
        if error:
            raise RuntimeError(f"{name} failed: {error}")
        return elapsed, cpu, peak_kb

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(5)


# --- the ffmpeg side -----------------------------------------------------------------------


def run_command(argv: list[str]) -> tuple[float, float, int]:
    """Wall time (process start-up included), CPU time and peak RSS in kB of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {stderr[-500:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def ff(*args: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-v", "error", "-y", *args]


def x264_args(crf: int = 23, gop: int = 250, max_kbps: int = 3000) -> list[str]:
    return [
        "-c:v", "libx264", "-crf", str(crf), "-maxrate", f"{max_kbps}k",
        "-bufsize", f"{2 * max_kbps}k", "-g", str(gop), "-pix_fmt", "yuv420p",
        "-rc-lookahead", str(LOOKAHEAD[0]),
    ]  # fmt: skip


# --- jobs ----------------------------------------------------------------------------------


@dataclass
class Job:
    """One kind run and the FFmpeg command line(s) doing the same job."""

    kind: str
    label: str
    params: dict
    commands: dict[str, list[str]] = field(default_factory=dict)
    repeat: int = 3
    memory_mb: float = 0.0
    ours: float = float("inf")  # best wall time
    our_cpu: float = float("inf")
    theirs: dict[str, float] = field(default_factory=dict)
    their_cpu: dict[str, float] = field(default_factory=dict)
    their_memory_mb: float = 0.0


def jobs_for(source: Path, label: str, width: int, height: int, seconds: int, out: Path) -> list:
    """The jobs on one input, each with the FFmpeg command line(s) doing the same."""
    src = str(source)
    t = round(seconds * 0.37 + 0.5 / FPS, 3)  # mid-GOP: the exact frame needs decoding forward
    small = (640, round(640 * height / width / 2) * 2)
    jpeg = ["-frames:v", "1", "-q:v", "5"]
    aac = ["-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-movflags", "+faststart"]
    probe = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", src]
    # Two ways to make a strip with ffmpeg: ten seeking inputs side by side, or every frame
    # through fps+tile. The faster one is compared.
    strip_times = [i * (seconds - 1 / FPS) / 9 for i in range(10)]
    seeking: list[str] = []
    for st in strip_times:
        seeking += ["-ss", f"{st:.3f}", "-i", src]
    chains = [f"[{i}:v]trim=end_frame=1,scale=-2:90[v{i}]" for i in range(10)]
    hstack = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(10)) + "hstack=inputs=10"
    tile = f"fps=10/{seconds},scale=-2:90,tile=10x1"
    scale = f"scale={small[0]}:-2"
    to_small = f" to {small[0]}x{small[1]}"
    long = seconds * width * height > 30 * 1280 * 720
    reps = 2 if long else 3
    jobs = [
        Job("video.info", label, {}, {"ffprobe": probe}, repeat=5),
        Job(
            "video.thumb",
            label,
            {"time": t},
            {"ffmpeg -ss": ff("-ss", str(t), "-i", src, *jpeg, str(out / "ff-thumb.jpg"))},
            repeat=5,
        ),
        Job(
            "video.thumb",
            label + " w=320",
            {"time": t, "width": 320},
            {
                "ffmpeg -ss": ff(
                    "-ss", str(t), "-i", src, "-vf", "scale=320:-2", *jpeg, str(out / "ff-t.jpg")
                )
            },
            repeat=5,
        ),
        Job(
            "video.strip",
            label,
            {"height": 90, "count": 10},
            {
                "ffmpeg -ss x10 hstack": ff(
                    *seeking, "-filter_complex", hstack, *jpeg, str(out / "ff-strip.jpg")
                ),
                "ffmpeg fps+tile": ff("-i", src, "-vf", tile, *jpeg, str(out / "ff-strip2.jpg")),
            },
        ),
        Job(
            "video.convert",
            label,
            {},
            {"ffmpeg libx264": ff("-i", src, *x264_args(), *aac, str(out / "ff-convert.mp4"))},
            repeat=reps,
        ),
        Job(
            "video.convert",
            label + to_small,
            {"width": small[0]},
            {
                "ffmpeg libx264": ff(
                    "-i", src, "-vf", scale, *x264_args(), *aac, str(out / "ff-convert.mp4")
                )
            },
            repeat=reps,
        ),
    ]
    reverse = {}
    if seconds * FPS * small[0] * small[1] * 3 // 2 < FFMPEG_REVERSE_LIMIT:
        reverse["ffmpeg reverse"] = ff(
            "-i", src, "-an", "-vf", scale + ",reverse", *x264_args(), "-movflags", "+faststart",
            str(out / "ff-reverse.mp4"),
        )  # fmt: skip
    params = {"width": small[0], "video_bitrate": 3000}
    jobs.append(Job("video.reverse", label + to_small, params, reverse, repeat=reps))
    return jobs


def measure(job: Job, source: Path, warmup: Path, out: Path, use_ffmpeg: bool) -> None:
    worker = Worker()
    try:
        warm = {k: v for k, v in job.params.items() if k not in ("time", "start", "end")}
        worker.run(job.kind, warm, warmup, out / "warmup")
        for i in range(job.repeat):
            # Alternate who goes first, so a neighbour's load does not always fall on one side.
            sides = ["ours", "theirs"] if i % 2 == 0 else ["theirs", "ours"]
            for side in sides:
                if side == "ours":
                    elapsed, cpu, peak_kb = worker.run(job.kind, job.params, source, out / "ours")
                    job.ours, job.our_cpu = min(job.ours, elapsed), min(job.our_cpu, cpu)
                    job.memory_mb = peak_kb / 1024
                    continue
                if not use_ffmpeg:
                    continue
                for name, argv in job.commands.items():
                    elapsed, cpu, peak_kb = run_command(argv)
                    job.theirs[name] = min(job.theirs.get(name, float("inf")), elapsed)
                    job.their_cpu[name] = min(job.their_cpu.get(name, float("inf")), cpu)
                    job.their_memory_mb = max(job.their_memory_mb, peak_kb / 1024)
    finally:
        worker.close()


def report_line(job: Job) -> str:
    line = f"{job.kind:14} {job.label:26} ours {job.ours:7.3f}s  peak {job.memory_mb:6.0f} MB"
    if job.theirs:
        best_name = min(job.theirs, key=job.theirs.__getitem__)
        best = job.theirs[best_name]
        ratio = job.ours / best
        target = TARGETS.get(job.kind)
        verdict = "" if target is None else ("  ok" if ratio <= target else f"  OVER {target}x")
        others = "".join(
            f"  [{name} {secs:.3f}s]" for name, secs in job.theirs.items() if name != best_name
        )
        cpu_ratio = job.our_cpu / job.their_cpu[best_name] if job.their_cpu[best_name] else 0
        line += (
            f" | {best_name} {best:7.3f}s  peak {job.their_memory_mb:6.0f} MB"
            f" | ratio {ratio:5.2f}x{verdict} (cpu {cpu_ratio:4.2f}x){others}"
        )
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs only")
    parser.add_argument(
        "--inputs",
        type=Path,
        default=Path(tempfile.gettempdir()) / "taskstream-bench-inputs",
        help="folder where the generated inputs are kept between runs",
    )
    parser.add_argument("--only", help="run only this kind (e.g. video.convert)")
    args = parser.parse_args()

    use_ffmpeg = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
    args.inputs.mkdir(parents=True, exist_ok=True)
    # This process never imports PyAV: the children it starts (workers, ffmpeg) inherit its
    # memory size as the floor of their peak RSS, so it stays small. Inputs are made in a child.
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        text, LOOKAHEAD[0] = pool.apply(versions)
        print(text, f"{os.cpu_count()} CPUs")
    if use_ffmpeg:
        version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
        print(version.splitlines()[0])
    else:
        print("ffmpeg is not installed: skipping the comparison, printing our times only")

    sizes = QUICK if args.quick else FULL
    inputs = []
    with spawn.Pool(1) as pool:
        warmup = pool.apply(make_input, (args.inputs, "warmup", 160, 90, 1))
        for label, width, height, seconds in sizes:
            start = time.perf_counter()
            path = pool.apply(make_input, (args.inputs, label, width, height, seconds))
            inputs.append((path, label, width, height, seconds))
            took = time.perf_counter() - start
            print(f"input {label} {width}x{height} {seconds} s ready ({took:.1f} s)")
        if args.quick:
            memory_input = pool.apply(make_input, (args.inputs, *QUICK_MEMORY))
    print()
    results: list[Job] = []
    with tempfile.TemporaryDirectory(prefix="taskstream-bench-") as tmp:
        out = Path(tmp)
        for source, label, width, height, seconds in inputs:
            for job in jobs_for(source, f"{label} {seconds}s", width, height, seconds, out):
                if args.only and job.kind != args.only:
                    continue
                measure(job, source, warmup, out, use_ffmpeg and bool(job.commands))
                print(report_line(job), flush=True)
                results.append(job)
        if args.quick and (not args.only or args.only == "video.convert"):
            label, width, height, seconds = QUICK_MEMORY
            job = jobs_for(memory_input, f"{label} {seconds}s", width, height, seconds, out)[4]
            measure(job, memory_input, warmup, out, use_ffmpeg)
            print(report_line(job), flush=True)
            results.append(job)

    print()
    for job in results:
        if (
            job.kind == "video.convert"
            and job.label.startswith("1080p")
            and " to " not in job.label
        ):
            verdict = "ok" if job.memory_mb < MEMORY_TARGET_MB else "OVER"
            print(
                f"1080p convert worker peak memory: {job.memory_mb:.0f} MB "
                f"(target < {MEMORY_TARGET_MB} MB) {verdict}"
            )
    if use_ffmpeg:
        for kind, target in TARGETS.items():
            ratios = [
                j.ours / min(j.theirs.values()) for j in results if j.kind == kind and j.theirs
            ]
            if ratios:
                worst = max(ratios)
                verdict = "ok" if worst <= target else "OVER"
                print(f"{kind}: worst ratio {worst:.2f}x (target <= {target}x) {verdict}")


if __name__ == "__main__":
    main()
