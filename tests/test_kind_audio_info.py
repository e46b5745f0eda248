"""audio.info: duration, content type and codec across containers and codecs; broken inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media_audioimage import run_kind, tone
from tests.mediagen import make_video


def info(tmp_path: Path, source: Path) -> dict:
    return run_kind("audio.info", {}, {"url": source}, tmp_path / "out")


@pytest.mark.parametrize(
    ("name", "codec", "content_type", "codec_name"),
    [
        ("a.wav", "pcm_s16le", "audio/wav", "pcm_s16le"),
        ("a.flac", "flac", "audio/flac", "flac"),
        ("a.mp3", "libmp3lame", "audio/mpeg", "mp3"),
        ("a.m4a", "aac", "audio/mp4", "aac"),
        ("a.aac", "aac", "audio/aac", "aac"),
        ("a.ogg", "libopus", "audio/ogg", "opus"),
        ("a.mka", "libopus", "audio/x-matroska", "opus"),
        ("a.wma", "wmav2", "audio/x-ms-wma", "wmav2"),
    ],
)
def test_containers_and_codecs(
    tmp_path: Path, name: str, codec: str, content_type: str, codec_name: str
) -> None:
    rate = 48000 if codec == "libopus" else 22050
    source = tone(tmp_path / name, codec=codec, parts=((1.5, 0.5),), rate=rate)
    result = info(tmp_path, source)
    assert set(result) == {"duration", "content_type", "codec"}
    assert result["content_type"] == content_type
    assert result["codec"] == codec_name
    # raw ADTS has no index: FFmpeg estimates its duration from the bitrate
    assert result["duration"] == pytest.approx(1.5, abs=0.1 if name == "a.aac" else 0.05)


def test_duration_is_rounded_to_a_hundredth(tmp_path: Path) -> None:
    source = tone(tmp_path / "r.wav", codec="pcm_s16le", parts=((1.2345, 0.5),), rate=22050)
    assert info(tmp_path, source)["duration"] == 1.23
    source = tone(tmp_path / "s.wav", codec="pcm_s16le", parts=((1.2371, 0.5),), rate=22050)
    assert info(tmp_path, source)["duration"] == 1.24


def test_a_file_without_a_duration_is_counted(tmp_path: Path) -> None:
    """A live Matroska stream announces no duration: the samples are counted instead."""
    source = tone(tmp_path / "live.mka", codec="flac", parts=((1.5, 0.5),), live=True)
    assert info(tmp_path, source) == {
        "duration": 1.5,
        "content_type": "audio/x-matroska",
        "codec": "flac",
    }


def test_a_videos_soundtrack(tmp_path: Path) -> None:
    source = make_video(tmp_path / "v.mp4", width=32, height=32, seconds=1.0, fps=10)
    result = info(tmp_path, source)
    assert result["content_type"] == "video/mp4"
    assert result["codec"] == "aac"
    assert result["duration"] == pytest.approx(1.0, abs=0.05)


def test_the_url_is_required() -> None:
    from tasks import get

    kind = get("audio.info")
    assert kind is not None
    assert kind.validate({})[1] == {"url": ["this field is required"]}
