"""`plugbox bench --quick --json` end to end: the report is complete. No timing assertions: the numbers
of a quick run are not measurements, only proof that every phase ran against real confined workers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(300)

CAP_AND_HOOK = ("n", "p50_us", "p90_us", "p99_us", "mean_us", "min_us", "max_us")
NODE_FIELDS = ("startup_ms", "startup_ready_ms", "rtt_p50_us", "rtt_p99_us", "pipelined_per_s", "rss_per_worker_mb")
PY_FIELDS = ("rtt_p50_us", "rtt_p99_us", "pipelined_per_s")
RATIOS_VS_NODE = (
    "cap_rtt_p50/node_rtt_p50",
    "cap_rtt_p99/node_rtt_p99",
    "hook_p50/node_rtt_p50",
    "hook_p99/node_rtt_p99",
    "pipelined/node_pipelined",
    "cold_start/node_startup",
    "pss/node_rss_per_worker",
)
RATIOS_VS_PYTHON = (
    "cap_rtt_p50/py_rtt_p50",
    "cap_rtt_p99/py_rtt_p99",
    "hook_p50/py_rtt_p50",
    "hook_p99/py_rtt_p99",
    "pipelined/py_pipelined",
)
PLUGINS = 5


def _bench(*args: str) -> dict[str, Any]:
    # Default settings, so the default (strict) confinement policy: no PLUGBOX_* variable leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGBOX_")}
    proc = subprocess.run(
        [sys.executable, "-c", "from plugbox.cli import main; main()", "bench", "--quick", "--json", *args],
        capture_output=True, text=True, timeout=280, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-report")


@pytest.fixture(scope="module")
def report(report_dir: Path) -> Iterator[dict[str, Any]]:
    yield _bench("--plugins", str(PLUGINS), "--report", str(report_dir))


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_report_has_every_plugbox_metric(report: dict[str, Any]) -> None:
    m = report["metrics"]
    for name in ("cap_rtt", "hook_dispatch"):
        assert all(_positive(m[name][field]) for field in CAP_AND_HOOK), m[name]
    assert _positive(m["hook_pipelined"]["per_s"]) and m["hook_pipelined"]["in_flight"] == 64
    assert _positive(m["cold_start"]["median_ms"]) and m["cold_start"]["zygote_prestarted"] is True
    assert all(_positive(m["memory"][f]) for f in ("pss_mb", "uss_mb", "rss_mb")), m["memory"]


def test_each_round_interleaves_equal_bursts_of_every_system(report: dict[str, Any]) -> None:
    rounds = report["metrics"]["rounds"]
    assert len(rounds) == report["options"]["rounds"] >= 1
    for r in rounds:
        anchors = [a for a in r["anchors"].values() if not a.get("skipped")]
        assert anchors and all(_positive(a["rtt_p50_us"]) and _positive(a["pipelined_per_s"]) for a in anchors)
        # every system ran as many round trips as the others, in the same bursts
        assert {a["samples"] for a in anchors} == {r["cap_rtt"]["n"]} == {r["hook_dispatch"]["n"]}
        assert r["cap_rtt"]["bursts"] == report["options"]["bursts"]
        assert _positive(r["cap_rtt"]["p50_us"]) and _positive(r["hook_dispatch"]["p50_us"])
        assert _positive(r["hook_pipelined"]["per_s"])
    standalone = report["metrics"]["anchors_standalone"]
    assert _positive(standalone["python_socketpair"]["rtt_p50_us"])


def test_scale_delivers_one_hook_to_every_plugin(report: dict[str, Any]) -> None:
    s = report["metrics"]["scale"]
    assert s["plugins"] == PLUGINS
    assert s["enabled"] == PLUGINS and s["enable_failures"] == []
    assert s["answered_within_budget"] == PLUGINS and s["timed_out"] == 0 and s["errors"] == 0
    assert _positive(s["deliver_ms"]) and _positive(s["host_rss_mb"])


def test_scale_leaves_no_worker_and_no_host_fd_behind(report: dict[str, Any]) -> None:
    s = report["metrics"]["scale"]
    fds = s["fds"]
    assert fds["with_workers"] - fds["before"] >= 2 * PLUGINS  # a channel and a pidfd per worker, at least
    assert s["leaked_workers"] == 0 and s["leaked_fds"] == 0
    assert fds["after_disable"] <= fds["before"] + 2


def test_scale_times_the_hook_to_each_plugin_alone(report: dict[str, Any]) -> None:
    per = report["metrics"]["scale"]["per_plugin"]
    assert per["n"] == PLUGINS and per["failed"] == 0
    assert _positive(per["p50_us"]) and per["p99_us"] >= per["p50_us"]
    assert sum(count for _, count in per["histogram_us"]) == PLUGINS


def test_scale_reports_worker_and_zygote_memory(report: dict[str, Any]) -> None:
    s = report["metrics"]["scale"]
    mem = s["memory"]
    assert mem["sampled"] == PLUGINS and _positive(mem["pss_mb"]) and _positive(mem["uss_mb"])
    assert _positive(mem["zygote_shared_mb"]) and _positive(mem["workers_pss_total_mb"])
    assert s["enable_curve_ms"][-1][1] == PLUGINS  # the curve ends with every plugin up


def test_report_judges_every_issue_17_target(report: dict[str, Any]) -> None:
    checks = report["acceptance"]
    assert len(checks) == 7 and all(isinstance(c["met"], bool) and c["measured"] for c in checks)
    assert next(c for c in checks if "leaked" in c["target"])["met"] is True


def test_report_page_is_written_and_self_contained(report: dict[str, Any], report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text()
    assert json.loads((report_dir / "report.json").read_text())["metrics"]["scale"] == report["metrics"]["scale"]
    assert page.count("<svg") >= 4  # latency, memory, fan-out, scale
    # Nothing to fetch: no script, stylesheet, image or frame, no URL but the SVG namespace name.
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|\bhref=|url\(|@import", page, re.I)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}


def test_python_anchor_and_its_ratios_are_present(report: dict[str, Any]) -> None:
    py = report["anchors"]["python_socketpair"]
    assert all(_positive(py[f]) for f in PY_FIELDS), py
    assert all(_positive(report["ratios"]["vs_python_limit"][k]) for k in RATIOS_VS_PYTHON)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_anchor_and_its_ratios_are_present(report: dict[str, Any]) -> None:
    node = report["anchors"]["node_worker_threads"]
    assert all(_positive(node[f]) for f in NODE_FIELDS), node
    assert all(_positive(report["ratios"]["vs_node"][k]) for k in RATIOS_VS_NODE)


def test_report_states_machine_policy_and_layers(report: dict[str, Any]) -> None:
    mc = report["machine"]
    assert mc["nproc"] and mc["kernel"] and mc["python"] and mc["host_loop"].startswith("uvloop")
    conf = report["confinement"]
    assert conf["policy"] == "strict"  # the default: the smoke run is fully confined or fails
    names = {layer["name"] for layer in conf["sample_worker_layers"]}
    assert {"seccomp", "landlock", "rlimits"} <= names


def test_nothing_is_left_running(report: dict[str, Any]) -> None:
    c = report["cleanup"]
    assert c["workers_seen"] > 0
    assert c["workers_left_running"] == [] and c["zygote_left_running"] is False


def test_skip_node_says_why_and_leaves_node_ratios_empty() -> None:
    r = _bench("--plugins", "1", "--skip-node")
    assert r["anchors"]["node_worker_threads"]["skipped"] == "--skip-node"
    assert all(v is None for v in r["ratios"]["vs_node"].values())
