"""`video.strip`: frames at equal intervals between `start` and `end`, in cells of the requested
size, `wrap` cells per row; each cell decoded back and checked against the frame it should
show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import media
from tasks.declare import Job, TaskError
from tasks.video_strip import KIND, wanted_times
from tests.conftest import Api, Origin, assert_status
from tests.mediagen import frame_index, level, picture_level, video_sample


def strip(name: str, folder: Path, **params) -> tuple[dict, Image.Image]:
    checked, errors = KIND.validate({"url": "http://example.com/v", **params})
    assert not errors, errors
    workdir = folder / f"run{len(list(folder.iterdir()))}"
    workdir.mkdir()
    result = KIND.run(Job(checked, {"url": str(video_sample(name))}, workdir))
    image = Image.open(workdir / result["output"])
    image.load()
    return result, image


def cell_levels(image: Image.Image, cell: tuple[int, int], count: int, wrap: int) -> list[float]:
    picture = np.asarray(image.convert("RGB"))
    w, h = cell
    levels = []
    for i in range(count):
        x, y = (i % wrap) * w, (i // wrap) * h
        # Leave a margin: JPEG blocks bleed across the cell borders.
        levels.append(picture_level(picture[y + 2 : y + h - 2, x + 2 : x + w - 2]))
    return levels


def test_wanted_times() -> None:
    assert wanted_times(0.0, 1.8, 10) == pytest.approx([0.2 * i for i in range(10)])
    assert wanted_times(0.5, 1.0, 1) == [0.5]


@pytest.mark.parametrize(
    "name", ["h264.mp4", "vp9.mkv", "vp9.webm", "mpeg4.avi", "mpeg2.mpg", "long_gop.mp4"]
)
def test_frames_at_equal_intervals(name: str, tmp_path: Path) -> None:
    result, image = strip(name, tmp_path, width=40, format="png")
    assert result["count"] == 10
    assert image.size == (400, 30) == (result["width"], result["height"])
    seconds = 4.0 if name == "long_gop.mp4" else 2.0
    end = result["duration"]
    expected = [level(min(frame_index(t), int(seconds * 25) - 1)) for t in wanted_times(0, end, 10)]
    assert cell_levels(image, (40, 30), 10, 10) == pytest.approx(expected, abs=4)


def test_start_end_count_and_values(tmp_path: Path) -> None:
    result, image = strip("h264.mp4", tmp_path, start=0.4, end=1.2, count=5, height=30)
    times = [0.4, 0.6, 0.8, 1.0, 1.2]
    assert cell_levels(image, (40, 30), 5, 5) == pytest.approx(
        [level(frame_index(t)) for t in times], abs=4
    )
    assert result == {
        "count": 5,
        "width": 200,
        "height": 30,
        "original_width": 160,
        "original_height": 120,
        "duration": pytest.approx(2.0, abs=0.03),
        "frame_rate": 25.0,
        "content_type": "image/jpeg",
        "output": "strip.jpg",
    }
    assert image.format == "JPEG"
    assert set(result) - {"output"} == {o.name for o in KIND.outputs}


def test_wrap(tmp_path: Path) -> None:
    _, image = strip("h264.mp4", tmp_path, width=40, count=7, wrap=3, end=1.2, format="png")
    assert image.size == (120, 90)
    levels = cell_levels(image, (40, 30), 7, 3)
    assert levels == pytest.approx([level(frame_index(0.2 * i)) for i in range(7)], abs=4)
    # The two cells after the last frame are left black.
    picture = np.asarray(image.convert("RGB"))
    assert picture[60:, 40:].max() == 0


def test_crop_fills_each_cell(tmp_path: Path) -> None:
    _, image = strip("h264.mp4", tmp_path, width=30, height=30, crop=True, count=3, format="png")
    assert image.size == (90, 30)
    red = np.asarray(image.convert("RGB"))[:, :30, 0].astype(float)
    assert 20 < red[:, 0].mean() < 50 and 205 < red[:, -1].mean() < 235


def test_fit_without_crop(tmp_path: Path) -> None:
    _, image = strip("h264.mp4", tmp_path, width=30, height=30, count=3)
    assert image.size == (90, 22)


def test_fewer_distinct_frames_than_asked(tmp_path: Path) -> None:
    # 0.0 to 0.12 s holds frames 0 to 3: 20 wanted times map to 4 distinct frames.
    result, image = strip("h264.mp4", tmp_path, width=40, end=0.12, count=20, format="png")
    assert result["count"] == 4
    assert image.size == (160, 30)
    assert cell_levels(image, (40, 30), 4, 4) == pytest.approx([level(i) for i in range(4)], abs=4)


def test_rotated_video_cells_are_upright(tmp_path: Path) -> None:
    result, image = strip("rotated.mov", tmp_path, height=40, count=2, format="png")
    assert image.size == (60, 40)
    assert (result["original_width"], result["original_height"]) == (160, 120)
    red = np.asarray(image.convert("RGB"))[:, :30, 0].astype(float)
    assert red[0].mean() > 200 and red[-1].mean() < 60


def test_variable_frame_rate_and_odd_size(tmp_path: Path) -> None:
    result, image = strip("odd.mkv", tmp_path, width=72, count=3)
    assert image.size == (216, 40)
    assert result["original_width"] == 721
    result, _ = strip("vfr.mp4", tmp_path, width=40, count=5)
    assert result["count"] == 5


def test_short_span_of_a_long_gop_decodes_only_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers = []
    original = media.FrameReader

    def recording(*args):
        reader = original(*args)
        readers.append(reader)
        return reader

    monkeypatch.setattr(media, "FrameReader", recording)
    _, image = strip("long_gop.mp4", tmp_path, width=40, start=2.2, end=2.6, count=3)
    (reader,) = [r for r in readers if r.decoded]
    # Keyframe at 2.0 s: frames 50 to 66 at most, not the 100 of the file.
    assert reader.seeks == 1
    assert reader.decoded <= 17
    assert cell_levels(image, (40, 30), 3, 3) == pytest.approx(
        [level(55), level(60), level(65)], abs=4
    )


def test_bad_spans(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="past the end"):
        strip("h264.mp4", tmp_path, start=3.0)
    with pytest.raises(TaskError, match="before start"):
        strip("h264.mp4", tmp_path, start=1.0, end=0.5)


def test_too_large(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="larger than"):
        strip("h264.mp4", tmp_path, width=8000, count=1000)


async def test_through_the_server(api: Api, origin: Origin) -> None:
    url = origin.add("clip.avi", video_sample("mpeg4.avi").read_bytes())
    status = await api.run(
        {"task_name": "video.strip", "url": url, "width": 40, "count": 4, "wrap": 2}
    )
    assert_status(status, "success")
    result = status["result"]
    assert (result["width"], result["height"], result["count"]) == (80, 60, 4)
    resp = await api.client.session.get(result["output"])
    assert resp.status == 200
    path = Path(api.config.data_dir) / "strip.jpg"
    path.write_bytes(await resp.read())
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (80, 60)
