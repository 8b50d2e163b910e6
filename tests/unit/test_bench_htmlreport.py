"""The bench's HTML page: text from the report is escaped, and a report without Node still renders."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from plugbox.bench.htmlreport import histogram_chart, latency_chart, render_html


def _report(note: str = "a note", node: bool = True) -> dict[str, Any]:
    lat = {"p50_us": 70.0, "p90_us": 90.0, "p99_us": 110.0, "min_us": 50.0, "max_us": 900.0}
    scale = {
        "plugins": 3, "enabled": 3, "answered_within_budget": 3, "budget_ms": 5000, "deliver_ms": 1.5,
        "start_concurrency": 16, "enable_all_ms": 30.0, "disable_all_ms": 20.0, "host_rss_before_mb": 50.0,
        "host_rss_mb": 51.0, "leaked_workers": 0, "leaked_fds": 0, "enable_curve_ms": [[10.0, 1], [30.0, 3]],
        "fds": {"before": 10, "with_workers": 16, "after_disable": 10},
        "per_plugin": {"n": 3, "p50_us": 80.0, "p99_us": 120.0, "max_us": 120.0,
                       "histogram_us": [[60.0, 0], [90.0, 2], [130.0, 1]]},
        "memory": {"pss_mb": 5.0, "uss_mb": 4.9},
    }
    anchors = {"python_socketpair": {"rtt_p50_us": 40.0, "rtt_p99_us": 60.0},
               "node_worker_threads": {"rtt_p50_us": 50.0, "rtt_p99_us": 80.0, "rss_per_worker_mb": 6.7}
               if node else {"skipped": "--skip-node"}}
    return {
        "plugbox": "0.1.0", "machine": {"nproc": 2}, "confinement": {"policy": "strict"}, "notes": [note],
        "metrics": {"cap_rtt": lat, "hook_dispatch": lat, "memory": {"pss_mb": 5.5, "uss_mb": 4.8}, "scale": scale},
        "anchors": anchors, "ratios": {"vs_node": {"pss/node_rss_per_worker": 0.82}},
        "acceptance": [{"target": "enable-all <= 15 s", "measured": "0.03 s", "met": True}],
    }


def test_text_from_the_report_is_escaped() -> None:
    page = render_html(_report(note='<script>alert("x")</script>'))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_a_report_without_node_renders_without_its_target_line() -> None:
    page = render_html(_report(node=False))
    assert "Node worker_threads round trip" not in page and "0.5x Node" not in page
    assert "CPython socketpair (floor)" in page


def test_latency_chart_puts_each_percentile_of_each_system_on_the_chart() -> None:
    svg = latency_chart([("a", "plugbox", {"p50": 10.0, "p99": 100.0}), ("b", "node", {"p50": 20.0, "p99": None})])
    assert svg.count("<circle") == 3  # the missing p99 is left out, not drawn at 0


def test_histogram_without_samples_says_so() -> None:
    assert "no samples" in histogram_chart([], {})


def test_every_chart_is_well_formed_svg() -> None:
    charts = re.findall(r"<svg .*?</svg>", render_html(_report(note="a <b> & c")), re.S)
    assert len(charts) == 4
    for chart in charts:
        assert ET.fromstring(chart).tag == "{http://www.w3.org/2000/svg}svg"


def test_the_cgroup_budget_read_back_is_in_the_page_and_the_terminal_table() -> None:
    from rich.console import Console

    from plugbox.bench.table import _confinement

    budget = {"owner": "plugbox-7", "per_worker": {"cpu_quota_percent": 100, "memory_bytes": 288 << 20, "pids_max": 64},
              "all_workers": {"cpu_quota_percent": 150, "memory_bytes": 3 << 30, "pids_max": 3584}}
    report = _report()
    report["confinement"]["cgroups"] = budget
    line = ("cgroups, read back: each worker cpu 100 %, memory 288 MiB, pids 64; "
            "all workers together (plugbox-7) cpu 150 %, memory 3072 MiB, pids 3584")
    assert line in render_html(report)
    console = Console(width=400, record=True)
    console.print(_confinement(report["confinement"]))
    assert line in console.export_text()
    report["confinement"]["cgroups"] = None
    assert "cgroups: none (workers ran in no plugbox group)" in render_html(report)
    del report["confinement"]["cgroups"]  # a report from before: nothing claimed
    assert "cgroups" not in render_html(report)
