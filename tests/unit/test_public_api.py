"""The public API is small and explicit (STYLE 11): `plugbox` and `plugbox.sdk` export exactly their
documented names, each importable and documented; everything else is internal."""

from __future__ import annotations

import importlib
import inspect

import pytest

import plugbox
import plugbox.errors
import plugbox.sdk

SDK_NAMES = {
    # SPEC §3: what a plugin author writes against
    "Plugin",
    "HookContext",
    "HookResult",
    "CapabilityError",
    "CapabilityTimeout",
    # the `ctx` and `ctx.logger` types, and the plain-data rule a plugin may check ahead of a call
    "Context",
    "Logger",
    "PlainDataError",
    "check_plain",
}


def test_sdk_exports_exactly_the_documented_names() -> None:
    assert set(plugbox.sdk.__all__) == SDK_NAMES
    assert len(plugbox.sdk.__all__) == len(SDK_NAMES)  # no duplicates


@pytest.mark.parametrize("name", sorted(SDK_NAMES))
def test_each_sdk_name_is_importable_from_plugbox_sdk(name: str) -> None:
    module = importlib.import_module("plugbox.sdk")
    assert getattr(module, name) is not None


@pytest.mark.parametrize("name", sorted(SDK_NAMES))
def test_each_sdk_name_is_documented(name: str) -> None:
    assert inspect.getdoc(getattr(plugbox.sdk, name))


def test_sdk_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from plugbox.sdk import *", namespace)
    assert set(namespace) - {"__builtins__"} == SDK_NAMES


def test_sdk_errors_are_the_hosts_errors() -> None:
    # a plugin catching plugbox.sdk.CapabilityError catches what the host raises
    assert plugbox.sdk.CapabilityError is plugbox.errors.CapabilityError
    assert plugbox.sdk.CapabilityTimeout is plugbox.errors.CapabilityTimeout
    assert issubclass(plugbox.sdk.CapabilityTimeout, plugbox.sdk.CapabilityError)


def test_spec_example_plugin_imports_work() -> None:
    from plugbox.sdk import HookContext, HookResult, Plugin

    class Echo(Plugin):
        async def on_message(self, hook: HookContext) -> HookResult | None:
            return None

    assert HookResult().stop is False
    assert Echo().health_check() == {"healthy": True, "message": "ok"}


def test_hook_result_defaults_mean_continue_with_data_unchanged() -> None:
    result = plugbox.sdk.HookResult()
    assert (result.data, result.stop, result.error) == (None, False, None)


def test_plugin_lifecycle_methods_are_all_optional() -> None:
    plugin = plugbox.sdk.Plugin()
    ctx = object()
    for method in ("on_load", "on_enable", "on_disable", "on_unload"):
        assert getattr(plugin, method)(ctx) is None
    assert plugin.on_config_change(ctx, {}) is None  # type: ignore[arg-type]


def test_top_level_package_exports_only_the_version() -> None:
    assert plugbox.__all__ == ["__version__"]
    assert plugbox.__version__ == "0.1.0"


def test_every_error_is_a_plugbox_error_in_one_module() -> None:
    for name in plugbox.errors.__all__:
        error = getattr(plugbox.errors, name)
        assert issubclass(error, plugbox.errors.PlugboxError), name
        assert error.__module__ == "plugbox.errors", name
