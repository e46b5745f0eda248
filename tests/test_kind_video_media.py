"""The shared PyAV helpers of the video kinds: the exact frame reader, rotation, the decode
guard and the frame shaper."""

from __future__ import annotations

import bisect
import random

import av
import pytest

from tasks import media
from tasks.declare import TaskError
from tasks.geometry import plan
from tasks.media import FrameReader, FrameShaper, frame_image, open_media, video_stream
from tests.mediagen import level, picture_level, video_sample

SAMPLES = ["h264.mp4", "vp9.mkv", "vp9.webm", "mpeg4.avi", "mpeg2.mpg", "vfr.mp4", "long_gop.mp4"]


def all_frames(path) -> tuple[list[float], float]:
    """Every frame's presentation time (seconds from the start) by decoding the whole file."""
    with open_media(path, need="video") as container:
        stream = video_stream(container)
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        times = [float(f.pts * stream.time_base) - start for f in container.decode(stream)]
    return times, start


@pytest.mark.parametrize("name", SAMPLES)
def test_reader_returns_the_frame_shown_at_each_time(name: str) -> None:
    path = video_sample(name)
    times, _ = all_frames(path)
    rng = random.Random(name)
    for _ in range(5):
        wanted = sorted(rng.uniform(-0.05, times[-1] + 0.1) for _ in range(rng.choice([1, 3, 6])))
        with open_media(path, need="video") as container:
            stream = video_stream(container)
            reader = FrameReader(container, stream)
            for t in wanted:
                frame = reader.at(t)
                index = max(bisect.bisect_right(times, t + 1e-4) - 1, 0)
                assert reader.time_of(frame) == pytest.approx(times[index], abs=1e-6), (name, t)
                got = picture_level(frame.to_ndarray(format="rgb24"))
                assert got == pytest.approx(level(index), abs=4), (name, t, index)


def keyframe_times(path) -> list[float]:
    with open_media(path, need="video") as container:
        stream = video_stream(container)
        return [float(f.pts * stream.time_base) for f in container.decode(stream) if f.key_frame]


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.mkv", "mpeg4.avi", "long_gop.mp4"])
def test_reader_seeks_to_the_keyframe_before_each_time(name: str) -> None:
    path = video_sample(name)
    wanted = [k + 0.05 for k in keyframe_times(path)[1:]]
    assert wanted
    with open_media(path, need="video") as container:
        reader = FrameReader(container, video_stream(container))
        for t in wanted:
            reader.at(t)
        # One seek per wanted time; from each keyframe only the frame itself, the wanted one
        # and the next (which shows the wanted one is the last at or before its time).
        assert reader.seeks == len(wanted)
        assert reader.decoded <= 3 * len(wanted) + 2, reader.decoded


def test_reader_decodes_forward_within_a_gop_and_never_twice() -> None:
    path = video_sample("long_gop.mp4")  # keyframes at frames 0 and 50
    with open_media(path, need="video") as container:
        reader = FrameReader(container, video_stream(container))
        for index in (5, 20, 21, 40, 49):
            frame = reader.at(index / 25)
            assert picture_level(frame.to_ndarray(format="rgb24")) == pytest.approx(
                level(index), abs=4
            )
        assert reader.seeks == 0
        assert reader.decoded <= 51


def test_reader_skips_unreferenced_frames_before_the_wanted_one() -> None:
    # long_gop.mp4 is x264 with B-frames and a 50-frame GOP: reaching frame 45 from the
    # keyframe at 0 needs the reference frames only, not the disposable B-frames.
    path = video_sample("long_gop.mp4")
    with open_media(path, need="video") as container:
        reader = FrameReader(container, video_stream(container))
        frame = reader.at(45 / 25)
        assert picture_level(frame.to_ndarray(format="rgb24")) == pytest.approx(level(45), abs=4)
        assert reader.decoded < 45


def test_reader_without_index_decodes_forward_for_short_gaps() -> None:
    # MPEG-PS has no index: the reader decodes forward when the gap is short.
    path = video_sample("mpeg2.mpg")
    with open_media(path, need="video") as container:
        reader = FrameReader(container, video_stream(container))
        assert reader.keyframes is None
        levels = [picture_level(reader.at(t).to_ndarray(format="rgb24")) for t in (0.4, 0.8)]
        assert reader.seeks == 0
    assert levels == pytest.approx([level(10), level(20)], abs=4)


def test_reader_with_time_past_the_end_gives_the_last_frame() -> None:
    with open_media(video_sample("h264.mp4"), need="video") as container:
        frame = FrameReader(container, video_stream(container)).at(99.0)
        assert picture_level(frame.to_ndarray(format="rgb24")) == pytest.approx(level(49), abs=4)


@pytest.mark.parametrize(
    ("name", "rotation"),
    [
        ("h264.mp4", 0.0),
        ("rotated.mov", 90.0),
        ("rotated180.mp4", 180.0),
        ("rotated270.mp4", 270.0),
    ],
)
def test_rotation_from_the_display_matrix(name: str, rotation: float) -> None:
    with open_media(video_sample(name), need="video") as container:
        frame = FrameReader(container, video_stream(container)).at(0)
        assert media.rotation_of(frame) == rotation


def red_edges(picture) -> tuple[float, float, float, float]:
    """Mean red level of the top, bottom, left and right edges (the pattern's red rises from
    left to right when upright)."""
    r = picture[:, :, 0].astype(float)
    return r[0].mean(), r[-1].mean(), r[:, 0].mean(), r[:, -1].mean()


@pytest.mark.parametrize(
    ("name", "bright_edge"),
    [
        ("h264.mp4", "right"),
        ("rotated.mov", "top"),
        ("rotated180.mp4", "left"),
        ("rotated270.mp4", "bottom"),
    ],
)
def test_frame_image_and_shaper_turn_the_picture_upright(name: str, bright_edge: str) -> None:
    import numpy as np

    with open_media(video_sample(name), need="video") as container:
        frame = FrameReader(container, video_stream(container)).at(0)
        rotation = media.rotation_of(frame)
        upright = media.upright_size(frame.width, frame.height, rotation)
        geometry = plan(upright, None, None)
        image = np.asarray(frame_image(frame, rotation, geometry))
        shaped = FrameShaper(frame, rotation, plan(upright, None, None, even=True), "yuv420p")(
            frame
        )
    for picture in (image, shaped.to_ndarray(format="rgb24")):
        assert picture.shape[:2] == (upright[1], upright[0])
        edges = dict(zip(("top", "bottom", "left", "right"), red_edges(picture), strict=True))
        assert edges[bright_edge] > 200, edges
        assert min(edges.values()) < 60 or bright_edge in ("top", "bottom"), edges


def test_shaper_crops_around_the_centre_and_scales() -> None:
    with open_media(video_sample("h264.mp4"), need="video") as container:
        frame = FrameReader(container, video_stream(container)).at(0)
        geometry = plan((160, 120), 60, 60, crop=True, even=True)
        out = FrameShaper(frame, 0.0, geometry, "yuv420p")(frame)
    assert (out.width, out.height) == (60, 60)
    red = out.to_ndarray(format="rgb24")[:, :, 0].astype(float)
    # The centre 120x120 of a 0..255 left-to-right ramp of 160 columns: ~ 32..223.
    assert 20 < red[:, 0].mean() < 50 and 205 < red[:, -1].mean() < 235


def test_shaper_passes_frames_through_when_nothing_changes() -> None:
    with open_media(video_sample("h264.mp4"), need="video") as container:
        frame = FrameReader(container, video_stream(container)).at(0)
        shaper = FrameShaper(frame, 0.0, plan((160, 120), None, None, even=True), "yuv420p")
        assert shaper(frame) is frame


def test_decode_guard_stops_a_looping_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "GUARD_FACTOR", 0)
    monkeypatch.setattr(media, "GUARD_SLACK", 5)
    with open_media(video_sample("long_gop.mp4"), need="video") as container:
        reader = FrameReader(container, video_stream(container))
        with pytest.raises(TaskError, match="kept producing frames"):
            reader.at(1.9)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("h264.mp4", "video/mp4"),
        ("rotated.mov", "video/quicktime"),
        ("vp9.mkv", "video/x-matroska"),
        ("vp9.webm", "video/webm"),
        ("mpeg4.avi", "video/x-msvideo"),
        ("mpeg2.mpg", "video/mpeg"),
    ],
)
def test_content_type_of_each_container(name: str, content_type: str) -> None:
    with av.open(str(video_sample(name))) as container:
        assert media.content_type(container) == content_type


def test_segments_split_where_a_reader_would_seek() -> None:
    with open_media(video_sample("long_gop.mp4"), need="video") as container:
        reader = FrameReader(container, video_stream(container))  # keyframes at 0 s and 2 s
        assert reader.segments([0.1, 0.5, 1.9, 2.1, 2.5, 3.9]) == [[0, 1, 2], [3, 4, 5]]
        # Frame 49 is followed by the keyframe: decoding forward reads it anyway.
        assert reader.segments([1.96, 2.1]) == [[0, 1]]
        assert reader.segments([]) == []
    with open_media(video_sample("mpeg2.mpg"), need="video") as container:
        reader = FrameReader(container, video_stream(container))  # no index: one run
        assert reader.segments([0.1, 1.0, 1.9]) == [[0, 1, 2]]


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.mkv", "long_gop.mp4", "mpeg2.mpg"])
def test_reading_in_parallel_gives_the_same_frames_and_decodes_each_once(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = video_sample(name)
    times, _ = all_frames(path)
    wanted = [i * times[-1] / 11 for i in range(12)]
    readers = []
    original = media.FrameReader

    def recording(*args):
        reader = original(*args)
        readers.append(reader)
        return reader

    monkeypatch.setattr(media, "FrameReader", recording)
    with open_media(path, need="video") as container:
        runs = FrameReader(container, video_stream(container)).segments(wanted)
    done = []
    got = media.read_in_parallel(
        path, wanted, runs, lambda f: picture_level(f.to_ndarray(format="rgb24")), 3, done.append
    )
    assert done == list(range(1, 13))
    for t, (shown, value) in zip(wanted, got, strict=True):
        index = max(bisect.bisect_right(times, t + 1e-4) - 1, 0)
        assert shown == pytest.approx(times[index], abs=1e-6)
        assert value == pytest.approx(level(index), abs=4)
    assert sum(r.decoded for r in readers) <= len(times)


def test_reading_in_parallel_raises_the_workers_error() -> None:
    path = video_sample("long_gop.mp4")

    def fail(frame):
        raise TaskError("no good")

    with pytest.raises(TaskError, match="no good"):
        media.read_in_parallel(path, [0.1, 2.5], [[0], [1]], fail, 2)


@pytest.mark.parametrize("name", ["long_gop.mp4", "mpeg2.mpg", "vp9.mkv", "rotated.mov"])
def test_first_frame_reads_one_packet(name: str) -> None:
    with av.open(str(video_sample(name))) as container:
        second = [p.pts for p, _ in zip(container.demux(video=0), range(2), strict=False)][1]
    with open_media(video_sample(name), need="video") as container:
        stream = video_stream(container, threads=False)
        frame = media.first_frame(container, stream)
        assert picture_level(frame.to_ndarray(format="rgb24")) == pytest.approx(level(0), abs=4)
        assert frame.pts == stream.start_time
        # The decoder was drained after the first packet (B-frames would otherwise hold the
        # first picture back for two more): the next packet is the second one.
        assert next(container.demux(stream)).pts == second


@pytest.mark.parametrize("name", ["long_gop.mp4", "mpeg2.mpg", "vp9.mkv"])
def test_reader_seeks_back_for_an_earlier_time(name: str) -> None:
    path = video_sample(name)
    times, _ = all_frames(path)
    with open_media(path, need="video") as container:
        reader = FrameReader(container, video_stream(container))
        for t in (1.9, 0.5, 1.2, 0.1):
            frame = reader.at(t)
            index = max(bisect.bisect_right(times, t + 1e-4) - 1, 0)
            assert picture_level(frame.to_ndarray(format="rgb24")) == pytest.approx(
                level(index), abs=4
            ), t
