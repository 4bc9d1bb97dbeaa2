"""Pictures with little texture (smooth gradients, smooth fields, shaded renders, bar charts, box
diagrams) and text pages, and their resized, re-encoded copies: the cases a perceptual hash finds
hard, for checking how `audit.links` tells copies from unrelated pictures (tests, benchmarks)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _colour(rng) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float64)


def gradient(rng, size: int = 96) -> Image.Image:
    """A linear (at a random angle) or radial ramp between two random colours."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    a = rng.uniform(0, 2 * np.pi)
    t = np.hypot(x - rng.uniform(), y - rng.uniform()) if rng.random() < 0.5 else np.cos(a) * x + np.sin(a) * y
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    c0, c1 = _colour(rng), _colour(rng)
    return Image.fromarray((c0 + (c1 - c0) * t[..., None]).astype(np.uint8))


def smooth_field(rng, size: int = 96) -> Image.Image:
    """Random colour clouds: noise with a 1/f^2 to 1/f^3 spectrum (much smoother than a photograph)."""
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    f[0, 0] = 1
    chans = []
    for _ in range(3):
        spec = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / f ** rng.uniform(2.0, 3.0)
        x = np.real(np.fft.ifft2(spec))
        chans.append((x - x.min()) / (np.ptp(x) + 1e-9))
    return Image.fromarray((np.stack(chans, -1) * 255).astype(np.uint8))


def render(rng, size: int = 96) -> Image.Image:
    """One or two shaded spheres over a background that darkens downwards, slightly blurred."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    img = _colour(rng) * (0.6 + 0.4 * y[..., None])
    light = np.array([-0.5, -0.5, 0.7]) / np.linalg.norm([-0.5, -0.5, 0.7])
    for _ in range(int(rng.integers(1, 3))):
        cx, cy, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.12, 0.3)
        dx, dy = (x - cx) / r, (y - cy) / r
        inside = dx ** 2 + dy ** 2 < 1
        shade = np.clip(dx * light[0] + dy * light[1] + np.sqrt(np.clip(1 - dx ** 2 - dy ** 2, 0, 1)) * light[2], 0, 1)
        img[inside] = (_colour(rng) * (0.2 + 0.8 * shade[..., None]))[inside]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))


def chart(rng, size: int = 96) -> Image.Image:
    """A bar chart: 3 to 7 bars of random heights on white, with axes."""
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.line([(8, 8), (8, size - 8), (size - 8, size - 8)], fill=(0, 0, 0), width=1)
    k = int(rng.integers(3, 8))
    w, fill = (size - 20) / k, tuple(int(c) for c in _colour(rng))
    for i in range(k):
        h = rng.uniform(0.1, 0.9) * (size - 20)
        colour = fill if rng.random() < 0.7 else tuple(int(c) for c in _colour(rng))
        d.rectangle([10 + i * w + 1, size - 9 - h, 10 + (i + 1) * w - 2, size - 9], fill=colour)
    return im


def diagram(rng, size: int = 96) -> Image.Image:
    """Two to four boxes or ellipses joined by lines, on white or a flat colour."""
    im = Image.new("RGB", (size, size), (255, 255, 255) if rng.random() < 0.7 else tuple(int(c) for c in _colour(rng)))
    d = ImageDraw.Draw(im)
    centres = []
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = (int(v) for v in rng.integers(12, size - 12, 2))
        r = int(rng.integers(6, 14))
        centres.append((cx, cy))
        (d.rectangle if rng.random() < 0.5 else d.ellipse)([cx - r, cy - r // 2 - 2, cx + r, cy + r // 2 + 2],
                                                          outline=(0, 0, 0), fill=tuple(int(c) for c in _colour(rng)))
    for a, b in zip(centres, centres[1:]):
        d.line([a, b], fill=(0, 0, 0), width=1)
    return im


WORDS = "the of and to in is was for on that with as by at from this be are an or it not which".split()


def text_page(rng, size: int = 256) -> Image.Image:
    """Lines of dark text on white: textured, and unrelated pages share their layout (a thumbnail alone
    cannot tell them apart)."""
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d, y = ImageDraw.Draw(im), 6
    while y < size - 12:
        d.text((6 + (20 if rng.random() < 0.15 else 0), y), " ".join(rng.choice(WORDS, int(rng.integers(4, 12)))),
               fill=(20, 20, 20))
        y += 12 + (8 if rng.random() < 0.1 else 0)
    return im


LOW_TEXTURE = {"gradient": gradient, "smooth field": smooth_field, "render": render, "chart": chart,
               "diagram": diagram}


def resized_copy(im: Image.Image, rng, sizes: tuple[int, int] = (72, 80), quality: tuple[int, int] = (50, 90)) -> bytes:
    """A copy as a re-upload makes one: resized (a side drawn from `sizes`, bicubic) and saved as JPEG
    (quality drawn from `quality`); returns the JPEG bytes."""
    side = int(rng.integers(sizes[0], sizes[1] + 1))
    buf = io.BytesIO()
    im.resize((side, side), Image.Resampling.BICUBIC).convert("RGB").save(
        buf, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    return buf.getvalue()
