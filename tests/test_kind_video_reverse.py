"""`video.reverse`: every frame, last first, at the requested size, with memory bounded to one
GOP of output-sized frames (spilled to a temporary file past a budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tasks import video_reverse
from tasks.declare import Job
from tasks.media import DecodeGuard
from tasks.video_reverse import KIND, ChunkBuffer
from tests.conftest import Api, Origin, assert_status
from tests.mediagen import video_levels, video_sample


def reverse(name: str, folder: Path, **params: Any) -> tuple[dict, Path, list]:
    checked, errors = KIND.validate({"url": "http://example.com/v", **params})
    assert not errors, errors
    workdir = folder / f"run{len(list(folder.iterdir()))}"
    workdir.mkdir()
    calls: list = []
    job = Job(
        checked, {"url": str(video_sample(name))}, workdir, lambda p, partial=None: calls.append(p)
    )
    result = KIND.run(job)
    return result, workdir / result["output"], calls


def frames_of(path: Path) -> tuple[tuple[int, int], list[float], int, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return (
            (frames[0].width, frames[0].height),
            [float(f.pts * stream.time_base) for f in frames],
            len(container.streams.audio),
            stream.codec_context.name,
        )


@pytest.mark.parametrize(
    "name",
    ["h264.mp4", "vp9.mkv", "vp9.webm", "mpeg4.avi", "mpeg2.mpg", "long_gop.mp4", "odd.mkv"],
)
def test_every_frame_last_first(name: str, tmp_path: Path) -> None:
    result, path, calls = reverse(name, tmp_path)
    source = video_levels(video_sample(name))
    assert video_levels(path) == pytest.approx(source[::-1], abs=3)
    _, times, audio_streams, codec = frames_of(path)
    assert codec == "h264" and audio_streams == 0
    assert np.all(np.diff(times) > 0)
    assert result["duration"] == pytest.approx(len(source) / 25, abs=0.06)
    assert result["video_codec"] == "h264" and result["audio_codec"] is None
    assert calls[-1] == 100.0 and calls == sorted(calls)
    assert set(result) - {"output"} == {o.name for o in KIND.outputs}


def test_size_crop_and_values(tmp_path: Path) -> None:
    result, path, _ = reverse("h264.mp4", tmp_path, width=80)
    assert frames_of(path)[0] == (80, 60) == (result["width"], result["height"])
    assert (result["original_width"], result["original_height"]) == (160, 120)
    _, path, _ = reverse("h264.mp4", tmp_path, width=50, height=50, crop=True)
    assert frames_of(path)[0] == (50, 50)
    _, path, _ = reverse("odd.mkv", tmp_path, height=101)
    assert frames_of(path)[0] == (180, 100)  # 179.8 x 101, even for H.264


def test_rotation_is_honoured(tmp_path: Path) -> None:
    result, path, _ = reverse("rotated.mov", tmp_path)
    assert (result["width"], result["height"]) == (120, 160) and result["rotation"] == 0.0
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 0
        red = frame.to_ndarray(format="rgb24")[:, :, 0].astype(float)
    assert red[0].mean() > 200 and red[-1].mean() < 60


def test_variable_frame_rate(tmp_path: Path) -> None:
    _, path, _ = reverse("vfr.mp4", tmp_path)
    source = video_levels(video_sample("vfr.mp4"))
    assert video_levels(path) == pytest.approx(source[::-1], abs=3)


def test_spilling_chunks_to_disk_gives_the_same_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = []
    original = ChunkBuffer.__init__

    def tiny(self, size, folder, budget=0):
        original(self, size, folder, budget=3 * size[0] * size[1] * 3 // 2)  # 3 frames
        chunks.append(self)

    spills = []
    spill = ChunkBuffer._spill

    def counting(self):
        spills.append(len(self.frames))
        spill(self)

    monkeypatch.setattr(ChunkBuffer, "__init__", tiny)
    monkeypatch.setattr(ChunkBuffer, "_spill", counting)
    _, path, _ = reverse("long_gop.mp4", tmp_path, width=80)
    assert len(chunks) == 2 and len(spills) > 90  # two GOPs of 50 frames, all but 3 spilled
    assert all(chunk.file is None for chunk in chunks)  # temporary files closed
    assert not list(path.parent.glob("tmp*"))
    source = video_levels(video_sample("long_gop.mp4"))
    assert video_levels(path) == pytest.approx(source[::-1], abs=4)


def test_chunk_buffer_keeps_at_most_its_budget_in_memory(tmp_path: Path) -> None:
    size = (32, 16)
    chunk = ChunkBuffer(size, tmp_path, budget=4 * 32 * 16 * 3 // 2)
    frames = []
    for i in range(10):
        frame = av.VideoFrame.from_ndarray(
            np.full((16 * 3 // 2, 32), i * 20, dtype=np.uint8), format="yuv420p"
        )
        frames.append(frame)
        chunk.append(i, frame)
        assert len(chunk.frames) <= 4
    assert chunk.file is not None and len(chunk) == 10
    back = list(chunk.reversed())
    assert [pts for pts, _ in back] == list(range(9, -1, -1))
    assert [int(f.to_ndarray()[0, 0]) for _, f in back] == [i * 20 for i in range(9, -1, -1)]
    chunk.clear()
    assert chunk.file is None and len(chunk) == 0


def test_memory_holds_one_gop_at_most(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peak = []
    original = ChunkBuffer.append

    def watch(self, pts, frame):
        original(self, pts, frame)
        peak.append(len(self))

    monkeypatch.setattr(ChunkBuffer, "append", watch)
    reverse("long_gop.mp4", tmp_path)  # keyframes every 50 frames, 100 frames
    assert max(peak) == 50


def test_video_bitrate_defaults_to_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    original = video_reverse.add_h264

    def spy(output, size, rate, time_base, crf, gop, max_kbps):
        seen.append((crf, gop, max_kbps))
        return original(output, size, rate, time_base, crf, gop, max_kbps)

    monkeypatch.setattr(video_reverse, "add_h264", spy)
    reverse("noisy.mp4", tmp_path)
    reverse("noisy.mp4", tmp_path, video_bitrate=200, crf=30, gop=12)
    with av.open(str(video_sample("noisy.mp4"))) as container:
        source_kbps = round(container.streams.video[0].bit_rate / 1000)
    assert seen == [(23, 250, source_kbps), (30, 12, 200)]


def test_gop(tmp_path: Path) -> None:
    _, path, _ = reverse("long_gop.mp4", tmp_path, gop=8)
    with av.open(str(path)) as container:
        keys = [i for i, f in enumerate(container.decode(video=0)) if f.key_frame]
    assert max(np.diff([*keys, 100])) <= 8


async def test_through_the_server(api: Api, origin: Origin) -> None:
    url = origin.add("clip.webm", video_sample("vp9.webm").read_bytes())
    status = await api.run({"task_name": "video.reverse", "url": url, "height": 60})
    assert_status(status, "success")
    result = status["result"]
    resp = await api.client.session.get(result["output"])
    assert resp.status == 200
    path = Path(api.config.data_dir) / "reversed.mp4"
    path.write_bytes(await resp.read())
    assert frames_of(path)[0] == (80, 60)
    source = video_levels(video_sample("vp9.webm"))
    assert video_levels(path) == pytest.approx(source[::-1], abs=4)


def test_each_gop_is_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counted = []
    original = DecodeGuard.count

    def count(self, n=1):
        counted.append(n)
        original(self, n)

    monkeypatch.setattr(DecodeGuard, "count", count)
    reverse("long_gop.mp4", tmp_path)  # 100 frames, keyframes at 0 and 50
    # Every frame once, plus the next GOP's keyframe where a GOP ends (sent in case open-GOP
    # frames follow it); not the frames the decoder would buffer past it.
    assert sum(counted) <= 101
