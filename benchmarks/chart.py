#!/usr/bin/env python3
"""An SVG chart of each server's standing against one anchor server (Bun), per scenario.

Hand-written SVG (no plotting library): one group of horizontal bars per scenario,
one bar per server, on a logarithmic axis with a line at 1x.  A bar's length is how
many times as good as the anchor the server is on the scenario's first metric:
value / anchor where higher is better (msg/s), anchor / value where lower is better
(KiB per connection), so longer is always better and 2x means twice as good.

    benchmarks/chart.py benchmarks/results/STAMP.json -o chart.svg [--anchor bun]

``benchmarks/run`` writes the same chart beside each report it saves.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from html import escape
from pathlib import Path
from typing import Any, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402

ANCHOR = "bun"
# One colour per server, in the order servers are given; harpia's own first.
PALETTE = ("#1f6feb", "#6ea8fe", "#9ec5fe", "#e8590c", "#2f9e44", "#ae3ec9", "#868e96", "#f59f00")
ROW_H, GAP, LEFT, RIGHT, TOP = 14, 10, 170, 60, 40
AXIS_W = 520


def standing(value: float, anchor: float, higher_is_better: bool) -> float:
    """How many times as good as the anchor a value is (> 1: better than the anchor)."""
    if value <= 0 or anchor <= 0:
        raise ValueError("standing needs positive values")
    return value / anchor if higher_is_better else anchor / value


def medians(raw: Iterable[dict[str, Any]], scenarios: list[e2e.Scenario]) -> dict[tuple[str, str], float]:
    """Median of each (scenario, server)'s first metric over the raw per-run records."""
    first = {sc.name: sc.metrics[0].key for sc in scenarios}
    values: dict[tuple[str, str], list[float]] = {}
    for rec in raw:
        key = first.get(rec.get("scenario", ""))
        if key is not None and rec.get(key) is not None and not rec.get("error"):
            values.setdefault((rec["scenario"], rec["server"]), []).append(float(rec[key]))
    return {k: statistics.median(v) for k, v in values.items()}


def standings(scenarios: list[e2e.Scenario], servers: list[str], med: dict[tuple[str, str], float],
              anchor: str = ANCHOR) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per scenario with an anchor figure, each other server's standing (servers without a figure left out)."""
    out = []
    for sc in scenarios:
        base = med.get((sc.name, anchor))
        if not base:
            continue
        bars = [(srv, standing(med[(sc.name, srv)], base, sc.metrics[0].higher_is_better))
                for srv in servers if srv != anchor and med.get((sc.name, srv))]
        if bars:
            out.append((sc.name, bars))
    return out


def _axis(lo: float, hi: float) -> list[float]:
    """Tick values (powers of ten and 2x, 5x between) covering [lo, hi]."""
    ticks = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            t = m * 10.0 ** exp
            if lo <= t <= hi:
                ticks.append(t)
    return ticks


def render_svg(groups: list[tuple[str, list[tuple[str, float]]]], servers: list[str], anchor: str = ANCHOR,
               title: str = "") -> str:
    """The chart as an SVG document; an empty chart says why when no scenario has an anchor figure."""
    colours = {srv: PALETTE[i % len(PALETTE)] for i, srv in enumerate(s for s in servers if s != anchor)}
    shown = [srv for srv in colours if any(srv == s for _, bars in groups for s, _ in bars)]
    vals = [v for _, bars in groups for _, v in bars] or [1.0]
    lo = 10 ** math.floor(math.log10(min(min(vals), 1.0) * 0.9))
    hi = 10 ** math.ceil(math.log10(max(max(vals), 1.0) * 1.1))

    def x(v: float) -> float:
        return LEFT + AXIS_W * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    height = TOP + sum(len(bars) * ROW_H + GAP for _, bars in groups) + 50
    width = LEFT + AXIS_W + RIGHT
    el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
          f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
          f'<rect width="{width}" height="{height}" fill="#fff"/>',
          f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">'
          f'{escape(title or f"Times as good as {anchor} (log scale, longer is better)")}</text>']
    if not groups:
        el.append(f'<text x="{LEFT}" y="{TOP + 10}">no scenario has a {escape(anchor)} figure</text>')
    axis_bottom = height - 40
    for t in _axis(lo, hi):
        el.append(f'<line x1="{x(t):.1f}" y1="{TOP - 6}" x2="{x(t):.1f}" y2="{axis_bottom}" '
                  f'stroke="{"#000" if t == 1 else "#ddd"}" stroke-width="{1.5 if t == 1 else 1}"/>')
        el.append(f'<text x="{x(t):.1f}" y="{axis_bottom + 14}" text-anchor="middle">{t:g}×</text>')
    y = TOP
    for name, bars in groups:
        mid = y + len(bars) * ROW_H / 2
        el.append(f'<text x="{LEFT - 8}" y="{mid + 4:.1f}" text-anchor="end">{escape(name)}</text>')
        for srv, v in bars:
            x0, x1 = sorted((x(1.0), x(v)))
            el.append(f'<rect x="{x0:.1f}" y="{y + 1}" width="{max(x1 - x0, 1):.1f}" height="{ROW_H - 2}" '
                      f'fill="{colours[srv]}"><title>{escape(srv)}: {v:.2f}×</title></rect>')
            el.append(f'<text x="{x(v) + 3 if v >= 1 else x(v) - 3:.1f}" y="{y + ROW_H - 3}" '
                      f'text-anchor="{"start" if v >= 1 else "end"}" font-size="9">{v:.2f}×</text>')
            y += ROW_H
        y += GAP
    lx = LEFT
    for srv in shown:
        el.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" fill="{colours[srv]}"/>')
        el.append(f'<text x="{lx + 14}" y="{height - 7}">{escape(srv)}</text>')
        lx += 20 + 7 * len(srv)
    el.append("</svg>")
    return "\n".join(el) + "\n"


def chart_from_raw(raw: list[dict[str, Any]], anchor: str = ANCHOR, title: str = "") -> str:
    """The SVG for raw per-run records as ``benchmarks/run`` saves them (scenarios and servers in run order)."""
    names = list(dict.fromkeys(r["scenario"] for r in raw if r.get("scenario") in e2e.SCENARIOS_BY_NAME))
    servers = list(dict.fromkeys(r["server"] for r in raw))
    scenarios = [e2e.SCENARIOS_BY_NAME[n] for n in names]
    return render_svg(standings(scenarios, servers, medians(raw, scenarios), anchor), servers, anchor, title)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="raw results (.json) written by benchmarks/run")
    parser.add_argument("-o", "--output", type=Path, required=True, help="SVG file to write")
    parser.add_argument("--anchor", default=ANCHOR, help="server the others are compared with (default bun)")
    parser.add_argument("--title", default="", help="chart title")
    args = parser.parse_args()
    raw = json.loads(args.results.read_text())
    args.output.write_text(chart_from_raw(raw, args.anchor, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
