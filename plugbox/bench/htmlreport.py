"""`plugbox bench --report DIR`: one bench run as a self-contained HTML page with charts.

The page is one file (`DIR/index.html`, the run's JSON beside it as `report.json`): inline CSS,
charts drawn as inline SVG, no script, no font, no image, nothing fetched from anywhere, so it
opens the same offline, from a mail attachment or from a CI artifact, years later.

Why SVG written here rather than a charting library: the charts are four simple shapes (dots on a
log axis, bars, a histogram, a rising curve), and SVG is plain text the standard library can write.
The well-kept alternatives each cost more than the charts are worth: matplotlib (and numpy) would
be a ~50 MB dependency of a host that otherwise has no use for it; plotly, Vega or Chart.js need
their JavaScript inlined into every page to stay self-contained (hundreds of KB to MBs of
third-party code shipped inside our output) or fetched from a CDN (no longer self-contained).

Every string from the report is escaped; numbers are formatted, never interpolated raw.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plugbox.bench._budget import describe_budget

__all__ = ["render_html", "write_report"]

W, ROW, LEFT, RIGHT, TOP = 720, 26, 250, 30, 30
COLOURS = {"plugbox": "#2b6cb0", "node": "#c05621", "python": "#718096", "target": "#c53030"}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _svg(height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{W}" height="{height}" '
            f'viewBox="0 0 {W} {height}"><title>{_e(title)}</title>{"".join(body)}</svg>')


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, colour: str = "#222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{colour}">{_e(text)}</text>')


def _log_axis(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """Decade-aligned bounds around [lo, hi] and the ticks (1, 2, 5 of each decade) between them."""
    a, b = math.floor(math.log10(max(lo, 1e-9))), math.ceil(math.log10(max(hi, lo * 10)))
    ticks = [m * 10.0 ** d for d in range(a, b + 1) for m in (1, 2, 5) if 10.0 ** a <= m * 10.0 ** d <= 10.0 ** b]
    return 10.0 ** a, 10.0 ** b, ticks


def latency_chart(systems: Sequence[tuple[str, str, dict[str, float | None]]]) -> str:
    """One row per system: its percentiles as dots on a log axis (µs), p50 to p99 joined by a bar.
    `systems`: (label, colour key, {"min", "p50", "p90", "p99", "max"} in µs, any may be None)."""
    values = [v for _, _, pcts in systems for v in pcts.values() if isinstance(v, int | float) and v > 0]
    if not values:
        return "<p>no latency figures in this report</p>"
    lo, hi, ticks = _log_axis(min(values), max(values))
    span = W - LEFT - RIGHT

    def x(v: float) -> float:
        return LEFT + span * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    height = TOP + ROW * len(systems) + 40
    body = [f'<line x1="{x(t):.1f}" y1="{TOP - 6}" x2="{x(t):.1f}" y2="{height - 34}" stroke="#e2e8f0"/>'
            + _text(x(t), height - 20, f"{t:g}", "middle", 10) for t in ticks]
    body.append(_text(LEFT + span / 2, height - 4, "µs (log scale) — dots: min, p50, p90, p99, max", "middle", 11))
    for i, (label, colour, pcts) in enumerate(systems):
        y = TOP + ROW * i + ROW / 2
        c = COLOURS.get(colour, "#444")
        body.append(_text(LEFT - 8, y + 4, label, "end"))
        p50, p99 = pcts.get("p50"), pcts.get("p99")
        if p50 and p99:
            body.append(f'<line x1="{x(p50):.1f}" y1="{y:.1f}" x2="{x(p99):.1f}" y2="{y:.1f}" stroke="{c}" '
                        'stroke-width="6" stroke-opacity="0.35"/>')
        for name, v in pcts.items():
            if isinstance(v, int | float) and v > 0:
                r = 5 if name in ("p50", "p99") else 3
                body.append(f'<circle cx="{x(v):.1f}" cy="{y:.1f}" r="{r}" fill="{c}"><title>{_e(label)} '
                            f'{_e(name)}: {_num(float(v))} µs</title></circle>')
    return _svg(height, body, "latency beside the anchors")


def bar_chart(bars: Sequence[tuple[str, str, float | None]], unit: str, target: tuple[str, float] | None = None) -> str:
    """Horizontal bars on a linear axis from 0; `target` draws a labelled vertical line."""
    known = [v for _, _, v in bars if isinstance(v, int | float)]
    top = max([*known, target[1] if target else 0.0, 1e-9]) * 1.15
    span = W - LEFT - RIGHT
    height = TOP + ROW * len(bars) + 20
    body = []
    for i, (label, colour, v) in enumerate(bars):
        y = TOP + ROW * i
        body.append(_text(LEFT - 8, y + ROW / 2 + 4, label, "end"))
        if isinstance(v, int | float):
            width = span * v / top
            body.append(f'<rect x="{LEFT}" y="{y + 4}" width="{width:.1f}" height="{ROW - 8}" '
                        f'fill="{COLOURS.get(colour, "#444")}"/>')
            body.append(_text(LEFT + width + 4, y + ROW / 2 + 4, f"{_num(float(v), 2)} {unit}", size=11))
    if target is not None:
        tx = LEFT + span * target[1] / top
        body.append(f'<line x1="{tx:.1f}" y1="{TOP - 10}" x2="{tx:.1f}" y2="{height - 10}" '
                    f'stroke="{COLOURS["target"]}" stroke-dasharray="4 3"/>')
        body.append(_text(tx, TOP - 14, f"{target[0]}: {_num(target[1], 2)} {unit}", "middle", 11, COLOURS["target"]))
    return _svg(height, body, "bars")


def histogram_chart(bins: Sequence[Sequence[float]], marks: dict[str, float | None], unit: str = "µs") -> str:
    """Columns of counts over log-spaced bins ([upper edge, count]); `marks` are labelled lines."""
    if not bins:
        return "<p>no samples</p>"
    height, bottom = 220, 190
    span = W - 60 - RIGHT
    most = max(c for _, c in bins) or 1
    width = span / len(bins)
    body = []
    for i, (edge, count) in enumerate(bins):
        h = (bottom - TOP) * count / most
        body.append(f'<rect x="{60 + i * width:.1f}" y="{bottom - h:.1f}" width="{width - 2:.1f}" height="{h:.1f}" '
                    f'fill="{COLOURS["plugbox"]}"><title>≤ {_num(float(edge))} {unit}: {int(count)}</title></rect>')
        if i % 4 == 3 or i == len(bins) - 1:
            body.append(_text(60 + (i + 1) * width, bottom + 14, f"{edge:,.0f}", "end", 10))
    body.append(_text(60 + span / 2, height - 4, f"{unit} (log-spaced bins; bar = plugins)", "middle", 11))
    body.append(_text(54, TOP + 4, f"{most}", "end", 10))
    edges = [e for e, _ in bins]
    lo = edges[0] / (edges[1] / edges[0]) if len(edges) > 1 else edges[0] / 2
    for i, (name, v) in enumerate(marks.items()):
        if not isinstance(v, int | float) or v <= 0:
            continue
        frac = (math.log(v) - math.log(lo)) / (math.log(edges[-1]) - math.log(lo)) if edges[-1] > lo else 1.0
        mx = 60 + span * min(max(frac, 0.0), 1.0)
        body.append(f'<line x1="{mx:.1f}" y1="{TOP - 4}" x2="{mx:.1f}" y2="{bottom}" stroke="{COLOURS["target"]}" '
                    'stroke-dasharray="4 3"/>')
        body.append(_text(mx + 4, TOP + 10 + 14 * i, f"{name} {_num(float(v))} {unit}", size=11,
                          colour=COLOURS["target"]))
    return _svg(height, body, "histogram")


def curve_chart(points: Sequence[Sequence[float]], x_unit: str, y_label: str) -> str:
    """A rising line through [x, y] points, from the origin."""
    if not points:
        return "<p>no points</p>"
    height, bottom, left = 240, 200, 60
    span = W - left - RIGHT
    xmax = max(p[0] for p in points) or 1.0
    ymax = max(p[1] for p in points) or 1.0
    coords = [(left, bottom)] + [(left + span * px / xmax, bottom - (bottom - TOP) * py / ymax) for px, py in points]
    path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
    body = [f'<line x1="{left}" y1="{bottom}" x2="{left + span}" y2="{bottom}" stroke="#a0aec0"/>',
            f'<line x1="{left}" y1="{TOP}" x2="{left}" y2="{bottom}" stroke="#a0aec0"/>',
            f'<polyline points="{path}" fill="none" stroke="{COLOURS["plugbox"]}" stroke-width="2"/>',
            _text(left - 6, TOP + 4, f"{ymax:,.0f}", "end", 10), _text(left - 6, bottom, "0", "end", 10),
            _text(left + span, bottom + 14, f"{xmax:,.0f} {x_unit}", "end", 10),
            _text(left + span / 2, height - 10, f"{x_unit} since the first enable — {y_label}", "middle", 11)]
    return _svg(height, body, "curve")


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _latency_systems(r: dict[str, Any]) -> list[tuple[str, str, dict[str, float | None]]]:
    m, anchors = r["metrics"], r.get("anchors", {})

    def pcts(d: dict[str, Any], prefix: str = "") -> dict[str, float | None]:
        return {k: d.get(f"{prefix}{k}_us") for k in ("min", "p50", "p90", "p99", "max")}

    rows = [("plugbox capability round trip", "plugbox", pcts(m["cap_rtt"])),
            ("plugbox hook dispatch", "plugbox", pcts(m["hook_dispatch"]))]
    node = anchors.get("node_worker_threads", {})
    if node.get("rtt_p50_us") is not None:
        rows.append(("Node worker_threads round trip", "node", pcts(node, "rtt_")))
    py = anchors.get("python_socketpair", {})
    if py.get("rtt_p50_us") is not None:
        rows.append(("CPython socketpair (floor)", "python", pcts(py, "rtt_")))
    return rows


def render_html(r: dict[str, Any]) -> str:
    """The page for one full bench report (`run_bench` with the default scenario)."""
    m, mc = r["metrics"], r["machine"]
    s, mem = m["scale"], m["memory"]
    node = r.get("anchors", {}).get("node_worker_threads", {})
    node_rss = node.get("rss_per_worker_mb")
    ratios = [(f"{side}: {name}", value)
              for side, table in r.get("ratios", {}).items() for name, value in table.items()]
    acceptance = [(c["target"], c["measured"], "yes" if c["met"] else "NO") for c in r.get("acceptance", [])]
    memory = bar_chart([
        ("idle worker PSS", "plugbox", mem.get("pss_mb")),
        ("idle worker USS", "plugbox", mem.get("uss_mb")),
        (f"worker PSS with {s['enabled']} alive", "plugbox", s["memory"].get("pss_mb")),
        (f"worker USS with {s['enabled']} alive", "plugbox", s["memory"].get("uss_mb")),
        ("Node RSS per worker thread", "node", node_rss),
    ], "MB", ("0.5x Node", node_rss / 2) if isinstance(node_rss, int | float) else None)
    per = s["per_plugin"]
    facts = (f"{mc.get('nproc')} CPUs ({mc.get('cpu_model')}), {mc.get('mem_total_mb')} MB, kernel {mc.get('kernel')}, "
             f"{mc.get('python')}, node {mc.get('node') or 'absent'}, loadavg {mc.get('loadavg_start')} → "
             f"{mc.get('loadavg_end')}; confinement policy {r['confinement']['policy']}")
    if budget := describe_budget(r["confinement"]):
        facts += f"; {budget}"
    sections = [
        f"<h1>plugbox bench — plugbox {_e(r.get('plugbox'))}</h1><p class=facts>{_e(facts)}</p>",
        "<h2>Targets (issue 17, written for 1,000 plugins)</h2>",
        _table(acceptance, ("target", "measured", "met")),
        "<h2>Latency beside the anchors</h2>", latency_chart(_latency_systems(r)),
        "<h2>Memory per worker</h2>", memory,
        f"<h2>Fan-out: one hook to {s['enabled']} plugins</h2>",
        f"<p>One chain to all: {_num(s['deliver_ms'])} ms, {s['answered_within_budget']}/{s['plugins']} answered "
        f"within the {s['budget_ms']} ms budget. The same hook to each plugin alone: p50 {_num(per['p50_us'])} µs, "
        f"p99 {_num(per['p99_us'])} µs, max {_num(per['max_us'])} µs.</p>",
        histogram_chart(per.get("histogram_us", []), {"p50": per.get("p50_us"), "p99": per.get("p99_us")}),
        f"<h2>Scale: {s['plugins']} plugins enabled at once</h2>",
        f"<p>Enable all: {_num(s['enable_all_ms'])} ms ({s['start_concurrency']} starting at once); disable all: "
        f"{_num(s['disable_all_ms'])} ms; host RSS {_num(s['host_rss_before_mb'])} → {_num(s['host_rss_mb'])} MB; "
        f"host fds {s['fds']['before']} → {s['fds']['with_workers']} → {s['fds']['after_disable']}; leaked "
        f"workers {s['leaked_workers']}, fds {s['leaked_fds']}.</p>",
        curve_chart(s.get("enable_curve_ms", []), "ms", "plugins enabled"),
        "<h2>Ratios (plugbox / anchor)</h2>", _table(ratios, ("ratio", "value")),
        "<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in r.get("notes", [])) + "</ul>",
    ]
    style = ("body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #cbd5e0;padding:3px 8px;"
             "text-align:left;font-size:13px}.facts{color:#555;font-size:13px}svg{display:block;margin:1em 0}")
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>plugbox bench</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n")


def write_report(report: dict[str, Any], directory: Path) -> Path:
    """Write `index.html` and `report.json` into `directory` (made if missing); returns the page."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    page = directory / "index.html"
    page.write_text(render_html(report))
    return page
