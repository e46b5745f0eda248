"""Every audio kind refuses broken input with a sentence a person understands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.declare import TaskError
from tests.media_audioimage import broken_files, run_kind, tone
from tests.mediagen import make_video

KINDS = [
    ("audio.info", {}),
    ("audio.waveform", {"format": "png"}),
    ("audio.convert", {"force": False}),
    ("audio.convert", {"force": True}),
]


@pytest.mark.parametrize(("kind", "definition"), KINDS)
def test_a_video_without_audio_is_refused(tmp_path: Path, kind: str, definition: dict) -> None:
    source = make_video(tmp_path / "v.mp4", width=32, height=32, seconds=0.4, audio_codec=None)
    with pytest.raises(TaskError, match="no audio stream"):
        run_kind(kind, definition, {"url": source}, tmp_path / "out")


@pytest.mark.parametrize(("kind", "definition"), KINDS)
@pytest.mark.parametrize(
    ("name", "codec"),
    [("g.mp3", "libmp3lame"), ("g.wav", "pcm_s16le"), ("g.m4a", "aac"), ("g.flac", "flac")],
)
@pytest.mark.parametrize("broken", ["truncated", "random", "empty"])
def test_broken_files(
    tmp_path: Path, kind: str, definition: dict[str, Any], name: str, codec: str, broken: str
) -> None:
    good = tone(tmp_path / name, codec=codec, parts=((1.0, 0.5),))
    path = broken_files(tmp_path, good)[broken]
    with pytest.raises(TaskError, match=r"truncated|not a media file|could not be processed"):
        run_kind(kind, definition, {"url": path}, tmp_path / "out")
