"""The curation report: counts per stage, histograms, cluster sizes before/after balancing, and contact
sheets (PNG) per drop reason and per cluster, on one HTML page. People set thresholds by looking at it."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sapiens2.curate.config import CurateConfig
from sapiens2.curate.sources import Item
from sapiens2.curate.stages import REASONS, Batch
from sapiens2.io.images import ImageDecodeError

THUMB = 96  # contact sheet tile side, pixels
SHEET_MAX = 48  # images per contact sheet (the first ones, in manifest order)


def stage_counts(rows: list[dict]) -> list[dict]:
    """Per drop reason in stage order: how many rows reached it and how many it dropped; then the kept."""
    reaching = len(rows)
    out = []
    for reason in REASONS:
        dropped = sum(r["reason"] == reason for r in rows)
        out.append({"reason": reason, "in": reaching, "dropped": dropped})
        reaching -= dropped
    out.append({"reason": "kept", "in": reaching, "dropped": 0})
    return out


def contact_sheet(batch: Batch, columns: int = 8) -> np.ndarray:
    """Letterboxed `THUMB` px tiles of the batch's images, RGB; an image that does not decode is a grey
    tile crossed in red."""
    n = max(1, len(batch))
    rows = (n + columns - 1) // columns
    sheet = np.full((rows * (THUMB + 4), min(n, columns) * (THUMB + 4), 3), 255, np.uint8)
    for i in range(len(batch)):
        y, x = (i // columns) * (THUMB + 4) + 2, (i % columns) * (THUMB + 4) + 2
        tile = np.full((THUMB, THUMB, 3), 64, np.uint8)
        try:
            im = batch.image(i)
            h, w = im.shape[:2]
            s = THUMB / max(h, w)
            small = cv2.resize(im, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            oy, ox = (THUMB - small.shape[0]) // 2, (THUMB - small.shape[1]) // 2
            tile[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
        except ImageDecodeError:
            cv2.line(tile, (8, 8), (THUMB - 9, THUMB - 9), (220, 40, 40), 3)
            cv2.line(tile, (THUMB - 9, 8), (8, THUMB - 9), (220, 40, 40), 3)
        sheet[y:y + THUMB, x:x + THUMB] = tile
    return sheet


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write the PNG")


def svg_histogram(values: Sequence[float], bins: int = 20, width: int = 320, height: int = 120) -> str:
    """An inline SVG bar chart of `values` with the range under it (no plotting library needed)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if not len(v):
        return "<p>(no values)</p>"
    counts, edges = np.histogram(v, bins=bins)
    bw = width / bins
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{height - c / counts.max() * height:.1f}" width="{bw - 1:.1f}" '
        f'height="{c / counts.max() * height:.1f}" fill="#4a7"><title>{edges[i]:.3g}..{edges[i + 1]:.3g}: '
        f'{c}</title></rect>' for i, c in enumerate(counts))
    return (f'<svg width="{width}" height="{height + 16}">{bars}<text x="0" y="{height + 14}" font-size="11">'
            f'{edges[0]:.3g}</text><text x="{width}" y="{height + 14}" font-size="11" text-anchor="end">'
            f'{edges[-1]:.3g}</text></svg>')


def _sheet(by_key: dict[str, Item], keys: list[str], config: CurateConfig) -> np.ndarray:
    return contact_sheet(Batch([by_key[k] for k in keys], config.decode.max_pixels, THUMB * 4))


def write_report(items: Sequence[Item], result, folder: Path, config: CurateConfig) -> Path:
    """``index.html``, ``report.json`` and the contact sheets in `folder`; returns the HTML page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    by_key = {it.key: it for it in items}
    rows = result.table.to_pylist()
    counts = stage_counts(rows)
    sheets: dict[str, str] = {}
    for reason in REASONS:
        keys = [r["key"] for r in rows if r["reason"] == reason][:SHEET_MAX]
        if keys:
            name = f"reason-{reason}.png"
            _write_png(folder / name, _sheet(by_key, keys, config))
            sheets[f"dropped: {reason}"] = name
    biggest = sorted(result.cluster_sizes, key=lambda c: -result.cluster_sizes[c][1])[:12]
    for c in biggest:
        keys = [r["key"] for r in rows if r["kept"] and r["cluster"] == c][:SHEET_MAX]
        if keys:
            name = f"cluster-{c}.png"
            _write_png(folder / name, _sheet(by_key, keys, config))
            sheets[f"cluster {c} (kept)"] = name
    summary = {
        "inputs": len(rows), "kept": sum(r["kept"] for r in rows), "stages": counts,
        "cluster_sizes": {str(c): {"before": b, "after": a} for c, (b, a) in sorted(result.cluster_sizes.items())},
        "cluster_levels": [{str(c): {"before": b, "after": a} for c, (b, a) in sorted(sizes.items())}
                           for sizes in result.level_sizes],
        "computed_parts": result.computed, "reused_parts": result.reused,
        "images_per_second": {k: round(v, 2) for k, v in result.throughput().items()},
    }
    (folder / "report.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    short = [min(r["width"], r["height"]) if r["width"] is not None else None for r in rows]
    hist = {"short side (px)": short,
            "person score": [r["person_score"] for r in rows],
            "person area fraction": [r["person_area"] for r in rows],
            "aesthetic (LAION, 1-10)": [r["aesthetic"] for r in rows],
            "photo score (P(photo), CLIP zero-shot)": [r["photo_score"] for r in rows],
            "text score (P(text overlay))": [r["text_score"] for r in rows]}
    if any(r["head_status"] is not None for r in rows):
        hist.update({f"head {a} (degrees)": [r[f"head_{a}"] for r in rows] for a in ("yaw", "pitch", "roll")})
        hist["head fit error (of the face's size)"] = [r["head_error"] for r in rows]
    page = ["<!doctype html><meta charset='utf-8'><title>sapiens2 curate report</title>",
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}"
            ".charts{display:flex;flex-wrap:wrap;gap:0 2em}.charts h3{font-size:1em}</style>",
            f"<h1>Curation report</h1><p>{summary['inputs']} inputs, {summary['kept']} kept.</p>",
            "<h2>Stages</h2><table><tr><th>stage / reason</th><th>in</th><th>dropped</th></tr>"]
    page += [f"<tr><td>{html.escape(c['reason'])}</td><td>{c['in']}</td><td>{c['dropped']}</td></tr>" for c in counts]
    page.append("</table><h2>Speed (stages computed in this run)</h2><table><tr><th>stage</th><th>images</th>"
                "<th>images/s</th></tr>")
    page += [f"<tr><td>{k}</td><td>{result.rows[k]}</td><td>{v:.1f}</td></tr>" for k, v in result.throughput().items()]
    page.append("</table><h2>Histograms (all inputs that reached the stage)</h2><div class='charts'>")
    for title, values in hist.items():
        page.append(f"<div class='chart'><h3>{html.escape(title)}</h3>{svg_histogram(values)}</div>")
    page.append("</div>")
    levels = result.level_sizes or ([result.cluster_sizes] if result.cluster_sizes else [])
    for level, sizes in reversed(list(enumerate(levels, 1))):  # the top level first, the leaves last
        title = "Cluster sizes" + (f", level {level} of {len(levels)}" if len(levels) > 1 else "")
        page.append(f"<h2>{title}</h2><table><tr><th>cluster</th><th>before balancing</th><th>after</th></tr>")
        page += [f"<tr><td>{c}</td><td>{b}</td><td>{a}</td></tr>" for c, (b, a) in sorted(sizes.items())]
        page.append("</table>")
    page.append("<h2>Contact sheets</h2>")
    for title, name in sheets.items():
        page.append(f"<h3>{html.escape(title)}</h3><a href='{name}'><img src='{name}' style='max-width:100%'></a>")
    index = folder / "index.html"
    index.write_text("\n".join(page), encoding="utf-8")
    return index
