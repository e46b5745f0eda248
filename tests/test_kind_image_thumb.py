"""image.thumb: fit and crop geometry, rotation direction, EXIF orientations, poster, formats,
transparency, the JPEG draft decoding, and broken or oversized inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from tasks.declare import TaskError
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
)

IDENTITY = (RED, GREEN, BLUE, YELLOW)
# Quadrants (top-left, top-right, bottom-left, bottom-right) after each counter-clockwise turn.
TURNED = {
    0: IDENTITY,
    90: (GREEN, YELLOW, RED, BLUE),
    180: (YELLOW, BLUE, GREEN, RED),
    270: (BLUE, RED, YELLOW, GREEN),
}
# Quadrants as shown, for a marked picture stored with each EXIF orientation.
SHOWN = {
    1: IDENTITY,
    2: (GREEN, RED, YELLOW, BLUE),  # mirrored left to right
    3: (YELLOW, BLUE, GREEN, RED),  # upside down
    4: (BLUE, YELLOW, RED, GREEN),  # mirrored top to bottom
    5: (RED, BLUE, GREEN, YELLOW),  # transposed
    6: (BLUE, RED, YELLOW, GREEN),  # turned a quarter clockwise
    7: (YELLOW, GREEN, BLUE, RED),  # transversed
    8: (GREEN, YELLOW, RED, BLUE),  # turned a quarter counter-clockwise
}


def thumb(tmp_path: Path, source: Path, **definition) -> tuple[dict, Image.Image]:
    out = tmp_path / "out"
    result = run_kind("image.thumb", definition, {"url": source}, out)
    image = Image.open(out / result["output"])
    image.load()
    return result, image


def quadrants(image: Image.Image) -> tuple[tuple[int, int, int], ...]:
    w, h = image.size
    return tuple(rgb_at(image, (x, y)) for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4))


def assert_quadrants(image: Image.Image, expected, tolerance: int = 0) -> None:
    found = quadrants(image)
    assert all(near(f, e, tolerance) for f, e in zip(found, expected, strict=True)), found


@pytest.fixture
def png(tmp_path: Path) -> Path:
    return marked_image(tmp_path / "m.png")  # 80 x 60


def test_fit_keeps_the_aspect_ratio(tmp_path: Path, png: Path) -> None:
    result, image = thumb(tmp_path, png, width=40, height=40, format="png")
    assert result == {
        "width": 40,
        "height": 30,
        "original_width": 80,
        "original_height": 60,
        "output": "thumb.png",
    }
    assert image.size == (40, 30) and image.format == "PNG"
    assert_quadrants(image, IDENTITY)


def test_one_side_or_none(tmp_path: Path, png: Path) -> None:
    assert thumb(tmp_path, png, width=40, format="png")[1].size == (40, 30)
    assert thumb(tmp_path, png, height=15, format="png")[1].size == (20, 15)
    _, image = thumb(tmp_path, png, format="png")
    assert image.size == (80, 60)
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(png).convert("RGB")))


def test_crop_fills_and_cuts_around_the_centre(tmp_path: Path) -> None:
    """An 80x40 picture with a 20-pixel blue band on the left: fitted into 40x40 it keeps a
    10-pixel band; cropped to fill 40x40 the band falls outside."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :] = RED
    pixels[:, :20] = BLUE
    source = tmp_path / "band.png"
    Image.fromarray(pixels).save(source)
    _, fitted = thumb(tmp_path / "fit", source, width=40, height=40, format="png")
    assert fitted.size == (40, 20)
    row = np.asarray(fitted)[10]
    assert (row[:9] == BLUE).all() and (row[11:] == RED).all()
    result, cropped = thumb(tmp_path / "crop", source, width=40, height=40, crop=True, format="png")
    assert cropped.size == (40, 40) and (result["width"], result["height"]) == (40, 40)
    assert (np.asarray(cropped) == RED).all()


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_is_counter_clockwise(tmp_path: Path, png: Path, rotation: int) -> None:
    result, image = thumb(tmp_path, png, rotation=rotation, format="png")
    turned = rotation in (90, 270)
    assert image.size == ((60, 80) if turned else (80, 60))
    assert (result["original_width"], result["original_height"]) == (80, 60)
    assert_quadrants(image, TURNED[rotation])
    # the requested size is the output's: the turned picture is fitted into it
    _, small = thumb(tmp_path / "small", png, rotation=rotation, width=40, height=40, format="png")
    assert small.size == ((30, 40) if turned else (40, 30))
    assert_quadrants(small, TURNED[rotation])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_first(tmp_path: Path, orientation: int) -> None:
    source = marked_image(tmp_path / "o.jpg", fmt="JPEG", exif_orientation=orientation)
    result, image = thumb(tmp_path, source, format="png")
    swapped = orientation >= 5
    assert image.size == ((60, 80) if swapped else (80, 60))
    assert (result["original_width"], result["original_height"]) == (80, 60)
    assert_quadrants(image, SHOWN[orientation], tolerance=30)
    # then the rotation: a quarter turn back undoes orientation 6
    if orientation == 6:
        _, upright = thumb(tmp_path / "r", source, rotation=90, width=40, format="png")
        assert upright.size == (40, 30)
        assert_quadrants(upright, IDENTITY, tolerance=30)


def test_poster_draws_a_play_icon_in_the_centre(tmp_path: Path) -> None:
    source = tmp_path / "grey.png"
    Image.new("RGB", (90, 60), (128, 128, 128)).save(source)
    _, plain = thumb(tmp_path / "plain", source, format="png")
    _, poster = thumb(tmp_path / "poster", source, poster=True, format="png")
    assert rgb_at(plain, (45, 30)) == (128, 128, 128)
    assert min(rgb_at(poster, (46, 30))) > 200  # the white triangle
    assert max(rgb_at(poster, (45, 22))) < 100  # the dark disc around it, above the triangle
    assert rgb_at(poster, (3, 3)) == (128, 128, 128)  # the corners are untouched


@pytest.mark.parametrize(
    ("fmt", "pil_format", "extension"),
    [("jpeg", "JPEG", ".jpg"), ("gif", "GIF", ".gif"), ("png", "PNG", ".png")],
)
def test_formats(tmp_path: Path, png: Path, fmt: str, pil_format: str, extension: str) -> None:
    result, image = thumb(tmp_path, png, width=40, format=fmt)
    assert image.format == pil_format and result["output"].endswith(extension)
    assert_quadrants(image, IDENTITY, tolerance=0 if fmt == "png" else 30)


def test_jpeg_is_the_default(tmp_path: Path, png: Path) -> None:
    assert thumb(tmp_path, png)[1].format == "JPEG"


def test_transparency(tmp_path: Path) -> None:
    """A PNG whose left half is transparent: JPEG lays it on white, PNG and GIF keep it."""
    pixels = np.zeros((20, 40, 4), np.uint8)
    pixels[:, :, :3] = RED
    pixels[:, 20:, 3] = 255
    source = tmp_path / "alpha.png"
    Image.fromarray(pixels, "RGBA").save(source)
    _, jpeg = thumb(tmp_path / "j", source, format="jpeg")
    assert near(rgb_at(jpeg, (5, 10)), (255, 255, 255)) and near(rgb_at(jpeg, (35, 10)), RED)
    _, png = thumb(tmp_path / "p", source, format="png")
    assert (
        png.mode == "RGBA"
        and png.getpixel((5, 10))[3] == 0
        and png.getpixel((35, 10))
        == (
            *RED,
            255,
        )
    )
    _, gif = thumb(tmp_path / "g", source, format="gif")
    rgba = gif.convert("RGBA")
    assert rgba.getpixel((5, 10))[3] == 0 and rgba.getpixel((35, 10)) == (*RED, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    source = tmp_path / "grey16.png"
    Image.fromarray(np.full((10, 10), 32768, np.uint16)).save(source)
    _, image = thumb(tmp_path, source, format="png")
    assert near(rgb_at(image, (5, 5)), (128, 128, 128), 2)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path, monkeypatch) -> None:
    source = marked_image(tmp_path / "big.jpg", width=1600, height=1200, fmt="JPEG")
    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        found = original(self, mode, size)
        drafts.append(self.size)
        return found

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result, image = thumb(tmp_path, source, width=100, height=100, format="png")
    assert drafts == [(200, 150)]  # 1/8 scale: still twice the 100x75 output
    assert image.size == (100, 75) and result["original_width"] == 1600
    assert_quadrants(image, IDENTITY, tolerance=30)


@pytest.mark.parametrize(("name", "fmt"), [("g.jpg", "JPEG"), ("g.png", "PNG"), ("g.gif", "GIF")])
@pytest.mark.parametrize("broken", ["truncated", "random", "empty"])
def test_broken_images(tmp_path: Path, broken: str, name: str, fmt: str) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    good = tmp_path / name
    Image.fromarray(noise).save(good, format=fmt)  # noise: no format can squeeze it small
    with pytest.raises(TaskError, match=r"truncated|not an image|could not be read"):
        thumb(tmp_path, broken_files(tmp_path, good)[broken])


def test_an_image_over_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="too large"):
        thumb(tmp_path, huge_png(tmp_path / "bomb.png"), width=10)


def test_parameters_are_validated() -> None:
    from tasks import get

    kind = get("image.thumb")
    assert kind is not None
    params, errors = kind.validate({"url": "http://a/b.jpg"})
    assert not errors
    assert params == {
        "url": "http://a/b.jpg",
        "crop": False,
        "rotation": 0,
        "poster": False,
        "format": "jpeg",
    }
    _, errors = kind.validate(
        {"url": "http://a/b.jpg", "rotation": 45, "format": "bmp", "width": 0, "height": 99999}
    )
    assert set(errors) == {"rotation", "format", "width", "height"}
