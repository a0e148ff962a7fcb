"""Charts drawn on the server as inline SVG: no JavaScript, no fonts or images to fetch.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that says its numbers in
words, so a screen reader gets what the bars show; the page puts the same numbers in a table.
Colours meet WCAG AA contrast on white.  Every label is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

COLOURS = {"installed": "#1f5fa8", "renewed": "#1b7a3d", "failed": "#b3261e", "lscs": "#1f5fa8"}


def bar_chart(chart_id: str, title: str, labels: Sequence[str], series: dict[str, Sequence[int]], *,
              width: int = 720, height: int = 220, label_every: int = 1) -> Markup:
    """Grouped (or single) bars, one group per label; ``series`` maps a series name to its values."""
    n = max(1, len(labels))
    names = list(series)
    top = max([1, *(v for values in series.values() for v in values)])
    left, right, bottom, head = 40, 10, 34, 24
    plot_w, plot_h = width - left - right, height - bottom - head
    group_w = plot_w / n
    bar_w = max(1.0, group_w * 0.8 / max(1, len(names)))
    parts = [f'<svg id="{escape(chart_id)}" class="chart" role="img" aria-labelledby="{escape(chart_id)}-t '
             f'{escape(chart_id)}-d" viewBox="0 0 {width} {height}" width="100%" '
             f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{escape(chart_id)}-t">{escape(title)}</title>']
    words = "; ".join(f"{label}: " + ", ".join(f"{series[s][i]} {s}" for s in names) for i, label in enumerate(labels)
                      if any(series[s][i] for s in names))
    parts.append(f'<desc id="{escape(chart_id)}-d">{escape(words or "no data in this period")}</desc>')
    for frac in (0, 0.5, 1):  # grid and scale (whole numbers only: a half device is no label)
        y = head + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c8c8c8"/>')
        if float(top * frac).is_integer():
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#333">'
                         f'{int(top * frac)}</text>')
    for i, label in enumerate(labels):
        x0 = left + i * group_w + group_w * 0.1
        for j, s in enumerate(names):
            value = series[s][i]
            h = plot_h * value / top
            x = x0 + j * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{head + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="{COLOURS.get(s, "#555")}"><title>{escape(label)}: {value} {escape(s)}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                         f'font-size="11" fill="#333">{escape(label)}</text>')
    x = left
    for s in names:  # legend
        parts.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{COLOURS.get(s, "#555")}"/>')
        parts.append(f'<text x="{x + 16}" y="14" font-size="12" fill="#222">{escape(s)}</text>')
        x += 24 + 8 * len(s)
    parts.append("</svg>")
    return Markup("".join(parts))


__all__ = ["bar_chart"]
