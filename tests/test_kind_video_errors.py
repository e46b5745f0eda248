"""Broken inputs end every video kind in a TaskError a person understands, and the worker that
ran it lives on."""

from __future__ import annotations

import random
from pathlib import Path

import av
import pytest

from tasks.declare import Job, TaskError
from tasks.video_convert import KIND as CONVERT
from tasks.video_info import KIND as INFO
from tasks.video_reverse import KIND as REVERSE
from tasks.video_strip import KIND as STRIP
from tasks.video_thumb import KIND as THUMB
from tests.conftest import Api, Origin, assert_status
from tests.mediagen import make_audio, video_sample

KINDS = [INFO, THUMB, STRIP, CONVERT, REVERSE]
# Random bytes, the same in every run: a fresh draw could, once in a long while, look enough
# like some format for a decoder to report something else than a broken file.
GARBAGE = random.Random(20000).randbytes(20000)


def broken(kind_of_damage: str, folder: Path) -> Path:
    path = folder / f"{kind_of_damage}.mp4"
    if kind_of_damage == "zero":
        path.write_bytes(b"")
    elif kind_of_damage == "random":
        path.write_bytes(GARBAGE)
    elif kind_of_damage == "truncated":
        data = video_sample("h264.mp4").read_bytes()
        path.write_bytes(data[: len(data) // 3])  # MP4 from PyAV: the index is at the end
    elif kind_of_damage == "index_then_nothing":
        # The index up front (faststart) and the media data cut: the header promises frames
        # the file does not hold.
        whole = folder / "whole.mp4"
        with (
            av.open(str(video_sample("h264.mp4"))) as source,
            av.open(str(whole), "w", options={"movflags": "+faststart"}) as out,
        ):
            stream = out.add_stream_from_template(source.streams.video[0])
            for packet in source.demux(source.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    out.mux(packet)
        data = whole.read_bytes()
        path.write_bytes(data[: data.index(b"mdat") + 100])
    elif kind_of_damage == "audio_only":
        path = make_audio(folder / "tone.wav", codec="pcm_s16le", seconds=0.5)
    return path


MESSAGES = {
    "zero": "not a media file|corrupt|truncated|could not be processed",
    "random": "not a media file|corrupt|truncated|could not be processed",
    "truncated": "not a media file|corrupt|truncated|could not be processed",
    "index_then_nothing": "not a media file|corrupt|truncated|no video frame",
    "audio_only": "the file has no video stream",
}


@pytest.mark.parametrize("damage", list(MESSAGES))
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_broken_input_is_a_task_error(kind, damage: str, tmp_path: Path) -> None:
    path = broken(damage, tmp_path)
    params, errors = kind.validate({"url": "http://example.com/v"})
    assert not errors
    with pytest.raises(TaskError, match=MESSAGES[damage]):
        kind.run(Job(params, {"url": str(path)}, tmp_path))


async def test_worker_lives_on_after_broken_input(api: Api, origin: Origin, tmp_path: Path) -> None:
    bad = origin.add("bad.mp4", GARBAGE[:5000])
    good = origin.add("good.mp4", video_sample("h264.mp4").read_bytes())
    statuses = await api.create_ok(
        [{"task_name": "video.thumb", "url": bad}, {"task_name": "video.convert", "url": bad}],
        block=True,
    )
    for status in statuses:
        assert_status(status, "error")
        assert "not a media file" in status["error"] or "corrupt" in status["error"]
    status = await api.run({"task_name": "video.thumb", "url": good, "time": 1.0})
    assert_status(status, "success")
