"""`audio.convert`: an audio file transcoded to MP3, Vorbis (in Ogg) or AAC (in M4A).

When the input's audio is already in the wanted codec and `force` is false, its packets are
copied into the output container untouched (no quality lost, no time spent encoding); with
`force` true, or another codec, the audio is decoded and encoded again.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container

from tasks.audio import (
    check_complete,
    codec_name,
    decode,
    origin,
    select_audio,
    stream_duration,
    uniform,
)
from tasks.declare import BOOLEAN, STRING, URL, Job, Kind, Output, Param, TaskError
from tasks.media import describe, open_media


@dataclass(frozen=True)
class Target:
    """How one `codec` choice is written: encoder, container, file extension and MIME type."""

    encoder: str
    codec: str  # FFmpeg's canonical name of the codec, to recognise inputs already in it
    container: str
    extension: str
    content_type: str
    options: tuple[tuple[str, str], ...] = ()
    stereo_only: bool = False


TARGETS = {
    "mp3": Target("libmp3lame", "mp3", "mp3", "mp3", "audio/mpeg"),
    # FFmpeg's own Vorbis encoder (the wheels carry no libvorbis) is flagged experimental and
    # writes two channels only.
    "vorbis": Target(
        "vorbis", "vorbis", "ogg", "ogg", "audio/ogg", (("strict", "experimental"),), True
    ),
    "aac": Target("aac", "aac", "ipod", "m4a", "audio/mp4"),
}
BITRATE_PER_CHANNEL = 64_000
PREFERRED_RATES = (44100, 48000)


def _rate(encoder: av.Codec, rate: int) -> int:
    """The input's sample rate if the encoder takes it, else the closest one it takes."""
    rates = encoder.audio_rates
    if not rates or rate in rates:
        return rate
    for preferred in PREFERRED_RATES:
        if preferred in rates and preferred >= rate:
            return preferred
    return min(rates, key=lambda r: abs(r - rate))


def _reporter(job: Job, total: float, base: float):
    last = [-1.0]

    def report(seconds: float) -> None:
        if total <= 0:
            return
        done = max(0.0, min(100.0, 100.0 * (seconds - base) / total))
        if done - last[0] >= 1.0:
            last[0] = done
            job.progress(done)

    return report


def _copy(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    out: av.container.OutputContainer,
    report: Any,
) -> float:
    """Copies the stream's packets into `out` (a remux: no decoding); returns the seconds of
    audio they hold."""
    target = out.add_stream_from_template(stream)
    ticks = 0
    for packet in container.demux(stream):
        if packet.dts is None:
            continue  # the demuxer's final empty packet
        if packet.pts is not None and packet.time_base is not None:
            report(float(packet.pts * packet.time_base))
        ticks += packet.duration or 0
        packet.stream = target
        out.mux(packet)
    if not ticks or stream.time_base is None:
        raise TaskError("the file holds no audio we can read")
    return float(ticks * stream.time_base)


def _transcode(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    out: av.container.OutputContainer,
    target: Target,
    report: Any,
) -> float:
    """Decodes the stream and encodes it into `out`, frame by frame; PyAV's encoder resamples
    each frame to the encoder's sample format, layout and frame size. Returns the seconds of
    audio decoded."""
    encoder = av.Codec(target.encoder, "w")
    channels = stream.codec_context.channels
    rate = _rate(encoder, stream.codec_context.sample_rate or 44100)
    encoded = out.add_stream(target.encoder, rate=rate)
    encoded.layout = "mono" if channels == 1 and not target.stereo_only else "stereo"
    encoded.bit_rate = BITRATE_PER_CHANNEL * (1 if encoded.layout.name == "mono" else 2)
    if target.options:
        encoded.codec_context.options = dict(target.options)
    written = 0  # samples so far: the output's timestamps, from 0 and without gaps
    input_rate = 0
    for frame in uniform(decode(container, stream)):
        if frame.pts is not None and frame.time_base is not None:
            report(float(frame.pts * frame.time_base))
        input_rate = input_rate or frame.sample_rate
        frame.pts, frame.time_base = written, Fraction(1, input_rate)
        written += frame.samples
        for packet in encoded.encode(frame):
            out.mux(packet)
    if not written:
        raise TaskError("the file holds no audio we can decode")
    for packet in encoded.encode(None):
        out.mux(packet)
    return written / input_rate


def run(job: Job) -> dict[str, Any]:
    target = TARGETS[job.params["codec"]]
    name = f"audio.{target.extension}"
    path = job.workdir / name
    with open_media(job.inputs["url"], need="audio") as container:
        stream = select_audio(container)
        report = _reporter(job, stream_duration(container, stream), origin(container))
        copy = codec_name(stream) == target.codec and not job.params["force"]
        try:
            with av.open(str(path), "w", format=target.container) as out:
                if copy:
                    decoded = _copy(container, stream, out, report)
                else:
                    decoded = _transcode(container, stream, out, target, report)
        except av.FFmpegError as e:
            raise TaskError(describe(e)) from None
        check_complete(job.inputs["url"], container, stream, 0.0, decoded)
    return {
        "duration": _output_duration(path),
        "content_type": target.content_type,
        "output": name,
    }


def _output_duration(path: Path) -> float:
    with open_media(path, need="audio") as written:
        stream = select_audio(written)
        seconds = stream_duration(written, stream)
    if seconds <= 0:
        raise TaskError("the input holds no audio that could be converted")
    return round(seconds, 2)


KIND = Kind(
    name="audio.convert",
    help="Transcode an audio file (mp3, vorbis in Ogg, aac in M4A), and return its duration.",
    params=(
        Param("url", URL, "URL of the audio file to be converted.", required=True),
        Param(
            "codec",
            STRING,
            "Desired codec for the output file: mp3 (in an .mp3 file), vorbis (in Ogg) or aac "
            "(in M4A).",
            default="mp3",
            choices=tuple(TARGETS),
        ),
        Param(
            "force",
            BOOLEAN,
            "Force encoding. When false and the input's audio already uses the desired codec, "
            "it is copied into the output container without re-encoding.",
            default=False,
        ),
    ),
    outputs=(
        Output("duration", "float", "Duration of the output audio in seconds (1/100th second)."),
        Output("content_type", "string", "Output file content type."),
    ),
    output_files=(Output("output", "file", "URL of the output file."),),
    run=run,
    time_limit=600.0,
)
