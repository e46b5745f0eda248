"""image.strip: cells, fit versus crop, wrap, formats, sizes from the first image, limits and
broken inputs; one run through the real server with several URLs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.declare import TaskError
from tests.conftest import Api, Origin, assert_status
from tests.media_audioimage import (
    BLUE,
    GREEN,
    RED,
    YELLOW,
    broken_files,
    huge_png,
    marked_image,
    near,
    rgb_at,
    run_kind,
    solid_image,
)

COLORS = (RED, GREEN, BLUE, YELLOW, (255, 0, 255))
BLACK = (0, 0, 0)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Five 40x30 pictures of one colour each, in several formats."""
    names = ("a.png", "b.jpg", "c.gif", "d.png", "e.jpg")
    return [solid_image(tmp_path / n, c) for n, c in zip(names, COLORS, strict=True)]


def strip(tmp_path: Path, paths: list[Path], **definition) -> tuple[dict, Image.Image]:
    definition.setdefault("format", "png")
    out = tmp_path / "out"
    result = run_kind("image.strip", definition, {"urls": paths}, out)
    image = Image.open(out / result["output"])
    image.load()
    return result, image


def test_cells_wrap_into_rows(tmp_path: Path, images: list[Path]) -> None:
    result, image = strip(tmp_path, images, width=20, height=20, wrap=2, crop=True)
    assert result == {
        "count": 5,
        "width": 40,
        "height": 60,
        "content_type": "image/png",
        "output": "strip.png",
    }
    assert image.size == (40, 60) and image.format == "PNG"
    pixels = np.asarray(image)
    for i, color in enumerate(COLORS):
        x, y = (i % 2) * 20, (i // 2) * 20
        cell = pixels[y : y + 20, x : x + 20].reshape(-1, 3)
        tolerance = 10 if i in (1, 4) else 0  # JPEG sources
        assert np.abs(cell.astype(int) - color).max() <= tolerance, i
    assert (pixels[40:60, 20:40] == BLACK).all()  # the sixth cell is empty


def test_fit_leaves_bars_and_crop_fills(tmp_path: Path, images: list[Path]) -> None:
    _, fitted = strip(tmp_path / "fit", images[:2], width=20, height=20)
    assert fitted.size == (40, 20)
    # 40x30 in a 20x20 cell: 20x15, centred, with black bars of 2 and 3 rows
    column = np.asarray(fitted)[:, 10]
    assert (column[:2] == BLACK).all() and (column[17:] == BLACK).all()
    assert (column[3:16] == RED).all()
    assert near(rgb_at(fitted, (30, 10)), GREEN, 10)
    _, cropped = strip(tmp_path / "crop", images[:2], width=20, height=20, crop=True)
    assert (np.asarray(cropped)[:, :20] == RED).all()


def test_a_single_row_without_wrap(tmp_path: Path, images: list[Path]) -> None:
    result, image = strip(tmp_path, images, width=10, height=10, crop=True)
    assert (result["width"], result["height"], result["count"]) == (50, 10, 5)
    for i, color in enumerate(COLORS):
        assert near(rgb_at(image, (i * 10 + 5, 5)), color, 10)


def test_wrap_wider_than_the_count(tmp_path: Path, images: list[Path]) -> None:
    result, _ = strip(tmp_path, images[:3], width=10, height=10, wrap=8)
    assert (result["width"], result["height"]) == (30, 10)


def test_cell_size_from_the_first_image(tmp_path: Path, images: list[Path]) -> None:
    assert strip(tmp_path / "none", images[:2])[0]["width"] == 80  # two 40x30 cells
    result, _ = strip(tmp_path / "w", images[:2], width=20)
    assert (result["width"], result["height"]) == (40, 15)
    result, _ = strip(tmp_path / "h", images[:2], height=60)
    assert (result["width"], result["height"]) == (160, 60)


def test_jpeg_is_the_default_format(tmp_path: Path, images: list[Path]) -> None:
    out = tmp_path / "out"
    result = run_kind("image.strip", {"width": 20, "height": 20}, {"urls": images}, out)
    assert result["content_type"] == "image/jpeg" and result["output"] == "strip.jpg"
    with Image.open(out / result["output"]) as image:
        assert image.format == "JPEG" and image.size == (100, 20)
        assert near(rgb_at(image, (50, 10)), BLUE, 30)


def test_orientation_and_large_jpegs(tmp_path: Path) -> None:
    """A big JPEG stored sideways is decoded at a reduced scale and shown upright."""
    turned = marked_image(tmp_path / "t.jpg", width=1600, height=1200, fmt="JPEG")
    upright = marked_image(tmp_path / "u.jpg", width=1200, height=1600, fmt="JPEG")
    exif = Image.Exif()
    exif[0x0112] = 8  # shown turned a quarter counter-clockwise: 1200x1600
    Image.open(turned).save(tmp_path / "t8.jpg", exif=exif.tobytes(), quality=95)
    result, image = strip(tmp_path, [tmp_path / "t8.jpg", upright], width=30, height=40)
    assert (result["width"], result["height"]) == (60, 40)
    # the turned one: GREEN (stored top-right) is now top-left
    assert near(rgb_at(image, (7, 10)), GREEN, 40) and near(rgb_at(image, (7, 30)), RED, 40)
    assert near(rgb_at(image, (37, 10)), RED, 40)


def test_a_strip_over_the_pixel_limit_is_refused(tmp_path: Path, images: list[Path]) -> None:
    with pytest.raises(TaskError, match="over the limit"):
        strip(tmp_path, images, width=8192, height=8192)


def test_an_image_over_the_pixel_limit_is_refused(tmp_path: Path, images: list[Path]) -> None:
    with pytest.raises(TaskError, match="too large"):
        strip(tmp_path, [images[0], huge_png(tmp_path / "bomb.png")], width=10, height=10)


@pytest.mark.parametrize("broken", ["truncated", "random", "empty"])
def test_broken_images(tmp_path: Path, images: list[Path], broken: str) -> None:
    good = marked_image(tmp_path / "g.jpg", width=200, height=150, fmt="JPEG")
    bad = broken_files(tmp_path, good)[broken]
    with pytest.raises(TaskError, match=r"truncated|not an image|could not be read"):
        strip(tmp_path, [images[0], bad], width=10, height=10)


def test_parameters_are_validated() -> None:
    from tasks import get

    kind = get("image.strip")
    assert kind is not None
    params, errors = kind.validate({"urls": ["http://a/1.png"]})
    assert not errors and params["crop"] is False and params["format"] == "jpeg"
    _, errors = kind.validate({"urls": "http://a/1.png", "wrap": 0, "format": "gif"})
    assert set(errors) == {"urls", "wrap", "format"}


async def test_through_the_server(api: Api, origin: Origin, tmp_path: Path) -> None:
    urls = [
        origin.add(f"{i}.png", solid_image(tmp_path / f"{i}.png", color).read_bytes())
        for i, color in enumerate(COLORS)
    ]
    status = await api.run(
        {
            "task_name": "image.strip",
            "urls": urls,
            "width": 16,
            "height": 16,
            "crop": True,
            "wrap": 3,
            "format": "png",
        }
    )
    assert_status(status, "success")
    result = status["result"]
    assert (result["count"], result["width"], result["height"]) == (5, 48, 32)
    assert result["content_type"] == "image/png"
    resp = await api.client.session.get(result["output"])
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
    out = tmp_path / "strip.png"
    out.write_bytes(await resp.read())
    with Image.open(out) as image:
        assert image.size == (48, 32)
        for i, color in enumerate(COLORS):
            assert rgb_at(image, ((i % 3) * 16 + 8, (i // 3) * 16 + 8)) == color
        assert rgb_at(image, (40, 24)) == BLACK
