"""The public API is small and explicit (STYLE 11): `plugbox` and `plugbox.sdk` declare every public
name in `__all__`, each importable and documented; every exception lives in `plugbox.errors`."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pkgutil
import types

import pytest

import plugbox
import plugbox.errors
import plugbox.sdk

# SPEC §3 names what a plugin author writes against; the SDK may offer more, never less.
SPEC_SDK_NAMES = {"Plugin", "HookContext", "HookResult", "CapabilityError", "CapabilityTimeout"}


def _public_attributes(module: types.ModuleType) -> set[str]:
    """Names a reader would take as public: no underscore, not a submodule, not `annotations`."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }


def test_the_sdk_offers_every_name_the_spec_promises() -> None:
    assert set(plugbox.sdk.__all__) >= SPEC_SDK_NAMES


@pytest.mark.parametrize("module", [plugbox, plugbox.sdk], ids=lambda m: m.__name__)
def test_all_is_complete_and_names_nothing_twice(module: types.ModuleType) -> None:
    # A public name missing from __all__ is an accident, not an API (httpx and trio keep this test).
    assert _public_attributes(module) <= set(module.__all__)
    assert len(module.__all__) == len(set(module.__all__))


@pytest.mark.parametrize("name", plugbox.sdk.__all__)
def test_each_sdk_name_is_importable_and_documented(name: str) -> None:
    value = getattr(importlib.import_module("plugbox.sdk"), name)
    assert inspect.getdoc(value), f"plugbox.sdk.{name} has no docstring"


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


def test_the_package_version_is_the_distribution_version() -> None:
    assert plugbox.__version__ == importlib.metadata.version("plugbox")


def test_every_error_is_a_plugbox_error_in_one_module() -> None:
    for name in plugbox.errors.__all__:
        error = getattr(plugbox.errors, name)
        assert issubclass(error, plugbox.errors.PlugboxError), name
        assert error.__module__ == "plugbox.errors", name


def test_no_exception_class_is_defined_outside_errors() -> None:
    defined_elsewhere = set()
    for info in pkgutil.walk_packages(plugbox.__path__, "plugbox."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and info.name != "plugbox.errors"
            ):
                defined_elsewhere.add(f"{info.name}.{name}")
    assert not defined_elsewhere, sorted(defined_elsewhere)
