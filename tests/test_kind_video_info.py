"""`video.info` on each container and codec, called directly and through the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.declare import Job
from tasks.video_info import KIND
from tests.conftest import Api, Origin, assert_status
from tests.mediagen import video_sample


def info(name: str) -> dict:
    params, errors = KIND.validate({"url": "http://example.com/v"})
    assert not errors
    return KIND.run(Job(params, {"url": str(video_sample(name))}, Path("/nonexistent")))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("h264.mp4", ("video/mp4", 160, 120, "h264", "aac")),
        ("vp9.mkv", ("video/x-matroska", 160, 120, "vp9", "opus")),
        ("vp9.webm", ("video/webm", 160, 120, "vp9", "opus")),
        ("mpeg4.avi", ("video/x-msvideo", 160, 120, "mpeg4", "mp2")),
        ("mpeg2.mpg", ("video/mpeg", 160, 120, "mpeg2video", "mp2")),
        ("rotated.mov", ("video/quicktime", 160, 120, "h264", "aac")),
        ("odd.mkv", ("video/x-matroska", 721, 405, "vp9", None)),
        ("odd.mp4", ("video/mp4", 721, 405, "h264", None)),
    ],
)
def test_values_of_each_container(name: str, expected: tuple) -> None:
    values = info(name)
    content_type, width, height, video_codec, audio_codec = expected
    assert values["content_type"] == content_type
    assert (values["width"], values["height"]) == (width, height)
    assert values["video_codec"] == video_codec
    assert values["audio_codec"] == audio_codec
    assert values["frame_rate"] == pytest.approx(25.0)
    seconds = 1.0 if name == "odd.mkv" else 0.4 if name == "odd.mp4" else 2.0
    assert values["duration"] == pytest.approx(seconds, abs=0.06)
    assert values["alpha"] is False
    assert set(values) == {o.name for o in KIND.outputs}
    assert isinstance(values["duration"], float) and isinstance(values["frame_rate"], float)
    assert isinstance(values["rotation"], float)


@pytest.mark.parametrize(
    ("name", "rotation"),
    [
        ("h264.mp4", 0.0),
        ("rotated.mov", 90.0),
        ("rotated180.mp4", 180.0),
        ("rotated270.mp4", 270.0),
    ],
)
def test_rotation_is_counter_clockwise_degrees(name: str, rotation: float) -> None:
    values = info(name)
    assert values["rotation"] == rotation
    # The stored size is reported; the rotation says how to turn it.
    assert (values["width"], values["height"]) == (160, 120)


@pytest.mark.parametrize("name", ["alpha.webm", "alpha.mov"])
def test_alpha(name: str) -> None:
    assert info(name)["alpha"] is True


def test_variable_frame_rate_reports_the_average() -> None:
    values = info("vfr.mp4")
    # 50 frames over 1.98 s (gaps of 20, 60 and 40 ms in turn).
    assert values["frame_rate"] == pytest.approx(25.0, abs=0.3)
    assert values["duration"] == pytest.approx(1.98, abs=0.05)


async def test_through_the_server(api: Api, origin: Origin) -> None:
    url = origin.add("clip.mov", video_sample("rotated.mov").read_bytes())
    status = await api.run({"task_name": "video.info", "url": url})
    assert_status(status, "success")
    result = status["result"]
    assert result["content_type"] == "video/quicktime"
    assert result["rotation"] == 90.0
    assert result["duration"] == pytest.approx(2.0, abs=0.05)
