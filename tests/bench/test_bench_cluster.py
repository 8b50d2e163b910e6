"""`plugbox bench --scenario cluster`: three hosts on one PostgreSQL database keep every acknowledged
write and move a SIGKILLed host's sessions within 10 s (issue 16's acceptance figures)."""

from __future__ import annotations

import pytest

from plugbox.bench.cluster import run_cluster


async def _run(postgres_server: str, monkeypatch: pytest.MonkeyPatch, duration_s: float) -> dict[str, object]:
    monkeypatch.setenv("PLUGBOX_DATABASE_URL", postgres_server)
    return await run_cluster(duration_s=duration_s, progress=lambda _msg: None, sessions=6)


def _assert_acceptance(report: dict[str, object]) -> None:
    writes, failover, spread = report["writes"], report["failover"], report["leases"]
    assert isinstance(writes, dict) and isinstance(failover, dict) and isinstance(spread, dict)
    assert writes["acknowledged"] > 0
    assert writes["lost_acknowledged"] == 0
    assert failover["sessions_moved"] > 0 and failover["within_10_s"] is True, failover
    assert sorted(spread["spread"].values()) == [2, 2, 2]  # six sessions over three hosts, two each
    webhooks = report["webhooks"]
    assert isinstance(webhooks, dict) and webhooks["queued"] > 0
    assert webhooks["lost"] == 0
    # Claimed deliveries: only what the killed host had in flight may repeat (webhook_max_in_flight).
    assert webhooks["duplicates"] <= 8, webhooks


@pytest.mark.timeout(300)
async def test_cluster_scenario_loses_no_acknowledged_write_and_fails_over_within_10_s(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _assert_acceptance(await _run(postgres_server, monkeypatch, duration_s=6))


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_cluster_scenario_over_a_minute(postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_acceptance(await _run(postgres_server, monkeypatch, duration_s=60))
