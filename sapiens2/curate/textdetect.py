"""Rendered-text detection without weights: the `[clip] text_detector = "strokes"` option.

Overlaid text (captions, meme text, watermarks) is a row of glyphs: shapes of about one height, drawn with
strokes that are thin for their height and contrast with what is around them, side by side on a common
centre line. We look for exactly that, classically:

1. glyph candidates: connected components of a local-contrast threshold (bright on dark, then dark on
   bright) of a text-like height, with thin strokes (twice the distance transform's maximum, the widest
   stroke, under 0.6 of the height), a partly filled box, not cut by the frame; a component wider than a
   glyph is a word whose glyphs touch and counts as one glyph per 0.75 of its height;
2. lines: candidates of similar height, centred on one line, at most a glyph height apart, chained; a line
   needs `MIN_PIECES` components, `MIN_GLYPHS` glyphs and heights within a factor of 2;
3. the score rises with the glyphs of all lines: 0.5 at `GLYPHS_FOR_HALF`.

It needs no weights and catches bold overlays (the tests' planted meme, caption and watermark lines, and
meme text on a real photo) while clean photos score under 0.5. It misses thin or low-contrast text on
busy backgrounds, and, like every such heuristic, counts text that belongs to the scene (signs, badges,
shirts) and may fire on regular rows of small shapes; CLIP's zero-shot score is the default.
"""

from __future__ import annotations

import cv2
import numpy as np

WORK_SIDE = 800  # images are looked at with this long side at most (text sizes are relative to it)
BLOCK = 61  # local mean window of the contrast threshold, pixels (text up to ~1/15 of the long side)
CONTRAST = 30  # grey levels above (below) the local mean that a glyph's pixels stand out by
MIN_GLYPHS = 5  # glyphs of a line before it counts
MIN_PIECES = 4  # and separate components (a few blobs in a row are not a line of text)
GLYPHS_FOR_HALF = 8  # glyphs (in counted lines) that make the score 0.5

Box = tuple[int, int, int, int, int]  # x, y, w, h, glyphs


def _candidates(grey: np.ndarray) -> list[Box]:
    h, w = grey.shape
    found: list[Box] = []
    for g in (grey, 255 - grey):
        mask = cv2.adaptiveThreshold(g, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, BLOCK, -CONTRAST)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        half_width = np.zeros(n, np.float32)  # the thickest stroke of each component, halved
        np.maximum.at(half_width, labels.ravel(), cv2.distanceTransform(mask, cv2.DIST_L2, 3).ravel())
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            if not 8 <= bh <= 0.2 * h or bw < 0.08 * bh or bw > 10 * bh:
                continue
            if x == 0 or y == 0 or x + bw == w or y + bh == h:  # cut by the frame: an object, not a glyph
                continue
            if not 0.15 <= area / (bw * bh) <= 0.85 or 2 * half_width[i] > 0.6 * bh:
                continue
            found.append((x, y, bw, bh, max(1, round(bw / (0.75 * bh)))))  # a word: about one glyph per 0.75 h
    return found


def _chain(boxes: list[Box]) -> list[list[Box]]:
    """Boxes linked when of similar height, on one centre line and at most a glyph height apart."""
    parent = list(range(len(boxes)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, (xi, yi, wi, hi, _) in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            xj, yj, wj, hj, _ = boxes[j]
            tall = max(hi, hj)
            gap = max(xi, xj) - min(xi + wi, xj + wj)
            if (abs(hi - hj) <= 0.3 * tall and abs((2 * yi + hi) - (2 * yj + hj)) <= 0.5 * tall
                    and -0.3 * tall <= gap <= tall):
                parent[root(i)] = root(j)
    groups: dict[int, list[Box]] = {}
    for i, box in enumerate(boxes):
        groups.setdefault(root(i), []).append(box)
    return list(groups.values())


def text_lines(image: np.ndarray) -> list[Box]:
    """Text-like lines of an RGB (or grey) image: (x, y, w, h, glyphs), in the `WORK_SIDE` frame."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = grey.shape
    scale = WORK_SIDE / max(h, w)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lines = []
    for group in _chain(_candidates(grey)):
        glyphs = sum(b[4] for b in group)
        heights = [b[3] for b in group]
        if glyphs >= MIN_GLYPHS and len(group) >= MIN_PIECES and max(heights) <= 2 * min(heights):
            x0, y0 = min(b[0] for b in group), min(b[1] for b in group)
            x1, y1 = max(b[0] + b[2] for b in group), max(b[1] + b[3] for b in group)
            lines.append((x0, y0, x1 - x0, y1 - y0, glyphs))
    return lines


def text_overlay_score(image: np.ndarray) -> float:
    """A score in [0, 1) from the glyphs found in text-like lines: 0 for none, 0.5 at `GLYPHS_FOR_HALF`."""
    glyphs = sum(line[4] for line in text_lines(image))
    return float(1 - 0.5 ** (glyphs / GLYPHS_FOR_HALF))
