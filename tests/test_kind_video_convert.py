"""`video.convert`: each container and codec in, H.264 out with the requested size, audio codec,
sample rate, bitrates, crf and GOP; rotation, variable frame rate, progress and the partial
result. Outputs are decoded back and checked frame by frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tasks.declare import Job, TaskError
from tasks.video_convert import KIND
from tests.conftest import Api, Origin, assert_status
from tests.mediagen import level, vfr_times, video_levels, video_sample


def convert(name: str, folder: Path, **params: Any) -> tuple[dict, Path, list]:
    """Runs the kind in a fresh subfolder; returns the result, the output path and the
    progress calls."""
    checked, errors = KIND.validate({"url": "http://example.com/v", **params})
    assert not errors, errors
    workdir = folder / f"run{len(list(folder.iterdir()))}"
    workdir.mkdir()
    calls: list = []
    job = Job(
        checked,
        {"url": str(video_sample(name))},
        workdir,
        lambda p, partial=None: calls.append((p, partial)),
    )
    result = KIND.run(job)
    return result, workdir / result["output"], calls


def probe(path: Path) -> dict:
    """What is in a written file: streams, frames, keyframes, times."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        out = {
            "format": container.format.name,
            "video_codec": video.codec_context.name,
            "size": (frames[0].width, frames[0].height),
            "frames": len(frames),
            "keyframes": [i for i, f in enumerate(frames) if f.key_frame],
            "times": [float(f.pts * video.time_base) for f in frames],
            "rotation": frames[0].rotation,
            "audio": None,
        }
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return out
        audio = container.streams.audio[0]
        packets, samples = [], []
        for packet in container.demux(audio):
            if packet.size:
                packets.append(bytes(packet))
            samples += [f.to_ndarray() for f in audio.decode(packet)]
    data = np.concatenate([s.reshape(s.shape[0], -1) for s in samples], axis=1)
    out["audio"] = {
        "codec": audio.codec_context.name,
        "rate": audio.codec_context.sample_rate,
        "channels": audio.codec_context.channels,
        "bytes": sum(len(p) for p in packets),
        "first_packet": packets[0],
        "peak": float(np.abs(data.astype(np.float64)).max())
        / (32768 if data.dtype == np.int16 else 1),
        "seconds": data.shape[1] / audio.codec_context.sample_rate,
    }
    return out


@pytest.mark.parametrize(
    ("name", "frames", "has_audio"),
    [
        ("h264.mp4", 50, True),
        ("vp9.mkv", 50, True),
        ("vp9.webm", 50, True),
        ("mpeg4.avi", 50, True),
        ("mpeg2.mpg", 50, True),
        ("odd.mp4", 10, False),
        ("alpha.webm", 10, False),
    ],
)
def test_each_container_and_codec(name: str, frames: int, has_audio: bool, tmp_path: Path) -> None:
    result, path, _ = convert(name, tmp_path)
    seen = probe(path)
    assert seen["video_codec"] == "h264" and "mp4" in seen["format"]
    assert seen["frames"] == frames
    source = video_levels(video_sample(name))
    assert video_levels(path) == pytest.approx(source, abs=3)
    assert result["duration"] == pytest.approx(frames / 25, abs=0.08)
    assert result["content_type"] == "video/mp4" and result["video_codec"] == "h264"
    assert result["audio_codec"] == ("aac" if has_audio else None)
    assert (seen["audio"] is not None) == has_audio
    if has_audio:
        assert seen["audio"]["codec"] == "aac" and seen["audio"]["rate"] == 44100
        assert seen["audio"]["peak"] > 0.3  # the 440 Hz tone at half scale came through
    assert set(result) - {"output"} == {o.name for o in KIND.outputs}
    assert result["alpha"] is False and result["rotation"] == 0.0


def test_odd_size_becomes_even(tmp_path: Path) -> None:
    result, path, _ = convert("odd.mkv", tmp_path)
    assert probe(path)["size"] == (720, 404) == (result["width"], result["height"])
    assert (result["original_width"], result["original_height"]) == (721, 405)


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"width": 80}, (80, 60)),
        ({"height": 60}, (80, 60)),
        ({"width": 100, "height": 100}, (100, 74)),  # fits: 100x75, rounded down to even
        ({"width": 100, "height": 100, "crop": True}, (100, 100)),
        ({"width": 81, "height": 41, "crop": True}, (80, 40)),
    ],
)
def test_size_and_crop(params: dict, size: tuple[int, int], tmp_path: Path) -> None:
    result, path, _ = convert("h264.mp4", tmp_path, **params)
    assert probe(path)["size"] == size == (result["width"], result["height"])
    levels = video_levels(path)
    assert levels[::10] == pytest.approx([level(i) for i in range(0, 50, 10)], abs=4)


def test_crop_keeps_the_centre(tmp_path: Path) -> None:
    _, path, _ = convert("h264.mp4", tmp_path, width=60, height=60, crop=True)
    with av.open(str(path)) as container:
        picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
    red = picture[:, :, 0].astype(float)
    assert 20 < red[:, 0].mean() < 50 and 205 < red[:, -1].mean() < 235


@pytest.mark.parametrize(
    ("name", "bright"),
    [("rotated.mov", "top"), ("rotated180.mp4", "left"), ("rotated270.mp4", "bottom")],
)
def test_rotation_is_honoured(name: str, bright: str, tmp_path: Path) -> None:
    result, path, _ = convert(name, tmp_path)
    seen = probe(path)
    upright = (160, 120) if name == "rotated180.mp4" else (120, 160)
    assert seen["size"] == upright == (result["width"], result["height"])
    assert seen["rotation"] == 0  # turned, not tagged
    with av.open(str(path)) as container:
        red = next(container.decode(video=0)).to_ndarray(format="rgb24")[:, :, 0].astype(float)
    edges = {"top": red[0].mean(), "bottom": red[-1].mean(), "left": red[:, 0].mean()}
    assert edges[bright] > 200, edges


def test_rotation_with_crop(tmp_path: Path) -> None:
    _, path, _ = convert("rotated.mov", tmp_path, width=60, height=60, crop=True)
    assert probe(path)["size"] == (60, 60)


def test_variable_frame_rate_keeps_its_timestamps(tmp_path: Path) -> None:
    _, path, _ = convert("vfr.mp4", tmp_path)
    seen = probe(path)
    assert seen["times"] == pytest.approx(vfr_times(2.0), abs=0.002)
    assert video_levels(path) == pytest.approx([level(i) for i in range(50)], abs=4)


@pytest.mark.parametrize(
    ("codec", "fmt", "suffix", "decoded_as", "layer"),
    [
        ("aac", "mp4", ".mp4", "aac", None),
        ("mp3", "mp4", ".mp4", "mp3float", 0x02),  # MPEG audio layer bits: III
        ("mp2", "mp4", ".mp4", "mp3float", 0x04),  # layer II (MP4 readers name it mp3)
        ("wmav1", "asf", ".wmv", "wmav1", None),
        ("wmav2", "asf", ".wmv", "wmav2", None),
    ],
)
def test_audio_codecs(
    codec: str, fmt: str, suffix: str, decoded_as: str, layer, tmp_path: Path
) -> None:
    result, path, _ = convert("h264.mp4", tmp_path, audio_codec=codec)
    assert path.suffix == suffix
    assert result["audio_codec"] == codec
    seen = probe(path)
    assert fmt in seen["format"]
    assert seen["audio"]["codec"] == decoded_as
    if layer is not None:
        assert seen["audio"]["first_packet"][1] & 0x06 == layer
    assert seen["audio"]["peak"] > 0.3
    assert seen["audio"]["seconds"] == pytest.approx(2.0, abs=0.15)
    assert seen["frames"] == 50
    if fmt == "asf":
        assert result["content_type"] == "video/x-ms-asf"


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_sample_rate(rate: int, tmp_path: Path) -> None:
    _, path, _ = convert("h264.mp4", tmp_path, sample_rate=rate, audio_codec="mp3")
    assert probe(path)["audio"]["rate"] == rate


def test_mono_input_stays_mono(tmp_path: Path) -> None:
    _, path, _ = convert("mono22k.mp4", tmp_path, sample_rate=48000)
    audio = probe(path)["audio"]
    assert audio["channels"] == 1 and audio["rate"] == 48000


def test_audio_bitrate(tmp_path: Path) -> None:
    low = probe(convert("h264.mp4", tmp_path, audio_codec="mp3", audio_bitrate=64)[1])["audio"]
    high = probe(convert("h264.mp4", tmp_path, audio_codec="mp3", audio_bitrate=192)[1])["audio"]
    assert low["bytes"] * 8 / low["seconds"] == pytest.approx(64000, rel=0.1)
    assert high["bytes"] * 8 / high["seconds"] == pytest.approx(192000, rel=0.1)


def test_impossible_audio_settings(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="mp2 encoder refused 320 kbps at 22050 Hz"):
        convert("h264.mp4", tmp_path, audio_codec="mp2", audio_bitrate=320, sample_rate=22050)


def video_kbps(path: Path, after: float = 0.0) -> float:
    """The video bitrate over the packets shown after `after` seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        sizes = [
            (float(p.pts * stream.time_base), p.size)
            for p in container.demux(stream)
            if p.size and p.pts is not None
        ]
    end = max(t for t, _ in sizes) + 1 / 25
    return sum(size for t, size in sizes if t >= after) * 8 / 1000 / (end - after)


def test_crf_sets_quality_and_video_bitrate_caps_it(tmp_path: Path) -> None:
    fine = video_kbps(convert("noisy.mp4", tmp_path, crf=12, video_bitrate=100000)[1])
    coarse = video_kbps(convert("noisy.mp4", tmp_path, crf=40, video_bitrate=100000)[1])
    assert coarse * 4 < fine
    assert fine > 1500
    # The cap (x264's VBV with a two-second buffer) holds once the buffer's first fill is spent.
    capped = video_kbps(convert("noisy.mp4", tmp_path, crf=12, video_bitrate=300)[1], after=1.5)
    assert capped < 300 * 1.15


def test_gop_sets_the_keyframe_interval(tmp_path: Path) -> None:
    _, path, _ = convert("long_gop.mp4", tmp_path, gop=10)
    keys = probe(path)["keyframes"]
    assert keys[0] == 0
    gaps = np.diff([*keys, 100])
    assert gaps.max() <= 10


def test_source_keyframes_do_not_leak(tmp_path: Path) -> None:
    source = probe(video_sample("mpeg2.mpg"))["keyframes"]  # every 10 frames, and a scene cut
    assert {0, 10, 20, 39, 49} <= set(source)
    _, path, _ = convert("mpeg2.mpg", tmp_path, gop=250)
    keys = probe(path)["keyframes"]
    # The first frame and x264's own scene cut where the pattern wraps (frame 29), no more.
    assert keys[0] == 0 and len(keys) <= 2
    assert not set(keys) & {10, 20, 39, 49}, keys


def test_progress_and_partial_result(tmp_path: Path) -> None:
    result, _, calls = convert("long_gop.mp4", tmp_path, width=80)
    first_pct, partial = calls[0]
    assert first_pct == 0.0
    assert partial["duration"] == pytest.approx(4.0, abs=0.05)
    assert (partial["original_width"], partial["original_height"]) == (160, 120)
    assert (partial["width"], partial["height"]) == (80, 60) == (result["width"], result["height"])
    assert partial["frame_rate"] == 25.0 and partial["video_codec"] == "h264"
    assert set(partial) <= set(result)
    percents = [pct for pct, _ in calls]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert len([p for p in percents if 0 < p < 100]) >= 5  # every 10 frames of 100


def test_no_audio_in_no_audio_out(tmp_path: Path) -> None:
    result, path, _ = convert("vfr.mp4", tmp_path, audio_codec="wmav2")
    assert result["audio_codec"] is None and probe(path)["audio"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"audio_codec": "opus"}, "audio_codec"),
        ({"video_codec": "vp9"}, "video_codec"),
        ({"sample_rate": 32000}, "sample_rate"),
        ({"crf": 52}, "crf"),
        ({"gop": 0}, "gop"),
        ({"width": 1}, "width"),
    ],
)
def test_parameter_checks(params: dict, field: str) -> None:
    _, errors = KIND.validate({"url": "http://example.com/v", **params})
    assert field in errors


def test_defaults() -> None:
    params, _ = KIND.validate({"url": "http://example.com/v"})
    assert params == {
        "url": "http://example.com/v",
        "crop": False,
        "audio_codec": "aac",
        "video_codec": "h264",
        "video_bitrate": 3000,
        "audio_bitrate": 128,
        "sample_rate": 44100,
        "crf": 23,
        "gop": 250,
    }


async def test_through_the_server(api: Api, origin: Origin) -> None:
    url = origin.add("clip.mpg", video_sample("mpeg2.mpg").read_bytes())
    status = await api.run(
        {"task_name": "video.convert", "url": url, "width": 80, "audio_codec": "mp3"}
    )
    assert_status(status, "success")
    result = status["result"]
    assert (result["width"], result["height"]) == (80, 60)
    resp = await api.client.session.get(result["output"])
    assert resp.status == 200
    path = Path(api.config.data_dir) / "converted.mp4"
    path.write_bytes(await resp.read())
    seen = probe(path)
    assert seen["video_codec"] == "h264" and seen["frames"] == 50 and seen["size"] == (80, 60)
    assert seen["audio"]["peak"] > 0.3
