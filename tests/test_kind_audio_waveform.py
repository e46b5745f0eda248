"""audio.waveform: every parameter, several codecs and containers, a video's audio, broken
inputs, and one run through the real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.audio import peaks, select_audio
from tasks.declare import TaskError
from tasks.media import open_media
from tests.conftest import Api, Origin, assert_status
from tests.media_audioimage import (
    Progress,
    broken_files,
    damaged,
    late_audio_video,
    run_kind,
    tone,
)
from tests.mediagen import make_video

LOUD_QUIET = ((1.0, 0.9), (1.0, 0.0))


def rows_of(image: Image.Image, x: int, color: tuple[int, int, int]) -> list[int]:
    """The rows of column `x` painted `color`."""
    pixels = np.asarray(image.convert("RGB"))
    return [y for y in range(image.height) if tuple(pixels[y, x]) == color]


def waveform(tmp_path: Path, source: Path, **definition) -> tuple[dict, Image.Image]:
    definition.setdefault("format", "png")
    out = tmp_path / "out"
    result = run_kind("audio.waveform", definition, {"url": source}, out)
    with Image.open(out / result["output"]) as image:
        image.load()
    return result, image


@pytest.fixture(scope="module")
def loud_quiet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One loud second (amplitude 0.9), then one silent second."""
    return tone(tmp_path_factory.mktemp("wf") / "lq.wav", codec="pcm_s16le", parts=LOUD_QUIET)


def test_loud_column_spans_most_of_the_height_and_silence_is_a_thin_line(
    tmp_path: Path, loud_quiet: Path
) -> None:
    result, image = waveform(tmp_path, loud_quiet, width=100, height=60)
    assert result == {
        "duration": 2.0,
        "width": 100,
        "height": 60,
        "content_type": "image/png",
        "output": "waveform.png",
    }
    assert image.size == (100, 60) and image.format == "PNG"
    black = (0, 0, 0)
    for x in (5, 25, 45):
        loud = rows_of(image, x, black)
        # amplitude 0.9 of a 60-pixel image: rows 3 to 56, contiguous
        assert loud == list(range(loud[0], loud[-1] + 1))
        assert 52 <= len(loud) <= 56 and loud[0] <= 4 and loud[-1] >= 55, loud
    for x in (55, 75, 99):
        assert rows_of(image, x, black) == [30], x  # a one-pixel line through the middle
    # everything else is the background
    pixels = np.asarray(image)
    assert set(map(tuple, pixels.reshape(-1, 3))) == {(0, 0, 0), (255, 255, 255)}


def test_defaults_are_a_1024x60_jpeg(tmp_path: Path, loud_quiet: Path) -> None:
    out = tmp_path / "out"
    result = run_kind("audio.waveform", {}, {"url": loud_quiet}, out)
    assert result["content_type"] == "image/jpeg" and result["output"].endswith(".jpg")
    assert (result["width"], result["height"]) == (1024, 60)
    with Image.open(out / result["output"]) as image:
        assert image.format == "JPEG" and image.size == (1024, 60)
        pixels = np.asarray(image.convert("L"))
    # loud half: dark from top to bottom; quiet half: white but for the middle line
    assert pixels[5:55, 100].max() < 80
    assert pixels[:20, 900].min() > 200 and pixels[40:, 900].min() > 200
    assert pixels[29:31, 900].min() < 100


def test_fill_and_background_colours(tmp_path: Path, loud_quiet: Path) -> None:
    _, image = waveform(
        tmp_path, loud_quiet, width=50, height=40, fill="#FF8000", background="#102030"
    )
    assert len(rows_of(image, 10, (255, 128, 0))) >= 34
    assert len(rows_of(image, 10, (16, 32, 48))) <= 6
    assert rows_of(image, 40, (255, 128, 0)) == [20]
    assert len(rows_of(image, 40, (16, 32, 48))) == 39


def test_vmargin_keeps_the_wave_inside(tmp_path: Path, loud_quiet: Path) -> None:
    _, image = waveform(tmp_path, loud_quiet, width=50, height=60, vmargin=10)
    loud = rows_of(image, 10, (0, 0, 0))
    assert loud[0] >= 10 and loud[-1] <= 49, loud
    assert len(loud) >= 35  # 0.9 of the 40 rows inside the margins
    assert rows_of(image, 40, (0, 0, 0)) == [30]


def test_vmargin_leaving_no_room_is_an_error(tmp_path: Path, loud_quiet: Path) -> None:
    with pytest.raises(TaskError, match="vmargin"):
        waveform(tmp_path, loud_quiet, height=20, vmargin=10)


@pytest.mark.parametrize(
    ("start", "end", "loud_columns", "quiet_columns"),
    [
        (1.0, 2.0, [], range(0, 100)),  # only the silent second
        (0.0, 1.0, range(0, 100), []),  # only the loud one
        (0.5, 1.5, range(2, 48), range(52, 100)),  # half of each
        (1.5, None, [], range(0, 100)),  # from 1.5 s to the end
    ],
)
def test_start_and_end_choose_the_span(
    tmp_path: Path, loud_quiet: Path, start, end, loud_columns, quiet_columns
) -> None:
    definition = {"width": 100, "height": 40, "start": start}
    if end is not None:
        definition["end"] = end
    result, image = waveform(tmp_path, loud_quiet, **definition)
    assert result["duration"] == 2.0  # the file's duration, whatever the span
    for x in loud_columns:
        assert len(rows_of(image, x, (0, 0, 0))) >= 34, x
    for x in quiet_columns:
        assert len(rows_of(image, x, (0, 0, 0))) == 1, x


def test_end_past_the_file_ends_with_the_audio(tmp_path: Path, loud_quiet: Path) -> None:
    _, image = waveform(tmp_path, loud_quiet, width=100, height=40, start=0.0, end=50.0)
    # the columns follow the samples found: the loud second fills the first half
    assert len(rows_of(image, 45, (0, 0, 0))) >= 34
    assert len(rows_of(image, 55, (0, 0, 0))) == 1


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [(1.0, 1.0, "must be after start"), (1.5, 0.5, "must be after start"), (3.0, None, "past")],
)
def test_impossible_spans(tmp_path: Path, loud_quiet: Path, start, end, message) -> None:
    definition = {"start": start} if end is None else {"start": start, "end": end}
    with pytest.raises(TaskError, match=message):
        waveform(tmp_path, loud_quiet, **definition)


def test_only_the_span_is_decoded(tmp_path: Path) -> None:
    """A short span near the end of a long file seeks there: few frames are decoded."""
    source = tone(tmp_path / "long.mp3", codec="libmp3lame", parts=((10.0, 0.5),))
    with open_media(source, need="audio") as container:
        stream = select_audio(container)
        every = sum(1 for _ in container.decode(stream))
    with open_media(source, need="audio") as container:
        stream = select_audio(container)
        counted = _CountingContainer(container)
        found = peaks(counted, stream, 8.0, 9.0, 80)
    assert found.samples == 22050
    assert counted.frames < every * 0.2, (counted.frames, every)


class _CountingContainer:
    """Wraps an input container and counts the frames decoded through it."""

    def __init__(self, container) -> None:
        self.container = container
        self.frames = 0

    def __getattr__(self, name: str):
        return getattr(self.container, name)

    def decode(self, *args, **kwargs):
        for frame in self.container.decode(*args, **kwargs):
            self.frames += 1
            yield frame


@pytest.mark.parametrize(
    ("name", "codec", "fmt"),
    [
        ("t.wav", "pcm_s16le", None),
        ("t8.wav", "pcm_u8", None),
        ("t.flac", "flac", None),
        ("t.mp3", "libmp3lame", None),
        ("t.m4a", "aac", None),
        ("t.aac", "aac", None),  # raw ADTS: the duration is only an estimate
        ("t.ogg", "libopus", None),
        ("t.w64", "pcm_f32le", None),
    ],
)
def test_codecs_and_containers(tmp_path: Path, name: str, codec: str, fmt) -> None:
    rate = 48000 if codec == "libopus" else 22050
    source = tone(tmp_path / name, codec=codec, parts=LOUD_QUIET, rate=rate, fmt=fmt)
    result, image = waveform(tmp_path, source, width=40, height=30)
    assert abs(result["duration"] - 2.0) <= 0.1, result
    assert len(rows_of(image, 5, (0, 0, 0))) >= 24  # loud
    assert len(rows_of(image, 15, (0, 0, 0))) >= 24
    assert len(rows_of(image, 30, (0, 0, 0))) <= 2  # silent (lossy codecs ring a little)
    assert len(rows_of(image, 38, (0, 0, 0))) <= 2


def test_mono_audio(tmp_path: Path) -> None:
    source = tone(tmp_path / "mono.wav", codec="pcm_s16le", parts=LOUD_QUIET, layout="mono")
    _, image = waveform(tmp_path, source, width=40, height=30)
    assert len(rows_of(image, 5, (0, 0, 0))) >= 26
    assert len(rows_of(image, 30, (0, 0, 0))) == 1


def test_a_videos_audio(tmp_path: Path) -> None:
    """The soundtrack of an MP4 (a 0.5 amplitude tone) spans half the height."""
    source = make_video(tmp_path / "v.mp4", width=64, height=48, seconds=1.0, fps=10)
    result, image = waveform(tmp_path, source, width=50, height=60)
    assert result["duration"] == pytest.approx(1.0, abs=0.05)
    rows = rows_of(image, 25, (0, 0, 0))
    assert 28 <= len(rows) <= 33 and abs(rows[0] - 15) <= 2, rows


def test_the_video_stream_is_dropped_by_the_demuxer(tmp_path: Path) -> None:
    """Only the few video packets FFmpeg read while probing the file come out; the rest are
    never read into Python, let alone decoded."""
    source = make_video(tmp_path / "v.mp4", width=64, height=48, seconds=3.0, fps=10)

    def video_packets(discard: bool) -> int:
        with open_media(source, need="audio") as container:
            if discard:
                select_audio(container)
            return sum(1 for p in container.demux() if p.size and p.stream.type == "video")

    assert video_packets(discard=False) == 30
    assert video_packets(discard=True) <= 3


@pytest.mark.parametrize("name", ["late.mkv", "late.mov"])
def test_audio_that_starts_late_is_placed_in_time(tmp_path: Path, name: str) -> None:
    """The sound of this video starts at 1 s: the first half of the waveform is silence."""
    source = late_audio_video(tmp_path / name, seconds=2.0, audio_from=1.0)
    result, image = waveform(tmp_path, source, width=40, height=30)
    assert result["duration"] == pytest.approx(2.0, abs=0.05)
    for x in (2, 10, 18):
        assert len(rows_of(image, x, (0, 0, 0))) == 1, x
    for x in (22, 30, 38):
        assert len(rows_of(image, x, (0, 0, 0))) >= 26, x
    _, image = waveform(tmp_path / "span", source, width=40, height=30, start=0.5, end=1.5)
    assert len(rows_of(image, 10, (0, 0, 0))) == 1
    assert len(rows_of(image, 30, (0, 0, 0))) >= 26
    _, image = waveform(tmp_path / "end", source, width=40, height=30, start=1.5)
    assert len(rows_of(image, 20, (0, 0, 0))) >= 26


def test_progress_is_reported_as_the_span_is_decoded(tmp_path: Path) -> None:
    source = tone(tmp_path / "p.wav", codec="pcm_s16le", parts=((8.0, 0.5),))
    progress = Progress()
    run_kind(
        "audio.waveform", {"format": "png"}, {"url": source}, tmp_path / "out", progress=progress
    )
    assert len(progress.values) >= 3
    assert progress.values == sorted(progress.values)
    assert 0 < progress.values[0] < 50 and progress.values[-1] >= 90


def test_a_cut_beyond_the_span_does_not_matter(tmp_path: Path) -> None:
    """Only the span is read: a file cut after it still gives its waveform."""
    good = tone(tmp_path / "g.mp3", codec="libmp3lame", parts=((1.0, 0.9), (1.0, 0.0)))
    cut = broken_files(tmp_path, good)["truncated"]
    _, image = waveform(tmp_path, cut, width=20, height=20, start=0.0, end=0.5)
    assert len(rows_of(image, 10, (0, 0, 0))) >= 17
    with pytest.raises(TaskError, match="truncated"):
        waveform(tmp_path, cut, width=20, height=20, start=0.0)


def test_a_damaged_frame_is_skipped_and_the_rest_stays_in_place(tmp_path: Path) -> None:
    """A few corrupt bytes in the loud half: the decoder's rejects are skipped (as ffmpeg
    does) and what follows keeps its time."""
    good = tone(tmp_path / "g.flac", codec="flac", parts=((2.0, 0.9), (2.0, 0.0), (2.0, 0.9)))
    bad = damaged(good, tmp_path / "bad.flac", spots=(0.2,))
    result, image = waveform(tmp_path, bad, width=120, height=30)
    assert result["duration"] == 6.0
    loud = [len(rows_of(image, x, (0, 0, 0))) for x in range(120)]
    # a frame (2304 samples, 2.1 columns) is lost: the gap is silent, the rest stays in place
    assert 1 <= sum(n <= 2 for n in loud[:38]) <= 3, loud
    assert all(n >= 25 for n in loud[30:39]) and all(n <= 2 for n in loud[41:79]), loud
    assert all(n >= 25 for n in loud[81:]), loud


def test_many_damaged_frames_are_an_error(tmp_path: Path) -> None:
    good = tone(tmp_path / "g.mp3", codec="libmp3lame", parts=((2.0, 0.5),))
    bad = damaged(good, tmp_path / "bad.mp3", spots=tuple(0.1 + 0.02 * k for k in range(40)))
    with pytest.raises(TaskError, match="corrupt"):
        waveform(tmp_path, bad)


def test_a_stream_that_changes_format_midway(tmp_path: Path) -> None:
    """Two MP3s joined end to end, mono then stereo: one waveform across both."""
    first = tone(tmp_path / "a.mp3", codec="libmp3lame", parts=((1.0, 0.9),), layout="mono")
    second = tone(tmp_path / "b.mp3", codec="libmp3lame", parts=((1.0, 0.0),))
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    _, image = waveform(tmp_path, joined, width=40, height=30)
    loud = [len(rows_of(image, x, (0, 0, 0))) for x in range(40)]
    assert all(n >= 25 for n in loud[2:17]), loud
    assert all(n <= 2 for n in loud[23:]), loud


def test_bad_parameters_are_refused_by_validation() -> None:
    from tasks import get

    kind = get("audio.waveform")
    assert kind is not None
    _, errors = kind.validate(
        {"url": "http://a/b.mp3", "fill": "red", "format": "gif", "width": 0, "start": -1}
    )
    assert set(errors) == {"fill", "format", "width", "start"}
    _, errors = kind.validate({})
    assert errors == {"url": ["this field is required"]}


async def test_through_the_server(api: Api, origin: Origin, tmp_path: Path) -> None:
    source = tone(tmp_path / "song.mp3", codec="libmp3lame", parts=LOUD_QUIET)
    url = origin.add("song.mp3", source.read_bytes())
    status = await api.run(
        {
            "task_name": "audio.waveform",
            "url": url,
            "width": 200,
            "height": 50,
            "fill": "#00FF00",
            "background": "#000000",
            "format": "png",
        }
    )
    assert_status(status, "success")
    result = status["result"]
    assert result["width"] == 200 and result["height"] == 50
    assert result["content_type"] == "image/png"
    assert result["duration"] == pytest.approx(2.0, abs=0.06)
    resp = await api.client.session.get(result["output"])
    assert resp.status == 200
    out = tmp_path / "wave.png"
    out.write_bytes(await resp.read())
    with Image.open(out) as image:
        assert image.size == (200, 50)
        assert len(rows_of(image, 40, (0, 255, 0))) >= 42
        assert len(rows_of(image, 160, (0, 255, 0))) <= 2
