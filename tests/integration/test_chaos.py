"""The chaos scenario, short (`plugbox bench --scenario chaos` is the long one): 20 confined
plugins under sustained write dispatches while workers are SIGKILLed, SIGSTOPped (then SIGCONTed,
or left to the liveness kill), flooded with logs and made to write garbage into their channel.
Every call fails cleanly or succeeds, no acknowledged write is lost, nothing outlives the host."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from plugbox.bench.chaos import FAULT_KINDS, run_chaos
from plugbox.settings import Settings
from tests.integration.conftest import host_settings

pytestmark = pytest.mark.timeout(60)


def _settings(root: Path) -> Settings:
    s = host_settings(root, hook_budget_ms=1000, liveness_window_ms=1000)
    return msgspec.structs.replace(s, plugins_dir=str(root / "plugins"), breaker_threshold=1_000_000,
                                   restart_backoff_initial_ms=50, restart_backoff_max_ms=300)


async def test_chaos_loses_no_acknowledged_write_and_leaves_no_process() -> None:
    report = await run_chaos(plugins=20, duration_s=12, warmup_s=2, fault_every_s=0.2, seed=1234,
                             settings=_settings)
    faults = report["faults_injected"]
    assert set(faults) == set(FAULT_KINDS) and all(n >= 5 for n in faults.values()), faults
    deaths = report["worker_deaths_by_reason"]
    assert any("undecodable frames" in reason for reason in deaths), deaths  # garbage writers were killed
    assert any("liveness ping" in reason for reason in deaths), deaths  # stopped workers were killed
    writes = report["writes"]
    assert writes["acknowledged"] > 1000
    assert writes["lost_live"] == 0 and writes["lost_after_shutdown"] == 0, writes["lost_examples"]
    assert writes["integrity_check_ok"]
    assert report["failed_uncleanly"] == {}, report["failed_uncleanly"]
    assert sum(report["failed_cleanly"].values()) > 0  # the faults did reach the calls
    d = report["dispatches"]
    assert d["per_s_under_faults"] >= 0.3 * d["per_s_warmup"], d  # throughput held, roughly
    p = report["processes"]
    assert p["stray_workers"] == [] and not p["zygote_left_running"], p
