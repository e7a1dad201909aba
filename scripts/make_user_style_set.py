#!/usr/bin/env python3
"""Writes the user-style test set to tests/fixtures/user_style/ (run by hand; needs numpy,
Pillow and the DejaVu fonts under /usr/share/fonts/truetype/dejavu; CI never runs it).

Digits the way people hand them to `mnist-cnn predict`: drawn with a pen or a finger, typeset,
photographed on paper, in coloured inks or dark mode, noisy, blurred, JPEG-compressed, rotated.
It is NOT MNIST and it is never used for training: it only measures how well `predict`'s
preprocessing brings such images to what the network knows (`mnist-cnn eval --images DIR`).

Seeded (SEED below): running it again writes the same files. Each style has PER_STYLE images,
every digit PER_STYLE/10 times. File names are STYLE_DIGIT_NN.EXT, and labels.csv lists
file,label,style.

Styles:
- pen:       synthesised pen strokes (jittered stroke paths per digit), widths 3-12% of the
             digit's height with varying pressure, dark ink on white paper of various sizes.
- thin-pen:  the same strokes 1-2.5 px wide on large canvases (260-600 px).
- font:      DejaVu fonts (sans, serif, mono, condensed; light to bold; italic), sizes and
             positions varied, black on white.
- color:     coloured inks on coloured paper (pen strokes and fonts).
- dark-mode: light ink on a dark background (pen strokes and fonts).
- photo:     pen strokes on paper photographed: paper texture, a lighting gradient, vignetting,
             a shadow, slight perspective and rotation, grain, JPEG.
- noise:     Gaussian and salt-and-pepper noise over pen strokes or fonts.
- blur:      Gaussian or box blur of pen strokes or fonts.
- jpeg:      JPEG at quality 8-30 (blocking and ringing).
- rotated:   rotated by 10-25 degrees either way.
"""
import csv
import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "user_style"
FONTS = pathlib.Path("/usr/share/fonts/truetype/dejavu")
SEED = 11
PER_STYLE = 25
SS = 4  # supersampling of the stroke renderer

FONT_FILES = [
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-ExtraLight.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf", "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerifCondensed.ttf",
]


def arc(cx, cy, rx, ry, a0, a1, n=24):
    """Points of an elliptic arc; angles in degrees, y down (-90 is the top)."""
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def line(*pts, n=12):
    out = []
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        t = np.linspace(0, 1, n)[:, None]
        out.append(np.array([x0, y0]) * (1 - t) + np.array([x1, y1]) * t)
    return np.concatenate(out)


def strokes(d, rng):
    """Stroke paths (lists of (x, y) in a unit box, y down) of digit d, in one of its forms."""
    v = rng.integers(2)
    if d == 0:
        return [arc(0.5, 0.5, 0.3, 0.46, -100, 265, 40)]
    if d == 1:
        s = [line((0.5, 0.03), (0.5, 0.97))]
        if v:
            s.append(line((0.32, 0.2), (0.5, 0.03)))
        return s
    if d == 2:
        return [np.concatenate([arc(0.5, 0.3, 0.28, 0.25, 190, 380, 20), line((0.76, 0.42), (0.2, 0.95), (0.85, 0.95))])]
    if d == 3:
        return [np.concatenate([arc(0.48, 0.27, 0.26, 0.23, -160, 90, 24), arc(0.48, 0.72, 0.3, 0.24, -90, 155, 24)])]
    if d == 4:
        if v:
            return [line((0.65, 0.97), (0.65, 0.03), (0.12, 0.66), (0.88, 0.66))]
        return [line((0.22, 0.03), (0.17, 0.6), (0.85, 0.6)), line((0.66, 0.25), (0.66, 0.97))]
    if d == 5:
        return [np.concatenate([line((0.8, 0.04), (0.3, 0.04), (0.26, 0.44)), arc(0.5, 0.68, 0.3, 0.28, -145, 150, 24)])]
    if d == 6:
        return [np.concatenate([arc(0.85, 0.7, 0.6, 0.68, -115, -180, 16), arc(0.48, 0.74, 0.23, 0.22, 180, 540, 32)])]
    if d == 7:
        s = [line((0.12, 0.04), (0.86, 0.04), (0.4, 0.97))]
        if v:
            s.append(line((0.38, 0.52), (0.78, 0.52)))
        return s
    if d == 8:
        return [np.concatenate([arc(0.5, 0.27, 0.23, 0.23, 90, 450, 32), arc(0.5, 0.72, 0.28, 0.25, -90, 270, 32)])]
    # 9
    if v:
        return [np.concatenate([arc(0.5, 0.3, 0.27, 0.26, 0, 360, 32), line((0.77, 0.3), (0.68, 0.97))])]
    return [np.concatenate([arc(0.5, 0.3, 0.27, 0.26, 0, 360, 32), arc(0.2, 0.3, 0.57, 0.67, 0, 80, 12)])]


def jitter(paths, rng):
    """A random affine (aspect, shear, small rotation) and a smooth wobble along each path."""
    sx = rng.uniform(0.75, 1.15)
    sh = rng.uniform(-0.25, 0.25)
    rot = math.radians(rng.uniform(-6, 6))
    c, s = math.cos(rot), math.sin(rot)
    out = []
    for p in paths:
        q = p - 0.5
        q = np.stack([q[:, 0] * sx + sh * q[:, 1], q[:, 1]], 1)
        q = np.stack([c * q[:, 0] - s * q[:, 1], s * q[:, 0] + c * q[:, 1]], 1)
        n = len(q)
        t = np.linspace(0, 1, n)
        for k in range(2):
            a, f, ph = rng.uniform(0.005, 0.025), rng.uniform(1, 3), rng.uniform(0, 6.3)
            q[:, k] += a * np.sin(2 * math.pi * f * t + ph)
        out.append(q + 0.5)
    return out


def pen_mask(d, rng, w, h, height_frac, width_px, pressure=True):
    """A float mask (h, w) in 0..1 of a hand-drawn digit: stroke width `width_px` (canvas
    pixels), digit height height_frac of the canvas, placed at random."""
    paths = jitter(strokes(d, rng), rng)
    dh = height_frac * h
    pts = np.concatenate(paths)
    lo, hi = pts.min(0), pts.max(0)
    # The digit's height is height_frac of the canvas, unless its width would not fit.
    scale = min(dh / (hi[1] - lo[1]), (0.9 * w - 2 * width_px) / (hi[0] - lo[0]))
    dw, dh = (hi[0] - lo[0]) * scale, (hi[1] - lo[1]) * scale
    ox = rng.uniform(width_px + 2, max(width_px + 3, w - dw - width_px - 2))
    oy = rng.uniform(width_px + 2, max(width_px + 3, h - dh - width_px - 2))
    img = Image.new("L", (w * SS, h * SS), 0)
    dr = ImageDraw.Draw(img)
    for p in paths:
        q = ((p - lo) * scale + [ox, oy]) * SS
        n = len(q)
        # Pressure: the width and the darkness vary smoothly along the stroke.
        ph = rng.uniform(0, 6.3)
        for i in range(n - 1):
            k = 0.75 + 0.25 * math.sin(ph + 3 * i / n) if pressure else 1.0
            wi = max(1.0, width_px * SS * k)
            ink = int(255 * (0.8 + 0.2 * k)) if pressure else 255
            dr.line([tuple(q[i]), tuple(q[i + 1])], fill=ink, width=int(round(wi)))
            r = wi / 2
            dr.ellipse([q[i + 1][0] - r, q[i + 1][1] - r, q[i + 1][0] + r, q[i + 1][1] + r], fill=ink)
    img = img.resize((w, h), Image.Resampling.BOX)
    return np.asarray(img, np.float32) / 255.0


def font_mask(d, rng, w, h, height_frac):
    f = ImageFont.truetype(str(FONTS / FONT_FILES[rng.integers(len(FONT_FILES))]), 100)
    x0, y0, x1, y1 = f.getbbox(str(d))
    # The digit's height is height_frac of the canvas, unless its width would not fit.
    size = int(100 * min(height_frac * h / (y1 - y0), 0.9 * w / (x1 - x0)))
    f = f.font_variant(size=size)
    x0, y0, x1, y1 = f.getbbox(str(d))
    img = Image.new("L", (w, h), 0)
    px = rng.uniform(2, max(3, w - (x1 - x0) - 2)) - x0
    py = rng.uniform(2, max(3, h - (y1 - y0) - 2)) - y0
    ImageDraw.Draw(img).text((px, py), str(d), fill=255, font=f)
    return np.asarray(img, np.float32) / 255.0


def compose(mask, paper, ink):
    """RGB float image: ink over paper, by mask."""
    m = mask[..., None]
    return np.asarray(paper, np.float32) * (1 - m) + np.asarray(ink, np.float32) * m


def to_img(a):
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))


def smooth_noise(rng, h, w, cells):
    """Low-frequency noise in about -1..1 (bilinear upsampling of a coarse grid)."""
    g = rng.normal(0, 1, (cells + 1, cells + 1)).astype(np.float32)
    im = Image.fromarray(g, mode="F").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(im) / 1.5


def any_mask(d, rng, w, h):
    if rng.random() < 0.5:
        return font_mask(d, rng, w, h, rng.uniform(0.4, 0.8))
    return pen_mask(d, rng, w, h, rng.uniform(0.4, 0.8), rng.uniform(0.04, 0.09) * h)


def make(style, d, rng):
    """(PIL image, extension) of digit d in the style."""
    if style == "pen":
        w, h = int(rng.integers(60, 260)), int(rng.integers(60, 260))
        frac = rng.uniform(0.4, 0.85)
        m = pen_mask(d, rng, w, h, frac, rng.uniform(0.03, 0.12) * frac * h)
        g = rng.uniform(0, 90)
        return to_img(compose(m, (250, 250, 250), (g, g, g)).mean(2)), "png"
    if style == "thin-pen":
        w, h = int(rng.integers(260, 600)), int(rng.integers(260, 600))
        m = pen_mask(d, rng, w, h, rng.uniform(0.3, 0.8), rng.uniform(1.0, 2.5))
        ink = rng.choice([(0, 0, 0), (20, 30, 120), (60, 60, 60)])
        return to_img(compose(m, (255, 255, 255), ink)).convert("L" if ink[0] == ink[2] else "RGB"), "png"
    if style == "font":
        w, h = int(rng.integers(40, 220)), int(rng.integers(40, 220))
        m = font_mask(d, rng, w, h, rng.uniform(0.35, 0.9))
        return to_img(compose(m, (255, 255, 255), (0, 0, 0)).mean(2)), "png"
    if style == "color":
        w, h = int(rng.integers(60, 220)), int(rng.integers(60, 220))
        m = any_mask(d, rng, w, h)
        pairs = [((250, 240, 180), (20, 40, 170)), ((200, 230, 255), (180, 20, 20)),
                 ((255, 220, 230), (20, 110, 40)), ((230, 255, 210), (120, 20, 140)),
                 ((255, 200, 120), (30, 30, 120)), ((180, 220, 180), (150, 30, 30)),
                 ((240, 240, 255), (230, 90, 20)), ((255, 255, 160), (200, 40, 160))]
        paper, ink = pairs[rng.integers(len(pairs))]
        return to_img(compose(m, paper, ink)), "png"
    if style == "dark-mode":
        w, h = int(rng.integers(60, 220)), int(rng.integers(60, 220))
        m = any_mask(d, rng, w, h)
        bgs = [(18, 18, 18), (30, 33, 40), (40, 44, 52), (0, 0, 0), (25, 25, 60)]
        inks = [(240, 240, 240), (200, 200, 200), (120, 200, 255), (255, 210, 90), (140, 240, 140)]
        return to_img(compose(m, bgs[rng.integers(len(bgs))], inks[rng.integers(len(inks))])), "png"
    if style == "photo":
        w, h = int(rng.integers(220, 340)), int(rng.integers(220, 340))
        m = pen_mask(d, rng, w, h, rng.uniform(0.35, 0.65), rng.uniform(0.04, 0.08) * h * 0.5)
        base = np.array([rng.uniform(200, 245), rng.uniform(195, 240), rng.uniform(180, 230)])
        tex = 8 * smooth_noise(rng, h, w, 12)[..., None] + rng.normal(0, 3, (h, w, 1))
        paper = base + tex
        ink = np.array([rng.uniform(10, 60), rng.uniform(10, 60), rng.uniform(20, 90)])
        img = compose(m, paper, ink)
        # Light: a gradient across the frame, vignetting, and a soft shadow from one side.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * math.pi)
        ramp = ((xx / w - 0.5) * math.cos(a) + (yy / h - 0.5) * math.sin(a)) + 0.5
        light = 1 - rng.uniform(0.25, 0.5) * np.clip(ramp, 0, 1)
        r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2
        light *= 1 - rng.uniform(0.1, 0.35) * r2
        if rng.random() < 0.5:
            edge = xx / w if rng.random() < 0.5 else yy / h
            light *= 1 - 0.25 / (1 + np.exp((edge - rng.uniform(0.05, 0.2)) * 40))
        img = img * light[..., None]
        im = to_img(img)
        # Slight perspective and rotation.
        k = rng.uniform(-0.0006, 0.0006, 2)
        coeffs = (1 + rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), 0,
                  rng.uniform(-0.05, 0.05), 1 + rng.uniform(-0.05, 0.05), 0, k[0] / 2, k[1] / 2)
        fill = tuple(int(v * 0.6) for v in base)
        im = im.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill)
        im = im.rotate(rng.uniform(-8, 8), Image.Resampling.BILINEAR, fillcolor=fill)
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
        return im, "jpg"
    if style == "noise":
        w, h = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        m = any_mask(d, rng, w, h)
        img = compose(m, (235, 235, 235), (20, 20, 20)).mean(2)
        if rng.random() < 0.5:
            img = img + rng.normal(0, rng.uniform(20, 45), img.shape)
        else:
            r = rng.random(img.shape)
            p = rng.uniform(0.02, 0.08)
            img = np.where(r < p / 2, 0, np.where(r > 1 - p / 2, 255, img))
        return to_img(img), "png"
    if style == "blur":
        w, h = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        m = any_mask(d, rng, w, h)
        im = to_img(compose(m, (245, 245, 245), (15, 15, 15)).mean(2))
        r = rng.uniform(0.02, 0.05) * min(w, h)
        f = ImageFilter.GaussianBlur(r) if rng.random() < 0.6 else ImageFilter.BoxBlur(r)
        return im.filter(f), "png"
    if style == "jpeg":
        w, h = int(rng.integers(50, 200)), int(rng.integers(50, 200))
        m = any_mask(d, rng, w, h)
        if rng.random() < 0.5:
            return to_img(compose(m, (250, 250, 250), (10, 10, 10))), "jpg:%d" % rng.integers(8, 30)
        return to_img(compose(m, (250, 240, 200), (20, 40, 160))), "jpg:%d" % rng.integers(8, 30)
    if style == "rotated":
        w, h = int(rng.integers(80, 220)), int(rng.integers(80, 220))
        m = any_mask(d, rng, w, h)
        ang = rng.uniform(10, 25) * rng.choice([-1, 1])
        mi = Image.fromarray((m * 255).astype(np.uint8)).rotate(ang, Image.Resampling.BILINEAR, expand=True)
        m = np.asarray(mi, np.float32) / 255
        return to_img(compose(m, (250, 250, 250), (10, 10, 10)).mean(2)), "png"
    raise ValueError(style)


STYLES = ["pen", "thin-pen", "font", "color", "dark-mode", "photo", "noise", "blur", "jpeg", "rotated"]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():
        if f.suffix in (".png", ".jpg", ".csv"):
            f.unlink()
    rows = []
    for si, style in enumerate(STYLES):
        rng = np.random.default_rng([SEED, si])
        for i in range(PER_STYLE):
            d = i % 10
            im, ext = make(style, d, rng)
            q = 85
            if ext.startswith("jpg:"):
                ext, q = "jpg", int(ext[4:])
            name = f"{style}_{d}_{i:02d}.{ext}"
            if ext == "jpg":
                im.convert("RGB").save(OUT / name, quality=q)
            else:
                im.save(OUT / name, optimize=True)
            rows.append((name, d, style))
    with open(OUT / "labels.csv", "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["file", "label", "style"])
        wr.writerows(rows)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(rows)} images ({total / 1e6:.2f} MB) to {OUT}")


if __name__ == "__main__":
    main()
