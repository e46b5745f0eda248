"""`video.thumb`: the exact frame at `time`, its size, crop, format, quality and poster, on each
container and codec; decoded back and checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.declare import Job, TaskError
from tasks.video_thumb import KIND
from tests.conftest import Api, Origin, assert_status
from tests.mediagen import frame_index, image_level, level, vfr_times, video_sample


def thumb(name: str, folder: Path, **params) -> tuple[dict, Image.Image]:
    """Runs the kind in a fresh subfolder of `folder`; the result's `output` is made a full
    path."""
    checked, errors = KIND.validate({"url": "http://example.com/v", **params})
    assert not errors, errors
    workdir = folder / f"run{len(list(folder.iterdir()))}"
    workdir.mkdir()
    result = KIND.run(Job(checked, {"url": str(video_sample(name))}, workdir))
    result["output"] = workdir / result["output"]
    image = Image.open(result["output"])
    image.load()
    return result, image


@pytest.mark.parametrize(
    "name", ["h264.mp4", "vp9.mkv", "vp9.webm", "mpeg4.avi", "mpeg2.mpg", "long_gop.mp4"]
)
@pytest.mark.parametrize("time", [0.0, 0.52, 1.3, 1.96])
def test_the_frame_at_time_exactly(name: str, time: float, tmp_path: Path) -> None:
    result, _ = thumb(name, tmp_path, time=time, format="png")
    assert image_level(result["output"]) == pytest.approx(level(frame_index(time)), abs=4)


@pytest.mark.parametrize("index", [0, 1, 2, 17, 33, 49])
def test_the_frame_at_time_in_a_variable_frame_rate_video(index: int, tmp_path: Path) -> None:
    times = vfr_times(2.0)
    # Just before the next frame: still this one.
    t = (times[index + 1] - 0.002) if index + 1 < len(times) else times[index] + 0.01
    result, _ = thumb("vfr.mp4", tmp_path, time=t, format="png")
    assert image_level(result["output"]) == pytest.approx(level(index), abs=4)


def test_default_size_and_values(tmp_path: Path) -> None:
    result, image = thumb("h264.mp4", tmp_path)
    assert image.format == "JPEG" and image.size == (160, 120)
    assert result == {
        "width": 160,
        "height": 120,
        "original_width": 160,
        "original_height": 120,
        "duration": pytest.approx(2.0, abs=0.03),
        "content_type": "image/jpeg",
        "output": result["output"],
    }
    assert result["output"].name == "thumb.jpg"
    assert set(result) - {"output"} == {o.name for o in KIND.outputs}


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"width": 80}, (80, 60)),
        ({"height": 30}, (40, 30)),
        ({"width": 80, "height": 80}, (80, 60)),  # fits inside
        ({"width": 80, "height": 80, "crop": True}, (80, 80)),  # fills, overflow cut
        ({"width": 100, "height": 20, "crop": True}, (100, 20)),
        ({"width": 320}, (320, 240)),
    ],
)
def test_size_and_crop(params: dict, size: tuple[int, int], tmp_path: Path) -> None:
    result, image = thumb("h264.mp4", tmp_path, **params)
    assert image.size == size == (result["width"], result["height"])


def test_crop_keeps_the_centre(tmp_path: Path) -> None:
    _, image = thumb("h264.mp4", tmp_path, width=60, height=60, crop=True, format="png")
    red = np.asarray(image.convert("RGB"))[:, :, 0].astype(float)
    # The centre 120x120 of a 160-wide left-to-right red ramp: ~ 32 to ~ 223.
    assert 20 < red[:, 0].mean() < 50 and 205 < red[:, -1].mean() < 235


def test_odd_size_video(tmp_path: Path) -> None:
    result, image = thumb("odd.mkv", tmp_path, time=0.4, format="png")
    assert image.size == (721, 405)
    assert image_level(result["output"]) == pytest.approx(level(10), abs=4)


@pytest.mark.parametrize(
    ("name", "bright"),
    [("rotated.mov", "top"), ("rotated180.mp4", "left"), ("rotated270.mp4", "bottom")],
)
def test_rotation_is_honoured(name: str, bright: str, tmp_path: Path) -> None:
    result, image = thumb(name, tmp_path, format="png")
    assert image.size == ((120, 160) if name != "rotated180.mp4" else (160, 120))
    assert (result["original_width"], result["original_height"]) == (160, 120)
    red = np.asarray(image.convert("RGB"))[:, :, 0].astype(float)
    edges = {"top": red[0].mean(), "bottom": red[-1].mean(), "left": red[:, 0].mean()}
    assert edges[bright] > 200, edges


def test_rotation_with_size(tmp_path: Path) -> None:
    _, image = thumb("rotated.mov", tmp_path, width=60)
    assert image.size == (60, 80)


def test_png_format(tmp_path: Path) -> None:
    result, image = thumb("h264.mp4", tmp_path, format="png")
    assert image.format == "PNG" and result["content_type"] == "image/png"
    assert result["output"].suffix == ".png"


def test_png_keeps_alpha(tmp_path: Path) -> None:
    _, image = thumb("alpha.mov", tmp_path, format="png")
    assert image.mode == "RGBA"


def test_quality(tmp_path: Path) -> None:
    low, _ = thumb("noisy.mp4", tmp_path, quality=10)
    high, _ = thumb("noisy.mp4", tmp_path, quality=95)
    assert low["output"].stat().st_size * 2 < high["output"].stat().st_size


def test_poster_draws_a_play_icon(tmp_path: Path) -> None:
    _, plain = thumb("h264.mp4", tmp_path, format="png")
    _, poster = thumb("h264.mp4", tmp_path, format="png", poster=True)
    a = np.asarray(plain.convert("RGB")).astype(int)
    b = np.asarray(poster.convert("RGB")).astype(int)
    # The icon's white triangle is in the centre; the corners are untouched.
    assert b[60, 82].min() > 200 and a[60, 82].min() < 200
    assert np.abs(a[:10, :10] - b[:10, :10]).max() == 0


def test_time_past_the_end(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="past the end"):
        thumb("h264.mp4", tmp_path, time=5.0)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"time": -1}, "time"),
        ({"quality": 0}, "quality"),
        ({"quality": 96}, "quality"),
        ({"format": "gif"}, "format"),
        ({"width": 0}, "width"),
    ],
)
def test_parameter_checks(params: dict, field: str) -> None:
    _, errors = KIND.validate({"url": "http://example.com/v", **params})
    assert field in errors


async def test_through_the_server(api: Api, origin: Origin) -> None:
    url = origin.add("clip.mkv", video_sample("vp9.mkv").read_bytes())
    status = await api.run({"task_name": "video.thumb", "url": url, "time": 1.0, "width": 80})
    assert_status(status, "success")
    result = status["result"]
    assert (result["width"], result["height"]) == (80, 60)
    resp = await api.client.session.get(result["output"])
    assert resp.status == 200
    data = await resp.read()
    path = Path(api.config.data_dir) / "fetched.jpg"
    path.write_bytes(data)
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (80, 60)
    assert image_level(path) == pytest.approx(level(25), abs=4)
