#!/usr/bin/env python3
"""Writes hand-made digit images to tests/fixtures/digits/ (run by hand; needs Pillow and the
DejaVu fonts): the digits 0-9 rendered with fonts, in the ways people photograph or draw them.

- font_D.png: black digit on white, 160x160, off-centre (DejaVu Sans).
- inv_D.jpg: white digit on black, 100x140, JPEG (DejaVu Serif Bold).
- blue_D.bmp: blue ink on light yellow paper, 150x100, digit small and off to the side, BMP.
- tilt_D.gif: black on white, rotated 10 degrees, GIF (DejaVu Sans Mono).
- tiny_D.pgm: a 20x24 PGM (DejaVu Sans Bold).
Plus blank.png (white paper, no digit) and broken.png (not an image).
"""
import pathlib

from PIL import Image, ImageDraw, ImageFont

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "digits"
FONTS = pathlib.Path("/usr/share/fonts/truetype/dejavu")


def font(name, size):
    return ImageFont.truetype(str(FONTS / name), size)


def draw(size, bg, fg, text, f, at, mode="RGB"):
    img = Image.new(mode, size, bg)
    ImageDraw.Draw(img).text(at, text, fill=fg, font=f)
    return img


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for d in range(10):
        t = str(d)
        draw((160, 160), "white", "black", t, font("DejaVuSans.ttf", 110), (60, 20)).save(OUT / f"font_{t}.png")
        draw((100, 140), "black", "white", t, font("DejaVuSerif-Bold.ttf", 90), (20, 15)).save(OUT / f"inv_{t}.jpg", quality=90)
        draw((150, 100), (250, 245, 200), (20, 40, 160), t, font("DejaVuSans.ttf", 30), (110, 50)).save(OUT / f"blue_{t}.bmp")
        img = draw((120, 120), "white", "black", t, font("DejaVuSansMono.ttf", 80), (35, 10))
        img.rotate(10, fillcolor="white").convert("P").save(OUT / f"tilt_{t}.gif")
        draw((20, 24), 255, 0, t, font("DejaVuSans-Bold.ttf", 20), (4, 0), mode="L").save(OUT / f"tiny_{t}.pgm")
    Image.new("RGB", (64, 64), "white").save(OUT / "blank.png")
    (OUT / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
