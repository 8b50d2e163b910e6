"""Every tunable default of plugbox (SPEC §10), typed, in one place.

Sources, later wins: the defaults below, a TOML config file (`PLUGBOX_CONFIG` or an explicit path),
then `PLUGBOX_<FIELD>` environment variables (e.g. `PLUGBOX_HOOK_BUDGET_MS=2000`). Values are
validated by msgspec; a bad value raises ConfigError naming the setting. Nothing else in plugbox
holds a literal default for these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from plugbox.errors import ConfigError

__all__ = ["Settings", "load_settings"]

PositiveMs = Annotated[int, msgspec.Meta(ge=1)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

ENV_PREFIX = "PLUGBOX_"
MAX_CONFIG_FILE_BYTES = 1 << 20


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Operator settings. Durations are milliseconds, sizes bytes."""

    data_dir: str = "./plugbox-data"
    plugins_dir: str = "./plugins"
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8787

    hook_budget_ms: PositiveMs = 5000
    lifecycle_budget_ms: PositiveMs = 30000
    health_budget_ms: PositiveMs = 5000
    liveness_window_ms: PositiveMs = 5000
    capability_timeout_ms: PositiveMs = 30000
    send_timeout_factor: PositiveInt = 4
    max_calls_in_flight: PositiveInt = 32
    worker_memory_bytes: PositiveInt = 256 << 20
    worker_open_files: PositiveInt = 256
    worker_file_size_bytes: PositiveInt = 64 << 20
    worker_scratch_bytes: Annotated[int, msgspec.Meta(ge=0)] = 32 << 20  # 0: no tmpfs size limit
    worker_cpu_limit_percent: Annotated[int, msgspec.Meta(ge=0)] = 90  # of one CPU, per window; 0: off
    worker_cpu_window_ms: PositiveMs = 10000
    frame_max_bytes: PositiveInt = 16 << 20
    log_lines_per_window: PositiveInt = 200
    log_window_ms: PositiveMs = 10000
    log_line_max_chars: PositiveInt = 8192
    storage_quota_bytes: PositiveInt = 50 << 20
    fetch_timeout_ms: PositiveMs = 15000
    fetch_timeout_max_ms: PositiveMs = 30000
    fetch_body_max_bytes: PositiveInt = 10 << 20
    fetch_max_in_flight: PositiveInt = 16
    fetch_exempt_hosts: tuple[str, ...] = ()
    breaker_threshold: PositiveInt = 5
    restart_backoff_initial_ms: PositiveMs = 200
    restart_backoff_max_ms: PositiveMs = 30000
    shutdown_cap_ms: PositiveMs = 10000

    confinement: str = "strict"  # "strict" (fail closed) or "degraded" (operator opt-in)
    use_netns: bool = False
    allow_unsigned_ingress: bool = False
    api_keys: tuple[str, ...] = ()
    admin_api_keys: tuple[str, ...] = ()
    ingress_body_max_bytes: PositiveInt = 1 << 20
    ingress_dedup_max_entries: PositiveInt = 10000
    install_zip_max_bytes: PositiveInt = 10 << 20
    install_unpacked_max_bytes: PositiveInt = 50 << 20
    install_max_files: PositiveInt = 1000

    def __post_init__(self) -> None:
        if self.confinement not in ("strict", "degraded"):
            raise ValueError("confinement must be 'strict' or 'degraded'")
        if self.fetch_timeout_ms > self.fetch_timeout_max_ms:
            raise ValueError("fetch_timeout_ms must not exceed fetch_timeout_max_ms")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def plugins_path(self) -> Path:
        return Path(self.plugins_dir)


_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        field = _FIELDS[name]
        if field.type is bool:
            word = raw.strip().lower()
            if word not in _TRUE | _FALSE:
                raise ConfigError(ENV_PREFIX + name.upper(), f"expected true or false, got {raw!r}")
            out[name] = word in _TRUE
        elif field.type == tuple[str, ...]:
            out[name] = tuple(x.strip() for x in raw.split(",") if x.strip())
        elif field.type is str:
            out[name] = raw
        else:
            try:
                out[name] = int(raw)
            except ValueError:
                raise ConfigError(ENV_PREFIX + name.upper(), f"expected an integer, got {raw!r}") from None
    return out


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from defaults, the config file, the environment and explicit overrides."""
    environ = os.environ if environ is None else environ
    doc: dict[str, Any] = {}
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(str(p), f"cannot read config file: {exc.strerror}") from None
        if len(raw) > MAX_CONFIG_FILE_BYTES:
            raise ConfigError(str(p), f"config file larger than {MAX_CONFIG_FILE_BYTES} bytes")
        try:
            doc.update(msgspec.toml.decode(raw))
        except msgspec.DecodeError as exc:
            raise ConfigError(str(p), f"invalid TOML: {exc}") from None
    doc.update(_from_env(environ))
    doc.update(overrides)
    try:
        return msgspec.convert(doc, Settings)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError("settings", str(exc)) from None
