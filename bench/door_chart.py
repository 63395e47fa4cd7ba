"""The front door's picture, as hand-written SVG (no plotting library): answers per
second over time for every row, each panel with its limits as dashed lines, then
every row's latency percentiles beside the floor's. Both on log scales: the limits are
tens to hundreds of times the rows."""

from __future__ import annotations

import math
from html import escape

W = 980
PANEL_W, PANEL_H = 470, 170
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 52, 12, 26, 28
COLORS = {
    "all": "#1f77b4",
    "202": "#2ca02c",
    "201": "#17becf",
    "200": "#8c564b",
    "409": "#d62728",
    "429": "#ff7f0e",
    "held": "#9467bd",
    "5xx": "#000000",
    "limit": "#555555",
}
BIN_S = 0.5


def _bins(timeline: dict, start: float, classes) -> dict[str, list[tuple[float, float]]]:
    """{class: [(t from start, answers/s)]} in bins of BIN_S."""
    out: dict[str, dict[int, int]] = {name: {} for name in classes}
    for t, by_status in timeline.items():
        b = int((float(t) - start) // BIN_S)
        if b < 0:
            continue
        for name, match in classes.items():
            n = sum(v for s, v in by_status.items() if match(int(s)))
            if n:
                out[name][b] = out[name].get(b, 0) + n
    series = {}
    for name, bins in out.items():
        if not bins:
            continue
        last = max(bins)
        series[name] = [((b + 0.5) * BIN_S, bins.get(b, 0) / BIN_S) for b in range(last + 1)]
    return series


def _log_y(value: float, top: float, y0: float, h: float) -> float:
    v = max(value, 1.0)
    return y0 + h - h * math.log10(v) / math.log10(top)


def _panel(x0: float, y0: float, name: str, row: dict, rows: dict) -> list[str]:
    out = []
    plot_x, plot_y = x0 + MARGIN_L, y0 + MARGIN_T
    w, h = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    top = 1e5
    start = row.get("first_sent") or 0
    span = max(row.get("span_s") or 1, 1)
    classes = {"all": lambda s: True}
    if name.startswith(("spike", "admissions")):
        classes = {
            "202": lambda s: s == 202,
            "409": lambda s: s == 409,
            "429": lambda s: s == 429,
            "5xx": lambda s: s >= 500,
        }
    if name.startswith("entries"):
        classes = {
            "201": lambda s: s == 201,
            "200": lambda s: s == 200,
            "409": lambda s: s == 409,
            "5xx": lambda s: s >= 500,
        }
    series = _bins(row.get("timeline", {}), start, classes)
    held = (row.get("settle") or row.get("spike") or {}).get("held_timeline")
    if held:
        as_timeline = {t: {0: n} for t, n in held.items()}
        series["held"] = _bins(as_timeline, start, {"held": lambda s: True}).get("held", [])
        span = max(span, max(float(t) for t in held) - start)
    span = math.ceil(span + BIN_S)

    def sx(t: float) -> float:
        return plot_x + w * min(t, span) / span

    out.append(
        f'<rect x="{plot_x}" y="{plot_y}" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>'
    )
    out.append(
        f'<text x="{x0 + 8}" y="{y0 + 16}" font-size="12" font-weight="bold">'
        f"{escape(name)}: {row.get('rate') or 0:,.0f}/s</text>"
    )
    for p in range(0, 6):
        y = _log_y(10**p, top, plot_y, h)
        out.append(
            f'<line x1="{plot_x}" x2="{plot_x + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
        )
        out.append(
            f'<text x="{plot_x - 4}" y="{y + 4:.1f}" font-size="9" text-anchor="end">'
            f"{_short(10**p)}</text>"
        )
    step = max(1, round(span / 6))
    for t in range(0, span + 1, step):
        out.append(
            f'<text x="{sx(t):.1f}" y="{plot_y + h + 12}" font-size="9" '
            f'text-anchor="middle">{t}s</text>'
        )
    legend_x = plot_x + 6
    shown = sorted(
        (rows[n] for n in row.get("limit", {}).get("names", []) if rows.get(n, {}).get("rate")),
        key=lambda r: -r["rate"],
    )
    for index, limit in enumerate(shown):
        y = _log_y(limit["rate"], top, plot_y, h)
        # The highest limit labelled above its line, the others below theirs.
        label_y = y - 3 if index == 0 else y + 10
        out.append(
            f'<line x1="{plot_x}" x2="{plot_x + w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{COLORS["limit"]}" stroke-dasharray="5,3"/>'
        )
        out.append(
            f'<text x="{plot_x + w - 4}" y="{label_y:.1f}" font-size="9" '
            f'text-anchor="end" fill="{COLORS["limit"]}">{escape(limit["name"])}'
            f" {limit['rate']:,.0f}/s</text>"
        )
    for cls, points in series.items():
        if not points:
            continue
        path = " ".join(f"{sx(t):.1f},{_log_y(v, top, plot_y, h):.1f}" for t, v in points)
        out.append(
            f'<polyline fill="none" stroke="{COLORS[cls]}" stroke-width="1.5" points="{path}"/>'
        )
        if cls != "all":
            label = "held/s (settled)" if cls == "held" else f"{cls}/s"
            out.append(
                f'<text x="{legend_x}" y="{plot_y + 11}" font-size="9" '
                f'fill="{COLORS[cls]}">{label}</text>'
            )
            legend_x += 7 * len(label) + 10
    return out


def _short(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _latency(y0: float, rows: dict) -> tuple[list[str], float]:
    http = [(n, r) for n, r in rows.items() if r.get("p50_ms") is not None]
    out = []
    row_h = 20
    plot_x, w = 170, W - 170 - 30
    lo, hi = 0.1, 1e5  # ms
    top = y0 + 40

    def sx(ms: float) -> float:
        ms = min(max(ms, lo), hi)
        return plot_x + w * (math.log10(ms) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    height = 40 + row_h * len(http) + 30
    out.append(
        f'<text x="10" y="{y0 + 18}" font-size="13" font-weight="bold">Latency (wrk'
        " --latency): p50 o, p90 |, p99 x; the floor rows are the limit</text>"
    )
    for p in range(-1, 6):
        x = sx(10**p)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" '
            f'y2="{top + row_h * len(http)}" stroke="#e4e4e4"/>'
        )
        label = f"{10**p:g} ms" if p < 3 else f"{10 ** (p - 3):g} s"
        out.append(
            f'<text x="{x:.1f}" y="{top + row_h * len(http) + 14}" font-size="9" '
            f'text-anchor="middle">{label}</text>'
        )
    for i, (name, r) in enumerate(http):
        y = top + row_h * i + row_h / 2
        color = COLORS["limit"] if name.startswith("floor") else COLORS["all"]
        out.append(
            f'<text x="{plot_x - 8}" y="{y + 4}" font-size="10" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        x50, x90, x99 = sx(r["p50_ms"]), sx(r["p90_ms"]), sx(r["p99_ms"])
        out.append(
            f'<line x1="{x50:.1f}" x2="{x99:.1f}" y1="{y}" y2="{y}" stroke="{color}" '
            'stroke-width="2"/>'
        )
        out.append(
            f'<circle cx="{x50:.1f}" cy="{y}" r="4" fill="white" stroke="{color}" '
            'stroke-width="2"/>'
        )
        out.append(
            f'<line x1="{x90:.1f}" x2="{x90:.1f}" y1="{y - 5}" y2="{y + 5}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        out.append(
            f'<path d="M{x99 - 4:.1f},{y - 4} l8,8 m0,-8 l-8,8" stroke="{color}" stroke-width="2"/>'
        )
        out.append(
            f'<text x="{x99 + 8:.1f}" y="{y + 4}" font-size="9">{r["p50_ms"]:,.1f} / '
            f"{r['p99_ms']:,.1f} ms</text>"
        )
    return out, height


def render(rows: dict, *, title: str) -> str:
    panels = [(n, r) for n, r in rows.items() if r.get("timeline")]
    cols = 2
    panel_rows = math.ceil(len(panels) / cols)
    body = [
        f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}: answers/s'
        " over time (log scale), dashed: the limits measured in the same run</text>"
    ]
    y = 30
    for i, (name, row) in enumerate(panels):
        body += _panel(10 + (i % cols) * (PANEL_W + 10), y + (i // cols) * PANEL_H, name, row, rows)
    y += panel_rows * PANEL_H + 10
    latency, height = _latency(y, rows)
    body += latency
    total_h = y + height
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h:.0f}" '
        f'viewBox="0 0 {W} {total_h:.0f}" font-family="sans-serif">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n"
    )


if __name__ == "__main__":
    # Draw a run's picture again from its JSON: python bench/door_chart.py door-<stamp>.json
    import json
    import sys
    from pathlib import Path

    source = Path(sys.argv[1])
    document = json.loads(source.read_text())
    title = f"front door, {document['code']}, {document['when'][:16].replace('T', ' ')} UTC"
    source.with_suffix(".svg").write_text(render(document["rows"], title=title))
    print(f"written: {source.with_suffix('.svg')}")
