"""Human-readable rendering of a bench report (rich). The report itself (suite.run_bench) is the
source of truth; this only lays it out: each metric beside its anchors and the ratios."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from plugbox.bench._budget import describe_budget

__all__ = ["print_report", "render"]


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def _placement(p: dict[str, Any]) -> str:
    mode = p.get("mode")
    if mode == "split":
        return f"split (host side on CPU {p.get('side_a_cpu')}, worker side on CPU {p.get('side_b_cpu')})"
    if mode == "same":
        return f"same (everything on CPU {p.get('side_a_cpu')})"
    return "free (scheduler's choice)"


def _x(value: Any) -> str:
    return "—" if value is None else f"{value:g}x"


def _metrics_table(r: dict[str, Any]) -> Table:
    m, rv = r["metrics"], r["ratios"]
    py = r["anchors"]["python_socketpair"]
    node = r["anchors"]["node_worker_threads"]
    vn, vp = rv["vs_node"], rv["vs_python_limit"]
    node_title = "node worker_threads" + (f" (skipped: {node['skipped']})" if node.get("skipped") else "")
    t = Table(title="plugbox bench — plugbox beside anchors measured in this run (ratio = plugbox / anchor)")
    for col, justify in (("metric", "left"), ("plugbox", "right"), (node_title, "right"), ("ratio vs node", "right"),
                         ("python socketpair limit", "right"), ("ratio vs python", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    cap, hook, pipe = m["cap_rtt"], m["hook_dispatch"], m["hook_pipelined"]
    cold, mem = m["cold_start"], m["memory"]
    t.add_row(f"capability rtt p50 (storage.get, n={cap['n']})", _fmt(cap["p50_us"], "µs"),
              _fmt(node.get("rtt_p50_us"), "µs"), _x(vn["cap_rtt_p50/node_rtt_p50"]),
              _fmt(py.get("rtt_p50_us"), "µs"), _x(vp["cap_rtt_p50/py_rtt_p50"]))
    t.add_row("capability rtt p99", _fmt(cap["p99_us"], "µs"), _fmt(node.get("rtt_p99_us"), "µs"),
              _x(vn["cap_rtt_p99/node_rtt_p99"]), _fmt(py.get("rtt_p99_us"), "µs"), _x(vp["cap_rtt_p99/py_rtt_p99"]))
    t.add_row(f"hook dispatch p50 (confined sync handler, n={hook['n']})", _fmt(hook["p50_us"], "µs"),
              _fmt(node.get("rtt_p50_us"), "µs"), _x(vn["hook_p50/node_rtt_p50"]),
              _fmt(py.get("rtt_p50_us"), "µs"), _x(vp["hook_p50/py_rtt_p50"]))
    t.add_row("hook dispatch p99", _fmt(hook["p99_us"], "µs"), _fmt(node.get("rtt_p99_us"), "µs"),
              _x(vn["hook_p99/node_rtt_p99"]), _fmt(py.get("rtt_p99_us"), "µs"), _x(vp["hook_p99/py_rtt_p99"]))
    t.add_row(f"pipelined hook dispatches ({pipe['in_flight']} in flight)", _fmt(pipe["per_s"], "/s"),
              _fmt(node.get("pipelined_per_s"), "/s"), _x(vn["pipelined/node_pipelined"]),
              _fmt(py.get("pipelined_per_s"), "/s"), _x(vp["pipelined/py_pipelined"]))
    t.add_row(f"cold start enable→enabled (median of {cold['n']}, zygote pre-started)",
              _fmt(cold["median_ms"], "ms"), _fmt(node.get("startup_ms"), "ms") + " (to 'online')",
              _x(vn["cold_start/node_startup"]), "—", "—")
    t.add_row(f"memory per idle worker, PSS ({mem['workers']} workers)", _fmt(mem["pss_mb"], "MB"),
              _fmt(node.get("rss_per_worker_mb"), "MB") + " (RSS/worker)", _x(vn["pss/node_rss_per_worker"]),
              "—", "—")
    t.add_row("memory per idle worker, USS", _fmt(mem["uss_mb"], "MB"), "—", "—", "—", "—")
    return t


def _scale_table(s: dict[str, Any]) -> Table:
    t = Table(title=f"scale: {s['plugins']} confined plugins enabled at once, one hook delivered to all")
    t.add_column("measure")
    t.add_column("value", justify="right")
    mem, fds, per = s["memory"], s["fds"], s["per_plugin"]
    rows = [
        ("plugins (N)", _fmt(s["plugins"])),
        ("enabled", _fmt(s["enabled"])),
        (f"enable all, wall time ({s['start_concurrency']} starting at once)", _fmt(s["enable_all_ms"], "ms")),
        (f"answered within the {s['budget_ms']} ms hook budget", f"{s['answered_within_budget']} / {s['plugins']}"),
        ("timed out / errors", f"{s['timed_out']} / {s['errors']}"),
        ("one hook to all (one chain), total time", _fmt(s["deliver_ms"], "ms")),
        (f"the hook to each plugin alone, p50 / p99 (n={per['n']})",
         f"{_fmt(per['p50_us'], 'µs')} / {_fmt(per['p99_us'], 'µs')}"),
        ("host RSS (before enabling → with all workers)",
         f"{_fmt(s['host_rss_before_mb'])} → {_fmt(s['host_rss_mb'])} MB"),
        (f"worker PSS / USS, median of {mem['sampled']}", f"{_fmt(mem['pss_mb'])} / {_fmt(mem['uss_mb'])} MB"),
        ("workers' PSS, total", _fmt(mem["workers_pss_total_mb"], "MB")),
        ("zygote RSS / PSS / shared", f"{_fmt(mem['zygote_rss_mb'])} / {_fmt(mem['zygote_pss_mb'])} / "
                                      f"{_fmt(mem['zygote_shared_mb'])} MB"),
        ("host fds: before → with workers → after disable (soft limit)",
         f"{fds['before']} → {fds['with_workers']} → {fds['after_disable']} ({fds['soft_limit']})"),
        ("disable all, wall time", _fmt(s["disable_all_ms"], "ms")),
        ("leaked workers / fds after disable-all", f"{s['leaked_workers']} / {s['leaked_fds']}"),
    ]
    if s["enable_failures"]:
        for f in s["enable_failures"]:
            rows.append((f"[red]enable failed x{f['count']}[/]", f["reason"]))
    for row in rows:
        t.add_row(*row)
    return t


def _acceptance_table(checks: list[dict[str, Any]]) -> Table:
    t = Table(title="issue 17 targets (written for --plugins 1000)")
    t.add_column("target")
    t.add_column("measured", justify="right")
    t.add_column("met")
    for c in checks:
        t.add_row(c["target"], str(c["measured"]), "[green]yes[/]" if c["met"] else "[red]no[/]")
    return t


def _layers_table(conf: dict[str, Any]) -> Table:
    missing = ", ".join(conf.get("layers_not_applied") or []) or "none"
    t = Table(title=f"confinement — policy: {conf['policy']} (layers of a sample worker; not applied: {missing})")
    t.add_column("layer")
    t.add_column("applied")
    t.add_column("detail", overflow="fold")
    for layer in conf.get("sample_worker_layers") or []:
        ok = layer.get("applied")
        t.add_row(str(layer.get("name")), "[green]yes[/]" if ok else "[red]no[/]", str(layer.get("detail", ""))[:160])
    return t


def _confinement(conf: dict[str, Any]) -> Group:
    """The sample worker's layers, then the cgroup budget the run ran under (when recorded)."""
    budget = describe_budget(conf)
    return Group(_layers_table(conf), *([Text(budget)] if budget else []))


def render(r: dict[str, Any]) -> Group:
    mc = r["machine"]
    facts = Text(
        f"machine: nproc={mc['nproc']} (usable {mc['cpus_usable']}), {mc['cpu_model']}, {mc['mem_total_mb']} MB; "
        f"kernel {mc['kernel']}; {mc['python']}; node {mc['node'] or 'absent'}; host loop {mc['host_loop']}; "
        f"loadavg {mc['loadavg_start']} → {mc.get('loadavg_end')}; "
        f"CPU placement: {_placement(mc.get('cpu_placement') or {})}"
    )
    policy = r["confinement"]["policy"]
    banner = Text(f"confinement policy: {policy}", style="bold green" if policy == "strict" else "bold red")
    cleanup = r.get("cleanup", {})
    left = cleanup.get("workers_left_running") or []
    clean = Text(
        f"cleanup: {cleanup.get('workers_seen', 0)} workers seen, {len(left)} left running, "
        f"zygote left running: {cleanup.get('zygote_left_running')}",
        style="red" if left or cleanup.get("zygote_left_running") else "",
    )
    notes = Text("\n".join(f"• {n}" for n in r.get("notes", [])), style="dim")
    return Group(facts, banner, _metrics_table(r), _scale_table(r["metrics"]["scale"]),
                 _acceptance_table(r.get("acceptance", [])), _confinement(r["confinement"]), clean, notes)


def _scenario_table(r: dict[str, Any]) -> Table:
    """chaos, soak and cluster: one row per measure, nested sections flattened (`writes.lost_live`)."""
    t = Table(title=f"plugbox bench --scenario {r['scenario']}")
    t.add_column("measure")
    t.add_column("value", justify="right", overflow="fold")

    def rows(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                rows(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            text = str(value) if isinstance(value, bool | list | dict) else _fmt(value)
            t.add_row(prefix, text[:200])

    for key, value in r.items():
        if key not in ("bench", "scenario", "machine", "samples"):
            rows(key, value)
    return t


def _neighbours_table(r: dict[str, Any]) -> Table:
    """neighbours: one row per attack class, the victim beside the host and the attacker."""
    t = Table(title=f"plugbox bench --scenario neighbours: {r['passed']}/{r['classes']} classes pass "
                    f"({r['duration_s']:g} s of attack each)")
    for name, justify in (("attack", "left"), ("victim p50 before", "right"), ("during", "right"),
                          ("victim failed", "right"), ("victim", "left"), ("host peak RSS +MB", "right"),
                          ("host log /min", "right"), ("secret in log", "right"), ("attacker", "left"),
                          ("charged with", "left"), ("pass", "left")):
        t.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in r["rows"]:
        t.add_row(row["attack"], _fmt(row["victim_p50_base_ms"], "ms"), _fmt(row["victim_p50_attack_ms"], "ms"),
                  f"{row['victim_failures']}/{row['victim_probes']}", row["victim_status"],
                  _fmt(row["host_rss_growth_mb"]), _fmt(row["host_log_bytes_per_min"] // 1024, "kB"),
                  str(row["secret_in_host_log"]), f"{row['attacker_status']} ({row['attacker_failures']} failures)",
                  row["attacker_charged"][:60], "yes" if row["pass"] else "NO")
    return t


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: do not squeeze the table into 80 columns
            console = Console(width=150)
    scenario = report.get("scenario")
    if scenario == "neighbours":
        console.print(_neighbours_table(report))
    else:
        console.print(_scenario_table(report) if scenario in ("chaos", "soak", "cluster") else render(report))
