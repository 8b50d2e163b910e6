"""SPEC §2: every manifest rule, each failure naming its field and rule."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from plugbox.errors import ManifestError
from plugbox.events import EVENTS, NOTIFICATION_EVENTS, VETO_EVENTS
from plugbox.manifest import (
    MANIFEST_MAX_BYTES,
    Manifest,
    discover,
    is_skipped_dir,
    load_manifest,
    parse_manifest,
)

HOST = "0.1.0"
DROP = object()  # a field value meaning "leave this key out"

SECRET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "webhookSecret": {"type": "string", "secret": True},
        "baseUrl": {"type": "string"},
        "retries": {"type": "number"},
    },
}


def base_doc(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "echo",
        "name": "Echo",
        "version": "1.0.0",
        "type": "extension",
        "main": "main.py",
    }
    doc.update(fields)
    return {key: value for key, value in doc.items() if value is not DROP}


def plugin_dir(tmp_path: Path, doc: Any = None, *, raw: bytes | None = None) -> Path:
    directory = tmp_path / "plugin"
    directory.mkdir(exist_ok=True)
    (directory / "main.py").write_text("from plugbox.sdk import Plugin\n")
    if raw is None:
        raw = json.dumps(base_doc() if doc is None else doc).encode()
    (directory / "manifest.json").write_bytes(raw)
    return directory


def load(tmp_path: Path, **fields: Any) -> Manifest:
    return load_manifest(plugin_dir(tmp_path, base_doc(**fields)), host_version=HOST)


def refused(tmp_path: Path, field: str, rule: str, **fields: Any) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, **fields)
    assert (info.value.field, info.value.rule) == (field, rule), str(info.value)
    return info.value


def ingress_doc(*routes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "permissions": ["webhook:ingress"],
        "configSchema": SECRET_SCHEMA,
        "ingress": list(routes),
    }
    defaults.update(fields)
    return defaults


def hmac_route(route: str = "incoming", **signature: Any) -> dict[str, Any]:
    return {"route": route, "signature": {"scheme": "hmac-sha256", "header": "X-Signature", **signature}}


# --- the document ---------------------------------------------------------------------------------


def test_minimal_manifest_loads_with_spec_defaults(tmp_path: Path) -> None:
    manifest = load(tmp_path)
    assert manifest.id == "echo"
    assert manifest.permissions == frozenset()
    assert manifest.sessions == ("*",)
    assert manifest.session_scoped is True
    assert manifest.sdk_version == "1"
    assert manifest.net.allow == ()
    assert manifest.config_schema is None
    assert manifest.ingress == ()
    assert manifest.hooks == ()


def test_full_manifest_loads(tmp_path: Path) -> None:
    manifest = load(
        tmp_path,
        description="echoes",
        sdkVersion="1",
        minHostVersion="0.1.0",
        permissions=["messages:send", "storage:use", "webhook:ingress"],
        sessions=["main", "backup"],
        sessionScoped=False,
        net={"allow": ["api.example.com", "hooks.example.org:8443"], "allowConfigHosts": ["baseUrl"]},
        configSchema=SECRET_SCHEMA,
        ingress=[hmac_route(timestampHeader="X-Timestamp", prefix="sha256=")],
        hooks=["message:received"],
    )
    assert manifest.permissions == {"messages:send", "storage:use", "webhook:ingress"}
    assert manifest.sessions == ("main", "backup")
    assert manifest.session_scoped is False
    assert manifest.net.allow == ("api.example.com", "hooks.example.org:8443")
    assert manifest.net.allow_config_hosts == ("baseUrl",)
    assert manifest.config_schema is not None
    assert manifest.ingress[0].signature.template == "{timestamp}.{body}"
    assert manifest.hooks == ("message:received",)


def test_manifest_must_be_a_json_object(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(plugin_dir(tmp_path, ["not", "an", "object"]), host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "object")


def test_parse_manifest_refuses_a_non_object() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest("echo", host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "object")


def test_bad_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(plugin_dir(tmp_path, raw=b'{"id": "echo",'), host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "json")


def test_invalid_utf8_is_refused_as_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(plugin_dir(tmp_path, raw=b'{"id": "\xff"}'), host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "json")


def test_deeply_nested_json_is_refused_as_bad_json(tmp_path: Path) -> None:
    raw = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ManifestError) as info:
        load_manifest(plugin_dir(tmp_path, raw=raw), host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "json")


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(base_doc()).encode()
    assert load_manifest(plugin_dir(tmp_path, raw=raw), host_version=HOST).id == "echo"


def test_manifest_over_size_cap_is_refused(tmp_path: Path) -> None:
    raw = json.dumps(base_doc(description="x" * MANIFEST_MAX_BYTES)).encode()
    with pytest.raises(ManifestError) as info:
        load_manifest(plugin_dir(tmp_path, raw=raw), host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "size")


def test_missing_manifest_file_is_refused(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path)
    (directory / "manifest.json").unlink()
    with pytest.raises(ManifestError) as info:
        load_manifest(directory, host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "missing")


def test_manifest_symlink_escaping_plugin_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(base_doc()))
    directory = plugin_dir(tmp_path)
    (directory / "manifest.json").unlink()
    (directory / "manifest.json").symlink_to(outside)
    with pytest.raises(ManifestError) as info:
        load_manifest(directory, host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "escape")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_manifest_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path)
    (directory / "manifest.json").unlink()
    os.mkfifo(directory / "manifest.json")
    with pytest.raises(ManifestError) as info:
        load_manifest(directory, host_version=HOST)
    assert (info.value.field, info.value.rule) == ("manifest.json", "not-file")


def test_unknown_top_level_fields_are_ignored(tmp_path: Path) -> None:
    assert load(tmp_path, futureField={"anything": [1, 2]}).id == "echo"


def test_known_optional_field_of_wrong_type_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "description", "type", description=42)


# --- required strings -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["id", "name", "version", "type", "main"])
def test_required_string_missing_is_refused(tmp_path: Path, key: str) -> None:
    refused(tmp_path, key, "required", **{key: DROP})


@pytest.mark.parametrize("key", ["id", "name", "version", "type", "main"])
def test_required_string_of_wrong_type_is_refused(tmp_path: Path, key: str) -> None:
    refused(tmp_path, key, "type", **{key: 7})


@pytest.mark.parametrize("key", ["id", "name", "version", "type", "main"])
def test_required_string_empty_is_refused(tmp_path: Path, key: str) -> None:
    refused(tmp_path, key, "empty", **{key: "  "})


# --- id -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plugin_id", ["Echo", "echo-bot", "echo_bot.v2", "0day"])
def test_id_matching_the_pattern_case_insensitively_is_accepted(tmp_path: Path, plugin_id: str) -> None:
    assert load(tmp_path, id=plugin_id).id == plugin_id


@pytest.mark.parametrize("plugin_id", ["-echo", ".echo", "echo/bot", "echo bot", "ech\u212a"])
def test_id_not_matching_the_pattern_is_refused(tmp_path: Path, plugin_id: str) -> None:
    # "\u212a" is the Kelvin sign, which Unicode case folding would match against [a-z].
    refused(tmp_path, "id", "pattern", id=plugin_id)


def test_id_with_dotdot_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "id", "dotdot", id="echo..bot")


def test_id_longer_than_64_chars_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "id", "length", id="a" * 65)


def test_id_reserved_by_a_builtin_is_refused_case_insensitively(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(
            plugin_dir(tmp_path, base_doc(id="Auto-Reply")), host_version=HOST, reserved_ids=["auto-reply"]
        )
    assert (info.value.field, info.value.rule) == ("id", "reserved")


# --- type -----------------------------------------------------------------------------------------


def test_type_engine_on_disk_plugin_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "type", "builtin-only", type="engine")


def test_type_engine_for_builtin_is_accepted() -> None:
    manifest = parse_manifest(base_doc(id="loopback", type="engine"), host_version=HOST, builtin=True)
    assert manifest.type == "engine"


def test_unknown_type_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "type", "unknown", type="theme")


# --- main -----------------------------------------------------------------------------------------


def test_main_absolute_path_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "main", "absolute", main="/etc/passwd.py")


def test_main_windows_drive_path_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "main", "absolute", main="C:main.py")


def test_main_with_backslash_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "main", "path", main="..\\..\\x.py")


def test_main_dotdot_escaping_plugin_dir_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "main", "escape", main="sub/../../main.py")


def test_main_is_normalised(tmp_path: Path) -> None:
    assert load(tmp_path, main="./sub/../main.py").main == "main.py"


def test_main_symlink_escaping_plugin_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "evil.py"
    outside.write_text("")
    directory = plugin_dir(tmp_path, base_doc(main="link.py"))
    (directory / "link.py").symlink_to(outside)
    with pytest.raises(ManifestError) as info:
        load_manifest(directory, host_version=HOST)
    assert (info.value.field, info.value.rule) == ("main", "escape")


def test_main_symlink_inside_plugin_dir_is_accepted(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, base_doc(main="link.py"))
    (directory / "link.py").symlink_to(directory / "main.py")
    assert load_manifest(directory, host_version=HOST).main == "link.py"


def test_main_missing_file_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "main", "missing", main="absent.py")


def test_main_directory_is_refused(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, base_doc(main="pkg.py"))
    (directory / "pkg.py").mkdir()
    with pytest.raises(ManifestError) as info:
        load_manifest(directory, host_version=HOST)
    assert (info.value.field, info.value.rule) == ("main", "not-file")


def test_main_without_py_suffix_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "main", "suffix", main="manifest.json")


def test_main_without_plugin_dir_skips_filesystem_checks() -> None:
    assert parse_manifest(base_doc(main="builtin"), host_version=HOST).main == "builtin"


def test_main_without_plugin_dir_still_refuses_escape() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(base_doc(main="../x.py"), host_version=HOST)
    assert (info.value.field, info.value.rule) == ("main", "escape")


# --- versions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "1.0.0-beta", "v1.0.0", "\u0661.0.0", "1234567890.0.0"])
def test_min_host_version_not_major_minor_patch_is_refused(tmp_path: Path, version: str) -> None:
    refused(tmp_path, "minHostVersion", "version", minHostVersion=version)


def test_min_host_version_newer_than_host_is_refused_naming_both(tmp_path: Path) -> None:
    error = refused(tmp_path, "minHostVersion", "too-new", minHostVersion="0.10.0")
    assert "0.10.0" in str(error)
    assert HOST in str(error)


def test_min_host_version_equal_to_host_is_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, minHostVersion=HOST).min_host_version == HOST


def test_min_host_version_compares_host_release_part() -> None:
    doc = base_doc(minHostVersion="0.2.0")
    assert parse_manifest(doc, host_version="0.2.0.dev1").min_host_version == "0.2.0"


def test_unsupported_sdk_version_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "sdkVersion", "unsupported", sdkVersion="2")


# --- permissions and sessions ---------------------------------------------------------------------


def test_permissions_absent_means_none(tmp_path: Path) -> None:
    assert load(tmp_path, permissions=DROP).permissions == frozenset()


def test_permissions_not_a_list_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "permissions", "type", permissions="messages:send")


def test_permission_not_a_string_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "permissions[1]", "type", permissions=["storage:use", 3])


def test_unknown_permission_is_refused_naming_it(tmp_path: Path) -> None:
    error = refused(tmp_path, "permissions[1]", "unknown", permissions=["storage:use", "root:everything"])
    assert "root:everything" in str(error)


def test_duplicate_permissions_are_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, permissions=["storage:use", "storage:use"]).permissions == {"storage:use"}


def test_sessions_not_a_list_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "sessions", "type", sessions="*")


def test_sessions_empty_string_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "sessions[0]", "empty", sessions=[""])


def test_session_scoped_not_a_bool_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "sessionScoped", "type", sessionScoped="yes")


# --- net ------------------------------------------------------------------------------------------


def test_net_allow_entries_are_canonicalised(tmp_path: Path) -> None:
    entries = [
        "*",
        "API.Example.com",
        "hooks.example.org:08443",
        "10.0.0.1",
        "[2001:DB8::1]:443",
        "2001:db8::2",
        "my_svc.internal",
        "Example.com.",
        "0x7f.1:8080",
    ]
    manifest = load(tmp_path, net={"allow": entries})
    assert manifest.net.allow == (
        "*",
        "api.example.com",
        "hooks.example.org:8443",
        "10.0.0.1",
        "[2001:db8::1]:443",
        "[2001:db8::2]",
        "my_svc.internal",
        "example.com",
        "127.0.0.1:8080",
    )


@pytest.mark.parametrize(
    "entry",
    [
        "https://api.example.com",
        "api.example.com/path",
        "api.example.com:0",
        "api.example.com:65536",
        "api.example.com:",
        "*.example.com",
        "-bad.example.com",
        "example..com",
        "1.2.3.4.5",
        "0400.0.0.1",
        "a.b.123",
        " api.example.com",
        "[::1",
        "[not-v6]:80",
        "fe80::1%eth0",
        "user@example.com",
        "bücher.example",
    ],
)
def test_net_allow_entry_that_is_not_a_host_is_refused(tmp_path: Path, entry: str) -> None:
    refused(tmp_path, "net.allow[0]", "host", net={"allow": [entry]})


def test_net_not_an_object_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "net", "type", net=["api.example.com"])


def test_allow_config_hosts_naming_a_missing_field_is_refused(tmp_path: Path) -> None:
    refused(
        tmp_path,
        "net.allowConfigHosts[0]",
        "config-field",
        configSchema=SECRET_SCHEMA,
        net={"allowConfigHosts": ["nope"]},
    )


def test_allow_config_hosts_naming_a_non_string_field_is_refused(tmp_path: Path) -> None:
    refused(
        tmp_path,
        "net.allowConfigHosts[0]",
        "config-field",
        configSchema=SECRET_SCHEMA,
        net={"allowConfigHosts": ["retries"]},
    )


def test_allow_config_hosts_without_config_schema_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "net.allowConfigHosts[0]", "config-field", net={"allowConfigHosts": ["baseUrl"]})


def test_invalid_config_schema_is_refused_naming_the_schema_path(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"timeoutMs": {"type": "number", "min": "500"}}}
    refused(tmp_path, "configSchema.properties.timeoutMs.min", "type", configSchema=schema)


# --- ingress --------------------------------------------------------------------------------------


def test_ingress_without_webhook_ingress_permission_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "ingress", "permission", **ingress_doc(hmac_route(), permissions=["messages:send"]))


def test_ingress_route_empty_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "ingress[0].route", "empty", **ingress_doc(hmac_route("")))


@pytest.mark.parametrize("route", ["in/coming", "in coming", "..", ".", "x" * 129])
def test_ingress_route_not_matching_pattern_is_refused(tmp_path: Path, route: str) -> None:
    refused(tmp_path, "ingress[0].route", "pattern", **ingress_doc(hmac_route(route)))


def test_ingress_duplicate_route_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "ingress[1].route", "duplicate", **ingress_doc(hmac_route("a"), hmac_route("a")))


def test_ingress_route_without_signature_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "ingress[0].signature", "required", **ingress_doc({"route": "a"}))


def test_ingress_unknown_scheme_is_refused(tmp_path: Path) -> None:
    route = {"route": "a", "signature": {"scheme": "md5"}}
    refused(tmp_path, "ingress[0].signature.scheme", "scheme", **ingress_doc(route))


def test_ingress_unsigned_is_refused_unless_operator_allows(tmp_path: Path) -> None:
    route = {"route": "a", "signature": {"scheme": "none"}}
    refused(tmp_path, "ingress[0].signature.scheme", "unsigned", **ingress_doc(route))


def test_ingress_unsigned_is_accepted_when_operator_allows(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, base_doc(**ingress_doc({"route": "a", "signature": {"scheme": "none"}})))
    manifest = load_manifest(directory, host_version=HOST, allow_unsigned_ingress=True)
    assert manifest.ingress[0].signature.scheme == "none"
    assert manifest.ingress[0].signature.secret_field is None


@pytest.mark.parametrize("tolerance", [0, -5])
def test_ingress_tolerance_not_positive_is_refused(tmp_path: Path, tolerance: int) -> None:
    refused(
        tmp_path,
        "ingress[0].signature.toleranceSec",
        "range",
        **ingress_doc(hmac_route(toleranceSec=tolerance)),
    )


@pytest.mark.parametrize("tolerance", ["300", 1.5, True])
def test_ingress_tolerance_not_an_integer_is_refused(tmp_path: Path, tolerance: Any) -> None:
    refused(
        tmp_path,
        "ingress[0].signature.toleranceSec",
        "type",
        **ingress_doc(hmac_route(toleranceSec=tolerance)),
    )


def test_ingress_hmac_without_header_is_refused(tmp_path: Path) -> None:
    route = {"route": "a", "signature": {"scheme": "hmac-sha256"}}
    refused(tmp_path, "ingress[0].signature.header", "required", **ingress_doc(route))


def test_ingress_header_that_is_not_a_header_name_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "ingress[0].signature.header", "header", **ingress_doc(hmac_route(header="X Sig\r\n")))


def test_ingress_unknown_encoding_is_refused(tmp_path: Path) -> None:
    refused(
        tmp_path, "ingress[0].signature.encoding", "encoding", **ingress_doc(hmac_route(encoding="base32"))
    )


def test_ingress_template_without_body_is_refused(tmp_path: Path) -> None:
    route = hmac_route(template="{timestamp}", timestampHeader="X-Ts")
    refused(tmp_path, "ingress[0].signature.template", "template", **ingress_doc(route))


def test_ingress_template_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    refused(
        tmp_path,
        "ingress[0].signature.template",
        "template",
        **ingress_doc(hmac_route(template="{path}.{body}")),
    )


def test_ingress_template_timestamp_without_timestamp_header_is_refused(tmp_path: Path) -> None:
    route = hmac_route(template="{timestamp}.{body}")
    refused(tmp_path, "ingress[0].signature.template", "template", **ingress_doc(route))


def test_ingress_secret_field_missing_from_config_schema_is_refused(tmp_path: Path) -> None:
    route = hmac_route(secretField="signingKey")
    refused(tmp_path, "ingress[0].signature.secretField", "secret-field", **ingress_doc(route))


def test_ingress_secret_field_not_marked_secret_is_refused(tmp_path: Path) -> None:
    route = hmac_route(secretField="baseUrl")
    refused(tmp_path, "ingress[0].signature.secretField", "secret-field", **ingress_doc(route))


def test_ingress_hmac_defaults(tmp_path: Path) -> None:
    signature = load(tmp_path, **ingress_doc(hmac_route())).ingress[0].signature
    assert signature.secret_field == "webhookSecret"
    assert signature.encoding == "hex"
    assert signature.template == "{body}"
    assert signature.tolerance_sec == 300


def test_ingress_standard_webhooks_fills_the_standard_headers(tmp_path: Path) -> None:
    route = {"route": "sw", "signature": {"scheme": "standard-webhooks"}}
    signature = load(tmp_path, **ingress_doc(route)).ingress[0].signature
    assert (signature.header, signature.timestamp_header, signature.dedup_header) == (
        "webhook-signature",
        "webhook-timestamp",
        "webhook-id",
    )
    assert (signature.encoding, signature.template) == ("base64", "{id}.{timestamp}.{body}")


def test_ingress_standard_webhooks_with_other_encoding_is_refused(tmp_path: Path) -> None:
    route = {"route": "sw", "signature": {"scheme": "standard-webhooks", "encoding": "hex"}}
    refused(tmp_path, "ingress[0].signature.encoding", "not-applicable", **ingress_doc(route))


def test_ingress_shared_secret_needs_only_a_header(tmp_path: Path) -> None:
    route = {
        "route": "a",
        "signature": {"scheme": "shared-secret", "header": "X-Token", "prefix": "Bearer "},
    }
    signature = load(tmp_path, **ingress_doc(route)).ingress[0].signature
    assert (signature.header, signature.prefix) == ("X-Token", "Bearer ")


@pytest.mark.parametrize("key", ["header", "timestampHeader", "dedupHeader"])
@pytest.mark.parametrize("name", ["Content-Type", "content-length", "Host", "Cookie", "Authorization",
                                  "X-API-Key", "Origin", "Referer", "Sec-Fetch-Site", "If-Match"])
def test_ingress_signature_headers_must_be_dedicated(tmp_path: Path, key: str, name: str) -> None:
    # A `Content-Type` "signature" with a prefix is what a plain cross-site form POST sends.
    signature = {"header": "X-Signature", "timestampHeader": "X-Ts", "dedupHeader": "X-Id", key: name}
    route = {"route": "a", "signature": {"scheme": "shared-secret", **signature}}
    refused(tmp_path, f"ingress[0].signature.{key}", "dedicated", **ingress_doc(route))


def test_hmac_default_template_covers_the_delivery_id_and_timestamp(tmp_path: Path) -> None:
    route = hmac_route(timestampHeader="X-Ts", dedupHeader="X-Id")
    assert load(tmp_path, **ingress_doc(route)).ingress[0].signature.template == "{id}.{timestamp}.{body}"


@pytest.mark.parametrize("template", ["{timestamp}.{body}", "{id}.{body}", "{body}"])
def test_hmac_template_that_leaves_a_declared_header_uncovered_is_refused(tmp_path: Path, template: str) -> None:
    route = hmac_route(timestampHeader="X-Ts", dedupHeader="X-Id", template=template)
    error = refused(tmp_path, "ingress[0].signature.template", "template", **ingress_doc(route))
    assert "replayed" in str(error)


def test_dedup_without_a_timestamp_header_is_refused(tmp_path: Path) -> None:
    # Ids are remembered for toleranceSec only: without a signed timestamp an old delivery replays later.
    route = hmac_route(dedupHeader="X-Id", template="{id}.{body}")
    refused(tmp_path, "ingress[0].signature.timestampHeader", "required", **ingress_doc(route))


# --- hooks ----------------------------------------------------------------------------------------


def test_unknown_hook_event_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "hooks[1]", "event", hooks=["message:received", "message:exploded"])


def test_hooks_not_a_list_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "hooks", "type", hooks="message:received")


def test_event_list_is_the_spec_list() -> None:
    assert len(EVENTS) == 20
    assert {"session:qr", "message:persisted", "webhook:queued", "ingress:error"} <= EVENTS
    assert VETO_EVENTS | NOTIFICATION_EVENTS == EVENTS
    assert not VETO_EVENTS & NOTIFICATION_EVENTS


# --- the typed result -----------------------------------------------------------------------------


def test_to_json_round_trips_through_parse(tmp_path: Path) -> None:
    manifest = load(
        tmp_path,
        permissions=["webhook:ingress", "net:fetch"],
        net={"allow": ["api.example.com:443"], "allowConfigHosts": ["baseUrl"]},
        configSchema=SECRET_SCHEMA,
        ingress=[hmac_route(), {"route": "sw", "signature": {"scheme": "standard-webhooks"}}],
        hooks=["message:received"],
    )
    again = parse_manifest(manifest.to_json(), host_version=HOST, plugin_dir=tmp_path / "plugin")
    assert again == manifest
    assert hash(again) == hash(manifest)
    assert manifest.to_json()["sessionScoped"] is True


# --- discovery ------------------------------------------------------------------------------------


def test_dot_directories_are_skipped() -> None:
    assert is_skipped_dir(".git")
    assert is_skipped_dir(".staging-echo")
    assert not is_skipped_dir("echo")


def test_discover_lists_plugin_dirs_sorted_skipping_dot_dirs_and_files(tmp_path: Path) -> None:
    for name in ("zeta", "alpha", ".hidden", "mid"):
        (tmp_path / name).mkdir()
    (tmp_path / "README.md").write_text("not a plugin")
    assert discover(tmp_path) == [tmp_path / "alpha", tmp_path / "mid", tmp_path / "zeta"]


def test_discover_of_missing_dir_is_empty(tmp_path: Path) -> None:
    assert discover(tmp_path / "absent") == []
