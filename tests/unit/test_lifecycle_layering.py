"""The lifecycle is one package behind the Host façade: the seam `plugbox.runtime` knows neither
side, capabilities never see the lifecycle, and only the lifecycle and the host touch its entries.
Adapters get immutable `PluginView`s and register observers instead of replacing host attributes."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import plugbox
from plugbox.api import create_app
from plugbox.host import Host

ROOT = Path(plugbox.__file__).parent
INTERNALS = ("plugbox.lifecycle.manager", "plugbox.lifecycle.entry", "plugbox.lifecycle.registry")


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _module(path: Path) -> str:
    return ".".join(("plugbox", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")


def test_the_runtime_seam_imports_neither_the_lifecycle_nor_the_bridge() -> None:
    names = _imports(ROOT / "runtime.py")  # TYPE_CHECKING imports included: a cycle is a cycle
    assert not {n for n in names if n.startswith(("plugbox.lifecycle", "plugbox.loader", "plugbox.bridge"))}


def test_only_the_lifecycle_and_the_host_import_the_lifecycle_internals() -> None:
    offenders = {
        f"{_module(path)} imports {name}"
        for path in ROOT.rglob("*.py")
        if not _module(path).startswith(("plugbox.lifecycle", "plugbox.host"))
        for name in _imports(path)
        if name.startswith(INTERNALS)
    }
    assert not offenders, sorted(offenders)


def test_capabilities_never_import_the_lifecycle_or_the_host() -> None:
    offenders = {
        f"{_module(path)} imports {name}"
        for path in (ROOT / "capabilities").rglob("*.py")
        for name in _imports(path)
        if name.startswith(("plugbox.lifecycle", "plugbox.loader", "plugbox.host"))
    }
    assert not offenders, sorted(offenders)


async def test_a_plugin_view_is_a_snapshot_that_cannot_change_the_plugin(host: Host) -> None:
    host.register_builtin(plugbox.sdk.Plugin, {"id": "p", "name": "p", "version": "1.0.0", "type": "extension",
                                               "main": "builtin"})
    view = await host.set_config("p", {"greeting": "hi"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.status = "enabled"  # type: ignore[misc]
    with pytest.raises(TypeError):
        view.config["greeting"] = "changed"  # type: ignore[index]
    await host.enable("p")
    assert view.status == "installed" and host.plugin("p").status == "enabled"
    assert host.manager.get("p").config == {"greeting": "hi"}


async def test_every_app_built_on_a_host_receives_its_events(host: Host) -> None:
    first, second = create_app(host), create_app(host)
    await host.dispatch("session:ready", {"sessionId": "s"}, "s")
    for app in (first, second):
        count = app.state.metrics.registry.get_sample_value("plugbox_hook_chain_seconds_count",
                                                            {"event": "session:ready"})
        assert count == 1
