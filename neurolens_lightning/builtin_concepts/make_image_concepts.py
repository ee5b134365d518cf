#!/usr/bin/env python
"""Generate the built-in IMAGE concept probes (``red``, ``striped``, ``circle``).

Standalone script (only PIL + numpy).  Output is fully deterministic: every
image is drawn from its own ``numpy.random.default_rng`` seeded by
(concept, group, index), so re-running the script reproduces the same files.

Layout written next to this script::

    images/<concept>/pos_<group>_<i>.png   64x64 RGB positives
    images/<concept>/neg_<i>.png           64x64 RGB negatives
    <concept>.json                         concept spec (paths relative to it)

Positive ``j`` (counting over groups in order) and ``neg_j`` are *matched*:
they share the same composition (shape, position, size, background, noise)
and differ only in the concept (colour / texture / shape).

Usage::

    python make_image_concepts.py            # writes next to this file
    python make_image_concepts.py --out DIR  # writes into DIR instead
"""
from __future__ import annotations

import argparse
import colorsys
import json
import os
import shutil
import zlib

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # output resolution (pixels)
SS = 4  # supersampling factor for anti-aliased shapes
N_PER_GROUP = 12  # 4 groups x 12 = 48 positives (and 48 negatives) per concept
NOISE_SIGMA = 3.0  # std of the mild luminance noise (0-255 scale)
NOISE_CELL = 2  # noise is drawn per 2x2 pixel cell (keeps the PNGs small)

CONCEPT_NAMES = ("red", "striped", "circle")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _rng(concept: str, group: str, i: int) -> np.random.Generator:
    seed = zlib.crc32(f"{concept}/{group}/{i}".encode("utf-8"))
    return np.random.default_rng(seed)


def _hsv(h_deg: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _canvas(bg) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (SIZE * SS, SIZE * SS), tuple(int(v) for v in bg))
    return img, ImageDraw.Draw(img)


def _shape_mask(kind: str, cx: float, cy: float, r: float, ring: float = 0.0) -> Image.Image:
    """Supersampled 'L' mask of a shape centred at (cx, cy) with size r (pixels).

    kind: 'disc' | 'square' | 'triangle'.  Sizes are roughly area-matched to a
    disc of radius r.  ring > 0 draws only an outline of that width (pixels).
    """
    m = Image.new("L", (SIZE * SS, SIZE * SS), 0)
    d = ImageDraw.Draw(m)
    cx, cy = cx * SS, cy * SS
    if kind in ("disc", "square"):
        h = r * SS if kind == "disc" else 0.886 * r * SS  # square side = r * sqrt(pi) -> the disc's area
        draw = d.ellipse if kind == "disc" else d.rectangle
        box = [cx - h, cy - h, cx + h, cy + h]
        style = {"outline": 255, "width": max(1, int(round(ring * SS)))} if ring else {"fill": 255}
        draw(box, **style)
    elif kind == "triangle":
        rr = 1.3 * r * SS  # circumradius (a bit larger so the area is similar)
        pts = [
            (cx + rr * np.cos(a), cy + rr * np.sin(a))
            for a in (-np.pi / 2, -np.pi / 2 + 2 * np.pi / 3, -np.pi / 2 + 4 * np.pi / 3)
        ]
        # shift down slightly so the visual centre matches the disc centre
        pts = [(x, y + 0.25 * rr) for x, y in pts]
        if ring:
            d.polygon(pts, outline=255, width=max(1, int(round(ring * SS))))
        else:
            d.polygon(pts, fill=255)
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    return m


def _paste_flat(img: Image.Image, mask: Image.Image, colour) -> None:
    img.paste(tuple(int(v) for v in colour), (0, 0), mask)


def _finish(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Downsample the supersampled canvas and add mild luminance noise."""
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.LANCZOS)
    a = np.asarray(img, dtype=np.float32)
    k = SIZE // NOISE_CELL
    noise = np.round(rng.normal(0.0, NOISE_SIGMA, size=(k, k, 1)))
    noise = noise.repeat(NOISE_CELL, axis=0).repeat(NOISE_CELL, axis=1)
    a = np.clip(a + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB")


def _stripe_field(n: int, angle_deg: float, period: float, phase: float) -> np.ndarray:
    """Boolean n x n field of stripes (in supersampled pixels)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    t = np.deg2rad(angle_deg)
    proj = x * np.cos(t) + y * np.sin(t) + phase
    return np.mod(proj, period) < (period / 2.0)


def _blob_field(n: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean n x n field of isotropic random blobs (~50% coverage), no stripes."""
    g = rng.random((6, 6)).astype(np.float32)
    im = Image.fromarray((g * 255).astype(np.uint8), "L").resize((n, n), Image.BICUBIC)
    a = np.asarray(im, dtype=np.float32)
    return a > np.median(a)


def _two_colour(field: np.ndarray, c1, c2) -> Image.Image:
    a = np.where(field[..., None], np.array(c1, np.uint8), np.array(c2, np.uint8))
    return Image.fromarray(a.astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- #
# concept: red
# --------------------------------------------------------------------------- #
NEUTRAL_BGS = [(245, 245, 245), (200, 200, 200), (120, 120, 120), (40, 40, 40), (225, 215, 190), (20, 20, 30)]
# non-red replacement hues (degrees) for the matched negatives; None = gray
NON_RED_HUES = [220.0, 120.0, 55.0, None, 275.0, 185.0]


def _red_pair(group: str, i: int):
    rng = _rng("red", group, i)
    hue = float(rng.uniform(-8.0, 8.0))
    sat = float(rng.uniform(0.75, 1.0))
    val = float(rng.uniform(0.6, 1.0))
    red = _hsv(hue, sat, val)
    other_h = NON_RED_HUES[i % len(NON_RED_HUES)]
    other = _hsv(0.0, 0.0, 0.55 + 0.35 * (val - 0.6) / 0.4) if other_h is None else _hsv(other_h, sat, val)
    bg = NEUTRAL_BGS[int(rng.integers(len(NEUTRAL_BGS)))]
    noise_seed = int(rng.integers(2**31))

    def draw(col):
        # the layout comes from its own generator, re-seeded for the pos and the neg,
        # so both images share exactly the same composition
        lay = np.random.default_rng(noise_seed + 1)
        if group == "background":
            # red fills the background; a small neutral object sits on top
            img, _ = _canvas(col)
            kind = ("disc", "square", "triangle")[i % 3]
            r = float(lay.uniform(5, 10))
            cx, cy = lay.uniform(r + 4, SIZE - r - 4, size=2)
            _paste_flat(img, _shape_mask(kind, cx, cy, r), bg)
        else:
            img, _ = _canvas(bg)
            r = float(lay.uniform(11, 24))
            cx, cy = lay.uniform(r + 2, SIZE - r - 2, size=2)
            _paste_flat(img, _shape_mask(group, cx, cy, r), col)
        return _finish(img, np.random.default_rng(noise_seed))

    pos = draw(red)
    neg = draw(other)
    return pos, neg


# --------------------------------------------------------------------------- #
# concept: striped
# --------------------------------------------------------------------------- #
def _stripe_colours(rng: np.random.Generator):
    h1 = float(rng.uniform(0, 360))
    mode = int(rng.integers(3))
    if mode == 0:  # dark / light of the same hue
        return _hsv(h1, 0.7, 0.3), _hsv(h1, 0.35, 0.95)
    if mode == 1:  # two different hues with a brightness contrast
        h2 = h1 + float(rng.uniform(90, 270))
        return _hsv(h1, 0.85, 0.9), _hsv(h2, 0.8, 0.35)
    return (25, 25, 25), _hsv(h1, 0.15, 0.95)  # near black / near white


def _striped_pair(group: str, i: int):
    rng = _rng("striped", group, i)
    c1, c2 = _stripe_colours(rng)
    period = float(rng.uniform(5.0, 16.0)) * SS
    phase = float(rng.uniform(0, period))
    if group == "horizontal":
        angle = 90.0 + float(rng.uniform(-4, 4))
    elif group == "vertical":
        angle = 0.0 + float(rng.uniform(-4, 4))
    elif group == "diagonal":
        angle = float(rng.choice([45.0, 135.0])) + float(rng.uniform(-15, 15))
    else:  # shape: a striped object on a plain background
        angle = float(rng.uniform(0, 180))
    n = SIZE * SS
    stripes = _stripe_field(n, angle, period, phase)
    flat_neg = i % 2 == 0  # negatives alternate between flat colour and blob noise
    blobs = _blob_field(n, rng)
    noise_seed = int(rng.integers(2**31))

    if group != "shape":
        pos = _two_colour(stripes, c1, c2)
        neg = Image.new("RGB", (n, n), c1 if i % 4 == 0 else c2) if flat_neg else _two_colour(blobs, c1, c2)
    else:
        bg = NEUTRAL_BGS[int(rng.integers(len(NEUTRAL_BGS)))]
        kind = ("disc", "square", "triangle")[i % 3]
        r = float(rng.uniform(14, 24))
        cx, cy = rng.uniform(r + 2, SIZE - r - 2, size=2)
        mask = _shape_mask(kind, cx, cy, r)
        pos, _ = _canvas(bg)
        pos.paste(_two_colour(stripes, c1, c2), (0, 0), mask)
        neg, _ = _canvas(bg)
        # flat negatives use whichever stripe colour stands out more from the background
        flat = max((c1, c2), key=lambda c: abs(_luma(c) - _luma(bg)))
        fill = Image.new("RGB", (n, n), flat) if flat_neg else _two_colour(blobs, c1, c2)
        neg.paste(fill, (0, 0), mask)
    pos = _finish(pos, np.random.default_rng(noise_seed))
    neg = _finish(neg, np.random.default_rng(noise_seed))
    return pos, neg


# --------------------------------------------------------------------------- #
# concept: circle
# --------------------------------------------------------------------------- #
CIRCLE_RADII = {"small": (5.0, 9.0), "medium": (10.0, 16.0), "large": (17.0, 26.0), "ring": (10.0, 22.0)}


def _circle_pair(group: str, i: int):
    rng = _rng("circle", group, i)
    lo, hi = CIRCLE_RADII[group]
    r = float(rng.uniform(lo, hi))
    margin = r * 1.3 + 1 if group != "large" else r + 1
    cx, cy = rng.uniform(margin, SIZE - margin, size=2)
    # object and background colours with a clear brightness contrast
    fg = _hsv(float(rng.uniform(0, 360)), float(rng.uniform(0.4, 1.0)), float(rng.uniform(0.5, 1.0)))
    for _ in range(20):
        bg = _hsv(float(rng.uniform(0, 360)), float(rng.uniform(0.0, 0.8)), float(rng.uniform(0.05, 1.0)))
        if abs(_luma(fg) - _luma(bg)) > 60:
            break
    else:
        bg = (10, 10, 10) if _luma(fg) > 128 else (245, 245, 245)
    ring = float(rng.uniform(2.0, 4.0)) if group == "ring" else 0.0
    other = ("square", "triangle")[i % 2]
    noise_seed = int(rng.integers(2**31))

    out = []
    for kind in ("disc", other):
        img, _ = _canvas(bg)
        _paste_flat(img, _shape_mask(kind, cx, cy, r, ring), fg)
        out.append(_finish(img, np.random.default_rng(noise_seed)))
    return out[0], out[1]


# --------------------------------------------------------------------------- #
# driver
# --------------------------------------------------------------------------- #
CONCEPTS = {
    "red": dict(
        description="Images whose dominant object or background is red (various shapes, positions, sizes "
        "and shades); negatives are the same compositions in non-red colours.",
        groups=("disc", "square", "triangle", "background"),
        pair=_red_pair,
    ),
    "striped": dict(
        description="Images with a striped texture (horizontal, vertical, diagonal, or a striped object); "
        "negatives use the same colours and shapes with a flat or blotchy noise texture.",
        groups=("horizontal", "vertical", "diagonal", "shape"),
        pair=_striped_pair,
    ),
    "circle": dict(
        description="Images containing a circle or disc (various sizes, colours, positions and backgrounds); "
        "negatives contain a square or triangle of similar size, colour and position.",
        groups=("small", "medium", "large", "ring"),
        pair=_circle_pair,
    ),
}


def build(out_dir: str, names=CONCEPT_NAMES) -> dict:
    summary = {}
    for name in names:
        spec = CONCEPTS[name]
        img_dir = os.path.join(out_dir, "images", name)
        if os.path.isdir(img_dir):
            shutil.rmtree(img_dir)
        os.makedirs(img_dir)
        groups: dict[str, list[str]] = {}
        negative: list[str] = []
        j = 0
        for group in spec["groups"]:
            groups[group] = []
            for i in range(N_PER_GROUP):
                pos, neg = spec["pair"](group, i)
                pos_rel = f"images/{name}/pos_{group}_{i}.png"
                neg_rel = f"images/{name}/neg_{j}.png"
                pos.save(os.path.join(out_dir, pos_rel), optimize=True)
                neg.save(os.path.join(out_dir, neg_rel), optimize=True)
                groups[group].append(pos_rel)
                negative.append(neg_rel)
                j += 1
        doc = {
            "name": name,
            "modality": "image",
            "description": spec["description"],
            "groups": groups,
            "negative": negative,
        }
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        summary[name] = (len(groups), sum(len(v) for v in groups.values()), len(negative))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    for name, (g, p, n) in build(args.out).items():
        print(f"{name}: {g} groups, {p} positives, {n} negatives")


if __name__ == "__main__":
    main()
