"""image.gif: frames, durations, loops, sizes, EXIF orientation and broken inputs; one run
through the real server with several URLs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from tasks.declare import TaskError
from tests.conftest import Api, Origin, assert_status
from tests.media_audioimage import (
    BLUE,
    GREEN,
    RED,
    broken_files,
    marked_image,
    near,
    rgb_at,
    run_kind,
    solid_image,
)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [
        solid_image(tmp_path / "r.png", RED),
        solid_image(tmp_path / "g.jpg", GREEN),
        solid_image(tmp_path / "b.gif", BLUE),
    ]


def gif(tmp_path: Path, paths: list[Path], **definition) -> tuple[dict, Image.Image]:
    out = tmp_path / "out"
    result = run_kind("image.gif", definition, {"images": paths}, out)
    return result, Image.open(out / result["output"])


def frames(image: Image.Image) -> list[tuple[tuple[int, int, int], int]]:
    """(centre colour, duration in ms) of every frame."""
    return [
        (rgb_at(frame, (frame.width // 2, frame.height // 2)), frame.info["duration"])
        for frame in ImageSequence.Iterator(image)
    ]


def test_one_frame_per_image_looping_forever(tmp_path: Path, images: list[Path]) -> None:
    result, image = gif(tmp_path, images)
    assert result == {"output": "animation.gif"}
    assert image.format == "GIF" and image.size == (40, 30) and image.n_frames == 3
    assert image.info["loop"] == 0
    found = frames(image)
    assert [d for _, d in found] == [100, 100, 100]
    for (color, _), expected in zip(found, (RED, GREEN, BLUE), strict=True):
        assert near(color, expected, 10), color


@pytest.mark.parametrize(("seconds", "ms"), [(0.5, 500), (0.234, 230), (0.016, 20), (2.0, 2000)])
def test_frame_duration_rounded_to_a_hundredth(
    tmp_path: Path, images: list[Path], seconds: float, ms: int
) -> None:
    _, image = gif(tmp_path, images, frame_duration=seconds)
    assert [d for _, d in frames(image)] == [ms] * 3


def test_loop_count_and_no_loop(tmp_path: Path, images: list[Path]) -> None:
    _, image = gif(tmp_path / "three", images, loop=3)
    assert image.info["loop"] == 3
    _, image = gif(tmp_path / "once", images, loop=-1)
    assert "loop" not in image.info  # no NETSCAPE block: played once
    assert image.n_frames == 3


def test_size_fits_each_image_keeping_its_aspect(tmp_path: Path, images: list[Path]) -> None:
    _, image = gif(tmp_path, images, width=20, height=20)
    assert image.size == (20, 20)
    colors = (RED, GREEN, BLUE)
    for frame, color in zip(ImageSequence.Iterator(image), colors, strict=True):
        # 40x30 fitted into 20x20 is 20x15, centred: black bars above and below
        assert near(rgb_at(frame, (10, 10)), color, 10)
        assert rgb_at(frame, (10, 0)) == (0, 0, 0) and rgb_at(frame, (10, 19)) == (0, 0, 0)
        assert rgb_at(frame, (10, 3)) != (0, 0, 0) and rgb_at(frame, (10, 16)) != (0, 0, 0)


def test_one_side_follows_the_first_images_aspect(tmp_path: Path, images: list[Path]) -> None:
    assert gif(tmp_path / "w", images, width=20)[1].size == (20, 15)
    assert gif(tmp_path / "h", images, height=60)[1].size == (80, 60)


def test_images_of_other_sizes_are_fitted(tmp_path: Path) -> None:
    wide = solid_image(tmp_path / "wide.png", RED, (40, 30))
    tall = solid_image(tmp_path / "tall.png", GREEN, (10, 30))
    _, image = gif(tmp_path, [wide, tall])
    assert image.size == (40, 30)
    image.seek(1)
    assert near(rgb_at(image, (20, 15)), GREEN, 10)
    assert rgb_at(image, (2, 15)) == (0, 0, 0) and rgb_at(image, (37, 15)) == (0, 0, 0)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    turned = marked_image(tmp_path / "t.jpg", fmt="JPEG", exif_orientation=6)  # 80x60 stored
    _, image = gif(tmp_path, [turned, turned])
    assert image.size == (60, 80)
    assert near(rgb_at(image, (45, 20)), RED, 40)  # the stored top-left is now top-right


def test_a_broken_image_fails_the_task(tmp_path: Path, images: list[Path]) -> None:
    bad = broken_files(tmp_path, marked_image(tmp_path / "g.jpg", fmt="JPEG"))["random"]
    with pytest.raises(TaskError, match="not an image"):
        gif(tmp_path, [*images, bad])


def test_parameters_are_validated() -> None:
    from tasks import get

    kind = get("image.gif")
    assert kind is not None
    params, errors = kind.validate({"images": ["http://a/1.png"]})
    assert not errors and params["loop"] == 0 and params["frame_duration"] == 0.1
    _, errors = kind.validate({"images": [], "loop": -2, "frame_duration": 0})
    assert set(errors) == {"images", "loop", "frame_duration"}


async def test_through_the_server(api: Api, origin: Origin, tmp_path: Path) -> None:
    urls = [
        origin.add(name, solid_image(tmp_path / name, color).read_bytes())
        for name, color in (("a.png", RED), ("b.png", GREEN), ("c.png", BLUE), ("d.png", RED))
    ]
    status = await api.run(
        {"task_name": "image.gif", "images": urls, "frame_duration": 0.25, "width": 20}
    )
    assert_status(status, "success")
    resp = await api.client.session.get(status["result"]["output"])
    assert resp.status == 200
    out = tmp_path / "out.gif"
    out.write_bytes(await resp.read())
    with Image.open(out) as image:
        assert image.size == (20, 15) and image.n_frames == 4 and image.info["loop"] == 0
        found = frames(image)
    assert [d for _, d in found] == [250] * 4
    for (color, _), expected in zip(found, (RED, GREEN, BLUE, RED), strict=True):
        assert near(color, expected, 10), color
