"""Output geometry shared by the image and video kinds: fit, fill-and-crop, and the play icon.

With `crop` false the picture fits inside width x height keeping its aspect ratio; with `crop`
true it fills width x height exactly and the overflow is cut around the centre; with only one
of width or height, the other follows the aspect ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Geometry:
    """Scale the source to `scaled`, then cut `crop` (left, top, right, bottom) out of it."""

    scaled: tuple[int, int]
    crop: tuple[int, int, int, int] | None

    @property
    def size(self) -> tuple[int, int]:
        """The output size."""
        if self.crop is None:
            return self.scaled
        left, top, right, bottom = self.crop
        return right - left, bottom - top


def _even(n: int) -> int:
    return max(2, n - n % 2)


def plan(
    source: tuple[int, int],
    width: int | None,
    height: int | None,
    crop: bool = False,
    even: bool = False,
) -> Geometry:
    """The geometry that turns a `source`-sized picture into the requested size. `even` rounds
    the output to even dimensions (H.264 with 4:2:0 chroma needs them)."""
    sw, sh = source
    fix = _even if even else (lambda n: max(1, n))
    if not width and not height:
        return Geometry((fix(sw), fix(sh)), None)
    if not width or not height:
        scale = (width / sw) if width else (height / sh)  # type: ignore[operator]
        return Geometry((fix(round(sw * scale)), fix(round(sh * scale))), None)
    if not crop:
        scale = min(width / sw, height / sh)
        return Geometry((fix(round(sw * scale)), fix(round(sh * scale))), None)
    scale = max(width / sw, height / sh)
    scaled = (max(width, round(sw * scale)), max(height, round(sh * scale)))
    w, h = fix(width), fix(height)
    left = (scaled[0] - w) // 2
    top = (scaled[1] - h) // 2
    return Geometry(scaled, (left, top, left + w, top + h))


def apply(image: Image.Image, geometry: Geometry) -> Image.Image:
    """Resizes (and crops) a Pillow image according to `geometry`."""
    if image.size != geometry.scaled:
        image = image.resize(geometry.scaled, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if geometry.crop is not None:
        image = image.crop(geometry.crop)
    return image


def draw_play_icon(image: Image.Image) -> Image.Image:
    """Draws a play icon (a white triangle on a dark translucent disc) in the centre."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    w, h = base.size
    r = max(4, min(w, h) // 6)
    cx, cy = w // 2, h // 2
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(0, 0, 0, 140))
    t = r * 0.55
    draw.polygon(
        [(cx - t * 0.6, cy - t), (cx - t * 0.6, cy + t), (cx + t, cy)], fill=(255, 255, 255, 230)
    )
    out = Image.alpha_composite(base, overlay)
    return out if image.mode == "RGBA" else out.convert(image.mode if image.mode != "P" else "RGB")
