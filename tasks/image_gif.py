"""`image.gif`: an animated GIF from a list of images."""

from __future__ import annotations

from typing import Any

from PIL import Image

from tasks.declare import FLOAT, INTEGER, URLS, Job, Kind, Output, Param
from tasks.pictures import MAX_SIDE, gif_frame, load_fitted, target_size


def run(job: Job) -> dict[str, Any]:
    p = job.params
    paths = job.inputs["images"]
    size = target_size(paths[0], p.get("width"), p.get("height"))
    frames = []
    for i, path in enumerate(paths):
        picture = load_fitted(path, *size).image
        frame = Image.new("RGB", size, (0, 0, 0))
        offset = (size[0] - picture.width) // 2, (size[1] - picture.height) // 2
        frame.paste(picture, offset, picture if picture.mode == "RGBA" else None)
        frames.append(gif_frame(frame))
        job.progress(100.0 * (i + 1) / len(paths))
    # GIF delays are in 1/100 s; Pillow takes milliseconds.
    delay = max(1, round(p["frame_duration"] * 100)) * 10
    options: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": delay}
    if p["loop"] >= 0:
        options["loop"] = p["loop"]  # 0: forever (no NETSCAPE block at all means play once)
    name = "animation.gif"
    frames[0].save(job.workdir / name, "GIF", **options)
    return {"output": name}


KIND = Kind(
    name="image.gif",
    help="Create an animated GIF from a list of images. Each image is fitted into the GIF's "
    "size, keeping its aspect ratio, centred on black.",
    params=(
        Param(
            "images",
            URLS,
            "The list of image URLs that will be used to create the animated GIF.",
            required=True,
        ),
        Param(
            "loop",
            INTEGER,
            "The number of loops of the GIF, 0 means to loop forever, and -1 no loop.",
            default=0,
            min=-1,
            max=65535,
        ),
        Param(
            "frame_duration",
            FLOAT,
            "The duration in seconds during which each image will be shown when the GIF is "
            "playing, rounded to 1/100th of a second.",
            default=0.1,
            min=0.01,
            max=655.35,
        ),
        Param(
            "width",
            INTEGER,
            "The pixel width of the output GIF. Leave empty to use source images width.",
            min=1,
            max=MAX_SIDE,
        ),
        Param(
            "height",
            INTEGER,
            "The pixel height of the output GIF. Leave empty to use source images height.",
            min=1,
            max=MAX_SIDE,
        ),
    ),
    outputs=(),
    output_files=(Output("output", "file", "The URL of the output GIF."),),
    run=run,
    time_limit=300.0,
)
