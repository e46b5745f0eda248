"""audio.convert: each codec and container, stream copy versus `force`, resampling and channel
layouts, a video's soundtrack, progress and broken inputs. Outputs are decoded back."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tasks.declare import TaskError
from tests.media_audioimage import Progress, damaged, run_kind, tone
from tests.mediagen import make_video


def convert(tmp_path: Path, source: Path, progress=None, **definition) -> tuple[dict, Path]:
    out = tmp_path / "out"
    result = run_kind("audio.convert", definition, {"url": source}, out, progress=progress)
    return result, out / result["output"]


def decoded(path: Path) -> tuple[str, str, int, str, np.ndarray]:
    """(container format, codec, sample rate, layout, mono float samples) of a file."""
    with av.open(str(path)) as container:
        assert not container.streams.video
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            array = frame.to_ndarray().astype(np.float64)
            if not frame.format.is_planar:
                array = array.reshape(-1, len(frame.layout.channels)).T
            if frame.format.name.startswith("s16"):
                array /= 32768
            chunks.append(array.mean(axis=0))
        return (
            container.format.name,
            stream.codec.canonical_name,
            stream.rate,
            stream.layout.name,
            np.concatenate(chunks),
        )


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def packets(path: Path) -> list[bytes]:
    """The compressed frames, without ADTS headers (MP4 keeps that information once, in the
    stream's header)."""
    with av.open(str(path)) as container:
        frames = [bytes(p) for p in container.demux(audio=0) if p.size]
    return [f[7 if f[1] & 1 else 9 :] if f[:2] in (b"\xff\xf1", b"\xff\xf9") else f for f in frames]


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("convert")
    return tone(folder / "in.wav", codec="pcm_s16le", parts=((1.0, 0.5),), rate=22050)


@pytest.mark.parametrize(
    ("codec", "extension", "container", "content_type", "rate"),
    [
        ("mp3", ".mp3", "mp3", "audio/mpeg", 22050),
        ("vorbis", ".ogg", "ogg", "audio/ogg", 22050),
        ("aac", ".m4a", "mov,mp4,m4a,3gp,3g2,mj2", "audio/mp4", 22050),
    ],
)
def test_each_codec(
    tmp_path: Path, wav: Path, codec, extension, container, content_type, rate
) -> None:
    result, output = convert(tmp_path, wav, codec=codec)
    assert set(result) == {"duration", "content_type", "output"}
    assert result["content_type"] == content_type
    assert output.suffix == extension
    assert result["duration"] == pytest.approx(1.0, abs=0.06)
    fmt, name, out_rate, layout, samples = decoded(output)
    assert (fmt, name, out_rate, layout) == (container, codec, rate, "stereo")
    assert len(samples) / out_rate == pytest.approx(1.0, abs=0.06)
    # the tone survives: 440 Hz, amplitude about 0.5
    assert dominant_frequency(samples, out_rate) == pytest.approx(440, abs=5)
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.15)


def test_mp3_is_the_default(tmp_path: Path, wav: Path) -> None:
    result, output = convert(tmp_path, wav)
    assert result["content_type"] == "audio/mpeg" and decoded(output)[1] == "mp3"


@pytest.mark.parametrize(
    ("name", "source_codec", "codec"),
    [("s.mp3", "libmp3lame", "mp3"), ("s.aac", "aac", "aac"), ("s.mka", "aac", "aac")],
)
def test_same_codec_is_copied_unless_forced(
    tmp_path: Path, name: str, source_codec: str, codec: str
) -> None:
    source = tone(tmp_path / name, codec=source_codec, parts=((1.0, 0.5),))
    _, copied = convert(tmp_path / "copy", source, codec=codec)
    assert packets(copied) == packets(source)  # the very same compressed frames
    _, forced = convert(tmp_path / "force", source, codec=codec, force=True)
    assert packets(forced) != packets(source)  # encoded again
    for output in (copied, forced):
        _, name_out, rate, _, samples = decoded(output)
        assert name_out == codec
        assert dominant_frequency(samples, rate) == pytest.approx(440, abs=5)


def test_a_videos_soundtrack_becomes_an_audio_file(tmp_path: Path) -> None:
    source = make_video(tmp_path / "v.mp4", width=32, height=32, seconds=1.0, fps=10)
    for codec in ("aac", "mp3"):
        result, output = convert(tmp_path / codec, source, codec=codec)
        assert result["duration"] == pytest.approx(1.0, abs=0.06)
        _, name, rate, _, samples = decoded(output)  # decoded() checks there is no video
        assert name == codec and rate == 44100
        assert dominant_frequency(samples, rate) == pytest.approx(440, abs=5)


def test_channel_layouts_and_rates(tmp_path: Path) -> None:
    mono = tone(tmp_path / "mono.flac", codec="flac", parts=((0.5, 0.5),), layout="mono")
    _, output = convert(tmp_path / "a", mono, codec="mp3")
    assert decoded(output)[3] == "mono"
    _, output = convert(tmp_path / "b", mono, codec="vorbis")  # FFmpeg's Vorbis: stereo only
    assert decoded(output)[3] == "stereo"
    high = tone(tmp_path / "high.flac", codec="flac", parts=((0.5, 0.5),), rate=96000)
    _, output = convert(tmp_path / "c", high, codec="mp3")  # MP3 tops at 48 kHz
    _, _, rate, _, samples = decoded(output)
    assert rate == 48000
    assert dominant_frequency(samples, rate) == pytest.approx(440, abs=5)
    surround = tone(tmp_path / "six.flac", codec="flac", parts=((0.5, 0.5),), layout="5.1")
    _, output = convert(tmp_path / "d", surround, codec="aac")
    assert decoded(output)[3] == "stereo"


def test_progress_follows_the_input(tmp_path: Path) -> None:
    source = tone(tmp_path / "p.wav", codec="pcm_s16le", parts=((4.0, 0.5),))
    progress = Progress()
    convert(tmp_path, source, progress=progress, codec="aac")
    assert len(progress.values) >= 10
    assert progress.values == sorted(progress.values)
    assert progress.values[0] < 10 and progress.values[-1] >= 90


def test_a_damaged_frame_is_skipped(tmp_path: Path) -> None:
    good = tone(tmp_path / "g.flac", codec="flac", parts=((6.0, 0.5),))
    bad = damaged(good, tmp_path / "bad.flac", spots=(0.5,))
    result, output = convert(tmp_path, bad, codec="aac")
    assert result["duration"] == pytest.approx(6.0, abs=0.3)
    _, _, rate, _, samples = decoded(output)
    assert dominant_frequency(samples, rate) == pytest.approx(440, abs=5)
    many = damaged(good, tmp_path / "many.flac", spots=tuple(0.1 + 0.02 * k for k in range(40)))
    with pytest.raises(TaskError, match="corrupt"):
        convert(tmp_path, many, codec="aac")


def test_a_stream_that_changes_format_midway(tmp_path: Path) -> None:
    """Two MP3s joined end to end, mono at 22.05 kHz then stereo at 44.1 kHz."""
    first = tone(tmp_path / "a.mp3", codec="libmp3lame", parts=((1.0, 0.5),), layout="mono")
    second = tone(tmp_path / "b.mp3", codec="libmp3lame", parts=((1.0, 0.5),), rate=44100)
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    for codec in ("aac", "mp3"):
        _, output = convert(tmp_path / codec, joined, codec=codec, force=True)
        _, _, rate, _, samples = decoded(output)
        assert len(samples) / rate == pytest.approx(2.0, abs=0.15)
        for half in (samples[: len(samples) // 2], samples[len(samples) // 2 :]):
            assert dominant_frequency(half, rate) == pytest.approx(440, abs=5)


def test_parameters_are_validated() -> None:
    from tasks import get

    kind = get("audio.convert")
    assert kind is not None
    params, errors = kind.validate({"url": "http://a/b.wav"})
    assert not errors and params["codec"] == "mp3" and params["force"] is False
    _, errors = kind.validate({"url": "http://a/b.wav", "codec": "flac", "force": "yes"})
    assert set(errors) == {"codec", "force"}
