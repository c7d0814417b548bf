"""The benchmark harness's own logic: CPU per unit of work, the ratio chart, the report rows.

    pytest benchmarks/test_harness.py
"""
import xml.etree.ElementTree as ET

import pytest

import chart
import e2e

SVG = "{http://www.w3.org/2000/svg}"


def test_cpu_per_unit_uses_the_scenarios_unit():
    assert e2e.cpu_us_per_unit({"mode": "pingpong", "messages": 1000, "server_cpu_s": 0.01}) == pytest.approx(10.0)
    # broadcast: per delivery, not per message sent
    assert e2e.cpu_us_per_unit({"mode": "broadcast", "messages": 10, "deliveries": 10_000,
                                "server_cpu_s": 0.02}) == pytest.approx(2.0)
    assert e2e.cpu_us_per_unit({"mode": "connect", "messages": 500, "server_cpu_s": 0.05}) == pytest.approx(100.0)
    assert e2e.cpu_us_per_unit({"mode": "idle", "messages": 0, "server_cpu_s": None}) is None
    assert e2e.cpu_us_per_unit({"mode": "pingpong", "messages": 0, "server_cpu_s": 0.0}) is None
    assert e2e.cpu_us_per_unit({"mode": "pingpong", "messages": 10, "server_cpu_s": None}) is None


def test_wsload_is_always_told_the_server_pid():
    for sc in e2e.SCENARIOS:
        cmd = e2e.wsload_command(sc, 1234, 4321, e2e.RunConfig())
        assert cmd[-2:] == ["--server-pid", "4321"]


def test_standing_is_longer_when_better():
    assert chart.standing(200.0, 100.0, higher_is_better=True) == 2.0
    assert chart.standing(1.5, 3.0, higher_is_better=False) == 2.0  # half the memory: twice as good
    assert chart.standing(3.0, 1.5, higher_is_better=False) == 0.5
    with pytest.raises(ValueError):
        chart.standing(0.0, 1.0, higher_is_better=True)


def raw(scenario, server, key, values):
    return [{"repetition": i, "scenario": scenario, "server": server, key: v} for i, v in enumerate(values)]


def test_chart_from_raw_results():
    records = (raw("pingpong-100", "harpia", "msgs_per_s", [90, 110, 100])
               + raw("pingpong-100", "bun", "msgs_per_s", [50, 50, 40])
               + raw("pingpong-100", "picows", "msgs_per_s", [25, 25, 25])
               + raw("idle-10k", "harpia", "kib_per_conn", [3.0])
               + raw("idle-10k", "bun", "kib_per_conn", [1.5])
               + raw("connect", "harpia", "conns_per_s", [10])  # no bun figure: left out
               + [{"repetition": 1, "scenario": "idle-10k", "server": "picows", "error": "boom"}])
    med = chart.medians(records, [e2e.SCENARIOS_BY_NAME[n] for n in ("pingpong-100", "idle-10k", "connect")])
    assert med[("pingpong-100", "harpia")] == 100 and med[("pingpong-100", "bun")] == 50
    assert ("idle-10k", "picows") not in med

    root = ET.fromstring(chart.chart_from_raw(records))
    bars = {r.find(f"{SVG}title").text for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None}
    assert bars == {"harpia: 2.00×", "picows: 0.50×", "harpia: 0.50×"}
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "pingpong-100" in texts and "idle-10k" in texts and "connect" not in texts
    assert "1×" in texts  # the anchor line is labelled


def test_bars_start_at_the_anchor_line():
    groups = [("pipeline-100x16", [("harpia", 2.0), ("picows", 0.1)])]
    root = ET.fromstring(chart.render_svg(groups, ["harpia", "picows", "bun"]))
    rects = {r.find(f"{SVG}title").text: r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None}
    better, worse = rects["harpia: 2.00×"], rects["picows: 0.10×"]
    one_x = float(better.get("x"))
    assert float(worse.get("x")) + float(worse.get("width")) == pytest.approx(one_x, abs=0.2)
    assert float(better.get("width")) < float(worse.get("width"))  # log scale: 2x is shorter than 1/10


def test_empty_chart_says_why():
    assert "no scenario has a bun figure" in chart.chart_from_raw(raw("pingpong-1", "harpia", "msgs_per_s", [1]))


def test_report_has_a_cpu_row_under_every_timed_scenario():
    scenarios = [e2e.SCENARIOS_BY_NAME[n] for n in ("pingpong-1", "broadcast-1000", "connect", "idle-10k")]
    cells = {}
    for sc, unit in zip(scenarios, (2.0, 0.5, 80.0, None)):
        for srv, scale in (("harpia", 1.0), ("picows", 2.0)):
            cell = cells.setdefault((sc.name, srv), e2e.Cell())
            cell.add(sc, {m.key: 10.0 for m in sc.metrics} | {"server_cpu_us_per_unit": unit and unit * scale})
    md = e2e.render_markdown(scenarios, ["harpia", "picows"], cells, {}, e2e.RunConfig(), 1, "benchmarks/run")
    assert "| pingpong-1 | server CPU µs/msg ↓ | 2.00 (0.50×) | 4.00 (1.00×) |" in md
    assert "| broadcast-1000 | server CPU µs/delivery ↓ | 0.50 (0.50×) | 1.00 (1.00×) |" in md
    assert "| connect | server CPU µs/conn ↓ | 80.0 (0.50×) | 160 (1.00×) |" in md
    assert "idle-10k | server CPU" not in md


def test_report_shows_steal_apart_from_other_work_and_warns_above_the_mark():
    sc = e2e.SCENARIOS_BY_NAME["pipeline-100x16"]
    base = {m.key: 10.0 for m in sc.metrics} | {"loadgen_cpu_pct": 90.0, "server_cpu_pct": 99.0}

    def report(other: float, steal: float) -> str:
        cells = {(sc.name, srv): e2e.Cell() for srv in ("harpia", "picows")}
        for cell in cells.values():
            cell.add(sc, base | {"other_cpu_pct": other, "steal_cpu_pct": steal})
        return e2e.render_markdown([sc], ["harpia", "picows"], cells, {}, e2e.RunConfig(), 1, "benchmarks/run")

    stolen = report(other=2.0, steal=25.0)
    assert "| pipeline-100x16 | 90 / 99 / 2 / 25 | 90 / 99 / 2 / 25 |" in stolen
    assert "steal time) up to 25%" in stolen and "other work used up to" not in stolen
    quiet = report(other=2.0, steal=1.0)
    assert "steal time) up to" not in quiet and "| 90 / 99 / 2 / 1 |" in quiet
