"""Operator settings (SPEC §10): the documented defaults, overridden by a TOML file, then by
`PLUGBOX_*` environment variables; every bad value is refused naming the setting."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from plugbox.errors import ConfigError
from plugbox.settings import DEFAULTS, Settings, load_settings


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plugbox.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_spec_table() -> None:
    s = load_settings(environ={})
    assert s.hook_budget_ms == 5000
    assert s.lifecycle_budget_ms == 30000
    assert s.health_budget_ms == 5000
    assert s.liveness_window_ms == 5000
    assert (s.capability_timeout_ms, s.send_timeout_factor) == (30000, 4)
    assert s.max_calls_in_flight == 32
    assert s.worker_memory_bytes == 256 * 1024 * 1024
    assert s.frame_max_bytes == 16 * 1024 * 1024
    assert (s.log_lines_per_window, s.log_window_ms, s.log_line_max_chars) == (200, 10000, 8192)
    assert s.storage_quota_bytes == 50 * 1024 * 1024
    assert (s.fetch_timeout_ms, s.fetch_timeout_max_ms) == (15000, 30000)
    assert (s.fetch_body_max_bytes, s.fetch_max_in_flight) == (10 * 1024 * 1024, 16)
    assert s.breaker_threshold == 5
    assert s.shutdown_cap_ms == 10000


def test_secure_defaults_fail_closed() -> None:
    s = load_settings(environ={})
    assert s.confinement == "strict"
    assert s.allow_unsigned_ingress is False
    assert s.host == "127.0.0.1"


def test_environment_variable_overrides_a_default() -> None:
    assert load_settings(environ={"PLUGBOX_HOOK_BUDGET_MS": "2000"}).hook_budget_ms == 2000


def test_environment_list_setting_is_comma_separated() -> None:
    s = load_settings(environ={"PLUGBOX_API_KEYS": "alpha, beta,,gamma "})
    assert s.api_keys == ("alpha", "beta", "gamma")


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("true", True), ("YES", True), ("0", False), ("off", False)]
)
def test_environment_boolean_setting(raw: str, expected: bool) -> None:
    assert load_settings(environ={"PLUGBOX_ALLOW_UNSIGNED_INGRESS": raw}).allow_unsigned_ingress is expected


def test_environment_string_setting_is_taken_verbatim() -> None:
    assert load_settings(environ={"PLUGBOX_DATA_DIR": "/var/lib/plugbox"}).data_dir == "/var/lib/plugbox"


def test_non_integer_environment_value_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="PLUGBOX_HOOK_BUDGET_MS") as caught:
        load_settings(environ={"PLUGBOX_HOOK_BUDGET_MS": "five seconds"})
    assert "five seconds" in str(caught.value)


def test_unrecognised_environment_boolean_is_refused_naming_the_variable() -> None:
    # a typo must not silently become False (or True)
    with pytest.raises(ConfigError, match="PLUGBOX_USE_NETNS"):
        load_settings(environ={"PLUGBOX_USE_NETNS": "ture"})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PLUGBOX_HOOK_BUDGET_MS": "0"}, "hook_budget_ms"),
        ({"PLUGBOX_BREAKER_THRESHOLD": "-1"}, "breaker_threshold"),
        ({"PLUGBOX_PORT": "70000"}, "port"),
        ({"PLUGBOX_CONFINEMENT": "off"}, "confinement"),
    ],
)
def test_out_of_range_value_is_refused_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env)


def test_fetch_timeout_above_its_maximum_is_refused() -> None:
    with pytest.raises(ConfigError, match="fetch_timeout_ms"):
        load_settings(environ={}, fetch_timeout_ms=40000)


def test_a_host_wide_channel_total_under_four_high_water_marks_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"channel_bytes_total .* at least 4 x channel_high_water_bytes"):
        load_settings(environ={"PLUGBOX_CHANNEL_BYTES_TOTAL": str(4 << 20)}, channel_high_water_bytes=(1 << 20) + 1)
    assert load_settings(environ={}, channel_bytes_total=4 << 20).channel_bytes_total == 4 << 20


def test_degraded_confinement_is_an_explicit_choice() -> None:
    assert load_settings(environ={"PLUGBOX_CONFINEMENT": "degraded"}).confinement == "degraded"


def test_toml_file_sets_values(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'hook_budget_ms = 1500\nfetch_exempt_hosts = ["localhost"]\nconfinement = "degraded"\n')
    s = load_settings(path, environ={})
    assert (s.hook_budget_ms, s.fetch_exempt_hosts, s.confinement) == (1500, ("localhost",), "degraded")


def test_config_file_is_found_through_plugbox_config(tmp_path: Path) -> None:
    path = _toml(tmp_path, "lifecycle_budget_ms = 1234\n")
    assert load_settings(environ={"PLUGBOX_CONFIG": str(path)}).lifecycle_budget_ms == 1234


def test_environment_wins_over_the_file_and_explicit_overrides_win_over_both(tmp_path: Path) -> None:
    path = _toml(tmp_path, "hook_budget_ms = 1500\nhealth_budget_ms = 1500\n")
    s = load_settings(path, environ={"PLUGBOX_HOOK_BUDGET_MS": "2500", "PLUGBOX_HEALTH_BUDGET_MS": "2500"},
                      health_budget_ms=3500)
    assert (s.hook_budget_ms, s.health_budget_ms) == (2500, 3500)


def test_unknown_key_in_the_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = _toml(tmp_path, "hook_budget = 1500\n")
    with pytest.raises(ConfigError, match="hook_budget"):
        load_settings(path, environ={})


def test_wrongly_typed_value_in_the_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'shutdown_cap_ms = "ten seconds"\n')
    with pytest.raises(ConfigError, match="shutdown_cap_ms"):
        load_settings(path, environ={})


def test_unknown_explicit_override_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match="hook_budget_seconds"):
        load_settings(environ={}, hook_budget_seconds=5)


def test_invalid_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "hook_budget_ms = = 1\n")
    with pytest.raises(ConfigError, match=r"plugbox\.toml"):
        load_settings(path, environ={})


def test_missing_config_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_settings_are_immutable() -> None:
    s = load_settings(environ={})
    with pytest.raises(AttributeError):
        s.hook_budget_ms = 1  # type: ignore[misc]


def test_data_and_plugin_paths_follow_the_settings(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path / "d"), plugins_dir=str(tmp_path / "p"))
    assert (s.data_path, s.plugins_path) == (tmp_path / "d", tmp_path / "p")


def test_every_setting_says_what_it_bounds() -> None:
    import ast
    import inspect

    import plugbox.settings

    tree = ast.parse(inspect.getsource(plugbox.settings))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    undocumented = [
        stmt.target.id
        for stmt, following in zip(cls.body, [*cls.body[1:], None], strict=True)
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        and not (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                 and isinstance(following.value.value, str))
    ]
    assert undocumented == []



def test_every_setting_is_in_the_operators_table_with_its_env_var_and_default() -> None:
    """docs/operations.md's configuration table is where operators look a setting up: each one is
    there, with its environment variable and its default as the host has it."""
    table = {}
    doc = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1].startswith("`PLUGBOX_"):
            table[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    wrong = []
    for field in msgspec.structs.fields(Settings):
        if field.name not in table:
            wrong.append(f"{field.name}: not in the table")
            continue
        env, default = table[field.name]
        if env != f"PLUGBOX_{field.name.upper()}":
            wrong.append(f"{field.name}: env var {env}")
        value = getattr(DEFAULTS, field.name)
        if value is None or value == () or value == "":
            continue  # shown in words ("unset", "none", "derived from ...")
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else (
            str(value).lower() if isinstance(value, bool) else str(value))
        if f"`{shown}`" not in default:
            wrong.append(f"{field.name}: default {shown!r}, the table says {default}")
    assert wrong == []
