"""Plugin lifecycle through the Host, with built-ins (SPEC §5): enable/disable, budgets, concurrency,
config, persistence across restarts, boot-time restore, uninstall and shutdown."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from plugbox.errors import ConfigError, PluginNotFound, PluginStateError, StorageError
from plugbox.host import Host
from plugbox.sdk import HookContext, Plugin

MakeHost = Callable[..., Host]  # the `make_host` fixture (tests/conftest.py)

SCHEMA = {
    "type": "object",
    "properties": {
        "greeting": {"type": "string", "default": "hi"},
        "apiToken": {"type": "string", "secret": True},
        "timeoutMs": {"type": "number", "default": 3000, "min": 500},
    },
}


def _manifest(plugin_id: str = "probe", **fields: Any) -> dict[str, Any]:
    doc = {
        "id": plugin_id,
        "name": plugin_id,
        "version": "1.0.0",
        "type": "extension",
        "main": "builtin",
        "configSchema": SCHEMA,
    }
    return doc | fields


@dataclass
class Script:
    """What a Probe plugin does, shared by every instance (a restart makes a new instance): it records
    each step in `calls`, sets `reached[step]` when a step starts, waits on `gate` in the steps named
    in `hang` and raises in those named in `fail`."""

    hang: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    reached: defaultdict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    instances: list[Probe] = field(default_factory=list)

    def plugin(self) -> Plugin:
        self.instances.append(Probe(self))
        return self.instances[-1]


class Probe(Plugin):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def _step(self, name: str) -> None:
        self.script.calls.append(name)
        self.script.reached[name].set()
        await asyncio.sleep(0)  # like any real plugin, a lifecycle step yields to the loop
        if name in self.script.hang:
            await self.script.gate.wait()
        if name in self.script.fail:
            raise RuntimeError(f"{name} failed on purpose")

    async def on_load(self, ctx: Any) -> None:
        ctx.register_hook("session:ready", self.on_ready)
        await self._step("on_load")

    async def on_enable(self, ctx: Any) -> None:
        await self._step("on_enable")

    async def on_disable(self, ctx: Any) -> None:
        await self._step("on_disable")

    async def on_config_change(self, ctx: Any, config: dict[str, Any]) -> None:
        self.script.configs.append(dict(config))
        await self._step("on_config_change")

    def on_ready(self, hook: HookContext) -> None:
        self.script.calls.append("hook")


def _hooks_of(host: Host, plugin_id: str) -> list[str]:
    return [reg.event for reg in host.bus.handlers("session:ready") if reg.plugin_id == plugin_id]


def _add(host: Host, script: Script, plugin_id: str = "probe", **fields: Any) -> None:
    host.register_builtin(script.plugin, _manifest(plugin_id, **fields))


# -- enable ------------------------------------------------------------------------------------------


async def test_enable_runs_on_load_then_on_enable(host: Host) -> None:
    script = Script()
    _add(host, script)
    entry = await host.enable("probe")
    assert script.calls == ["on_load", "on_enable"]
    assert entry.status == "enabled"
    assert entry.enabled is True


async def test_enable_registers_the_hooks_from_on_load(host: Host) -> None:
    _add(host, Script())
    await host.enable("probe")
    assert _hooks_of(host, "probe") == ["session:ready"]


async def test_ctx_is_set_on_the_plugin_before_on_load(host: Host) -> None:
    script = Script()
    _add(host, script)
    await host.enable("probe")
    assert script.instances[0].ctx.plugin_id == "probe"


async def test_enable_of_an_unknown_plugin_raises_plugin_not_found(host: Host) -> None:
    with pytest.raises(PluginNotFound, match="'ghost'"):
        await host.enable("ghost")


async def test_hanging_on_enable_times_out_leaving_error_and_no_hooks(make_host: MakeHost) -> None:
    host = make_host(lifecycle_budget_ms=30)
    await host.start()
    _add(host, Script(hang={"on_enable"}))
    with pytest.raises(PluginStateError, match="on_enable timed out"):
        await host.enable("probe")
    entry = host.manager.get("probe")
    assert entry.status == "error"
    assert entry.error is not None and "on_enable" in entry.error and "timed out" in entry.error
    assert _hooks_of(host, "probe") == []
    assert entry.runtime is None


async def test_raising_on_load_leaves_error_no_hooks_and_skips_on_enable(host: Host) -> None:
    script = Script(fail={"on_load"})
    _add(host, script)
    with pytest.raises(PluginStateError, match="on_load"):
        await host.enable("probe")
    entry = host.manager.get("probe")
    assert entry.status == "error"
    assert entry.error is not None and "on_load raised RuntimeError: on_load failed on purpose" in entry.error
    assert _hooks_of(host, "probe") == []
    assert script.calls == ["on_load"]


async def test_plugin_in_error_can_be_enabled_again_once_fixed(host: Host) -> None:
    script = Script(fail={"on_enable"})
    _add(host, script)
    with pytest.raises(PluginStateError):
        await host.enable("probe")
    script.fail.clear()
    entry = await host.enable("probe")
    assert (entry.status, entry.error) == ("enabled", None)
    assert _hooks_of(host, "probe") == ["session:ready"]


async def test_second_enable_while_one_is_in_flight_is_refused(host: Host) -> None:
    script = Script(hang={"on_enable"})
    _add(host, script)
    first = asyncio.create_task(host.enable("probe"))
    await script.reached["on_enable"].wait()
    with pytest.raises(PluginStateError, match="already in flight"):
        await host.enable("probe")
    script.gate.set()
    await first
    assert script.calls == ["on_load", "on_enable"]


async def test_two_enables_waiting_on_a_disable_start_the_plugin_once(host: Host) -> None:
    script = Script(hang={"on_disable"})
    _add(host, script)
    await host.enable("probe")
    disabling = asyncio.create_task(host.disable("probe"))
    await script.reached["on_disable"].wait()

    enables = [asyncio.create_task(host.enable("probe")) for _ in range(2)]
    await asyncio.sleep(0)  # both enables are now waiting for the disable
    script.gate.set()
    await disabling
    await asyncio.gather(*enables, return_exceptions=True)

    assert script.calls.count("on_load") == 2  # the first enable, then exactly one re-enable
    assert _hooks_of(host, "probe") == ["session:ready"]
    assert host.manager.get("probe").status == "enabled"


# -- disable -----------------------------------------------------------------------------------------


async def test_disable_runs_on_disable_and_removes_hooks(host: Host) -> None:
    script = Script()
    _add(host, script)
    await host.enable("probe")
    entry = await host.disable("probe")
    assert script.calls[-1] == "on_disable"
    assert entry.status == "disabled"
    assert _hooks_of(host, "probe") == []


async def test_on_disable_failure_is_logged_not_fatal(host: Host) -> None:
    _add(host, Script(fail={"on_disable"}))
    await host.enable("probe")
    entry = await host.disable("probe")
    assert entry.status == "disabled"
    assert _hooks_of(host, "probe") == []
    assert any("on_disable failed" in line["message"] for line in entry.logs)


async def test_concurrent_disables_join_and_run_on_disable_once(host: Host) -> None:
    script = Script(hang={"on_disable"})
    _add(host, script)
    await host.enable("probe")
    disables = [asyncio.create_task(host.disable("probe")) for _ in range(3)]
    await script.reached["on_disable"].wait()
    script.gate.set()
    entries = await asyncio.gather(*disables)
    assert script.calls.count("on_disable") == 1
    assert {e.status for e in entries} == {"disabled"}


async def test_disable_during_an_enable_waits_for_it_then_disables(host: Host) -> None:
    script = Script(hang={"on_enable"})
    _add(host, script)
    enabling = asyncio.create_task(host.enable("probe"))
    await script.reached["on_enable"].wait()
    disabling = asyncio.create_task(host.disable("probe"))
    script.gate.set()
    await enabling
    entry = await disabling
    assert script.calls == ["on_load", "on_enable", "on_disable"]
    assert entry.status == "disabled"
    assert _hooks_of(host, "probe") == []


async def test_an_enable_asked_for_right_after_a_disable_runs_after_it_and_neither_hangs(host: Host) -> None:
    """The disable is asked for first, the enable before the disable's task has begun: the enable
    waits for the disable, and the disable does not wait for an enable asked for after it (each
    waiting for the other hung both)."""
    script = Script()
    _add(host, script)
    await host.enable("probe")
    disabling = asyncio.create_task(host.disable("probe"))
    enabling = asyncio.create_task(host.enable("probe"))
    async with asyncio.timeout(5):
        await disabling
        entry = await enabling
    assert script.calls == ["on_load", "on_enable", "on_disable", "on_load", "on_enable"]
    assert entry.status == "enabled"


async def test_operator_disable_during_boot_restore_does_not_wait_for_the_boot_task(make_host: MakeHost) -> None:
    script = Script()
    first = make_host()
    _add(first, script)
    await first.start()
    await first.enable("probe")
    await first.stop()

    script.hang.add("on_enable")
    second = make_host()
    _add(second, script)

    async def operator() -> asyncio.Task[Any]:
        await script.reached["on_enable"].wait()
        disabling = asyncio.create_task(second.disable("probe"))
        await asyncio.sleep(0)
        script.gate.set()
        return disabling

    op = asyncio.create_task(operator())
    await second.start()  # in this task, as a server's lifespan task would, which then keeps running
    disabling = await op
    async with asyncio.timeout(0.3):
        entry = await disabling
    assert entry.status == "disabled"
    # Whichever got its turn first, the boot's re-enable does not undo the operator's disable.
    assert second.plugin("probe").status == "disabled" and not second.manager.get("probe").record.enabled


# -- config and sessions -----------------------------------------------------------------------------


async def test_config_with_a_bad_value_is_refused_naming_the_field_and_not_persisted(host: Host) -> None:
    script = Script()
    _add(host, script)
    await host.enable("probe")
    await host.set_config("probe", {"greeting": "hello"})
    with pytest.raises(ConfigError) as caught:
        await host.set_config("probe", {"greeting": "changed", "timeoutMs": 100})
    assert caught.value.field == "timeoutMs"
    record = host.registry.get("probe")
    assert record is not None and record.config["greeting"] == "hello"
    assert host.manager.get("probe").config["greeting"] == "hello"
    assert script.configs == [{"greeting": "hello", "timeoutMs": 3000}]


@pytest.mark.parametrize(
    ("config", "field_name"),
    [({"greeting": 5}, "greeting"), ({"nope": 1}, "nope"), ({"timeoutMs": "fast"}, "timeoutMs")],
)
async def test_config_that_breaks_the_schema_names_the_field(
    host: Host, config: dict[str, Any], field_name: str
) -> None:
    _add(host, Script())
    with pytest.raises(ConfigError) as caught:
        await host.set_config("probe", config)
    assert caught.value.field == field_name


async def test_valid_config_is_persisted_with_defaults_and_reaches_on_config_change(host: Host) -> None:
    script = Script()
    _add(host, script)
    await host.enable("probe")
    await host.set_config("probe", {"greeting": "hey"})
    expected = {"greeting": "hey", "timeoutMs": 3000}
    assert script.configs == [expected]
    assert dict(script.instances[0].ctx.config) == expected
    record = host.registry.get("probe")
    assert record is not None and record.config == expected


async def test_plugin_view_masks_secret_config_values(host: Host) -> None:
    _add(host, Script())
    await host.set_config("probe", {"apiToken": "tok-123456", "greeting": "hey"})
    view = host.plugin("probe")
    assert view.config["apiToken"] == "********"
    assert view.config["greeting"] == "hey"
    assert "tok-123456" not in repr(view)


async def test_writing_back_the_masked_secret_keeps_its_value(host: Host) -> None:
    _add(host, Script())
    await host.set_config("probe", {"apiToken": "tok-123456"})
    masked = dict(host.plugin("probe").config)
    await host.set_config("probe", {**masked, "greeting": "changed"})
    assert host.manager.get("probe").config["apiToken"] == "tok-123456"


async def test_active_sessions_outside_the_manifest_sessions_are_refused(host: Host) -> None:
    _add(host, Script(), sessions=["main"])
    with pytest.raises(ConfigError, match="'other'"):
        await host.set_active_sessions("probe", ["main", "other"])
    assert host.plugin("probe").active_sessions == ()


# -- persistence and boot ----------------------------------------------------------------------------


async def test_status_config_sessions_and_enabled_choice_survive_a_restart(make_host: MakeHost) -> None:
    first = make_host()
    _add(first, Script())
    await first.start()
    await first.set_config("probe", {"greeting": "persisted", "apiToken": "tok-123456"})
    await first.set_active_sessions("probe", ["main", "side"])
    await first.enable("probe")
    await first.stop()

    script = Script()
    second = make_host()
    _add(second, script)
    await second.start()
    entry = second.manager.get("probe")
    assert entry.status == "enabled"
    assert entry.record.enabled is True
    assert entry.config == {"greeting": "persisted", "apiToken": "tok-123456", "timeoutMs": 3000}
    assert second.plugin("probe").active_sessions == ("main", "side")
    assert script.calls == ["on_load", "on_enable"]


async def test_operator_disabled_plugin_stays_disabled_after_a_restart(make_host: MakeHost) -> None:
    first = make_host()
    _add(first, Script())
    await first.start()
    await first.enable("probe")
    await first.disable("probe")
    await first.stop()

    script = Script()
    second = make_host()
    _add(second, script)
    await second.start()
    assert second.manager.get("probe").status == "disabled"
    assert script.calls == []


async def test_error_status_and_reason_survive_a_restart(make_host: MakeHost) -> None:
    first = make_host()
    _add(first, Script(fail={"on_load"}))
    await first.start()
    with pytest.raises(PluginStateError):
        await first.enable("probe")
    await first.stop()

    second = make_host()
    _add(second, Script())
    await second.start(restore=False)
    entry = second.manager.get("probe")
    assert entry.status == "error"
    assert entry.error is not None and "on_load" in entry.error


async def test_one_failing_plugin_does_not_block_restoring_the_others(make_host: MakeHost) -> None:
    first = make_host()
    for plugin_id in ("alpha", "beta", "gamma"):
        _add(first, Script(), plugin_id)
    await first.start()
    for plugin_id in ("alpha", "beta", "gamma"):
        await first.enable(plugin_id)
    await first.stop()

    second = make_host()
    _add(second, Script(), "alpha")
    _add(second, Script(fail={"on_load"}), "beta")
    _add(second, Script(), "gamma")
    await second.start()
    statuses = {pid: second.manager.get(pid).status for pid in ("alpha", "beta", "gamma")}
    assert statuses == {"alpha": "enabled", "beta": "error", "gamma": "enabled"}


async def test_builtin_cannot_be_uninstalled(host: Host) -> None:
    _add(host, Script())
    await host.enable("probe")
    with pytest.raises(PluginStateError, match="built-in"):
        await host.uninstall("probe")
    assert host.manager.get("probe").status == "enabled"


async def test_builtin_id_cannot_be_registered_twice(host: Host) -> None:
    _add(host, Script())
    with pytest.raises(Exception, match="'probe'"):
        _add(host, Script())


# -- shutdown ----------------------------------------------------------------------------------------


async def test_shutdown_gives_every_on_disable_one_shared_cap(make_host: MakeHost) -> None:
    host = make_host(shutdown_cap_ms=100)
    await host.start()
    scripts = {pid: Script(hang={"on_disable"}) for pid in ("alpha", "beta", "gamma")}
    for pid, script in scripts.items():
        _add(host, script, pid)
        await host.enable(pid)

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(2):
        await host.stop()
    elapsed = loop.time() - started

    assert all(s.calls.count("on_disable") == 1 for s in scripts.values())
    assert elapsed < 0.25, f"shutdown took {elapsed:.3f} s for a 0.1 s shared cap"


async def test_shutdown_keeps_the_operators_enabled_choice(make_host: MakeHost) -> None:
    host = make_host()
    _add(host, Script())
    await host.start()
    await host.enable("probe")
    await host.stop()
    assert host.manager.get("probe").record.enabled is True


async def test_stop_releases_the_database_even_if_the_host_never_started(make_host: MakeHost) -> None:
    host = make_host()
    await host.stop()
    with pytest.raises(StorageError, match="closed"):
        host.db.read(lambda c: c.execute("SELECT 1").fetchone())


# -- circuit breaker (hook budget overruns count as failures) ----------------------------------------


class Stalling(Plugin):
    """Every `session:ready` handler call hangs until the budget cuts it, unless `ok` is set."""

    ok = False

    def on_load(self, ctx: Any) -> None:
        ctx.register_hook("session:ready", self.on_ready)

    async def on_ready(self, hook: HookContext) -> None:
        if not self.ok:
            await asyncio.Event().wait()


async def test_breaker_opens_after_the_threshold_of_consecutive_hook_timeouts(make_host: MakeHost) -> None:
    host = make_host(hook_budget_ms=5, breaker_threshold=3)
    await host.start()
    host.register_builtin(Stalling, _manifest("stalling"))
    await host.enable("stalling")
    for _ in range(3):
        await (await host.bus.execute("session:ready", {})).settled()  # (it observes: the bus went on)
    entry = host.manager.get("stalling")
    assert entry.status == "error"
    assert entry.error is not None and "after 3 consecutive failures" in entry.error


async def test_a_successful_hook_resets_the_timeout_count_only_after_the_stable_period(
        make_host: MakeHost) -> None:
    # stable after 1 ms: the two 5 ms timeouts put the success past it, so the count starts over
    host = make_host(hook_budget_ms=5, breaker_threshold=3, breaker_stable_ms=1)
    await host.start()
    plugin = Stalling()
    host.register_builtin(lambda: plugin, _manifest("stalling"))
    await host.enable("stalling")
    for ok in (False, False, True, False, False):
        plugin.ok = ok
        await (await host.bus.execute("session:ready", {})).settled()
    assert host.manager.get("stalling").status == "enabled"


async def test_a_success_within_the_stable_period_does_not_reset_the_timeout_count(make_host: MakeHost) -> None:
    host = make_host(hook_budget_ms=5, breaker_threshold=3)  # default stable period: a minute
    await host.start()
    plugin = Stalling()
    host.register_builtin(lambda: plugin, _manifest("stalling"))
    await host.enable("stalling")
    for ok in (False, False, True, False):
        plugin.ok = ok
        await host.dispatch("session:ready", {})  # (it observes: wait for it)
    entry = host.manager.get("stalling")
    assert entry.status == "error" and "after 3 consecutive failures" in (entry.error or "")
