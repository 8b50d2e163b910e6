"""SPEC §2 configSchema: checking the schema, validating config, and secret handling."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from plugbox.config_schema import (
    CONFIG_MAX_BYTES,
    MASK,
    SCHEMA_MAX_DEPTH,
    SCHEMA_MAX_PROPERTIES,
    ConfigSchema,
)
from plugbox.errors import ConfigError, ManifestError

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "greeting": {"type": "string", "default": "hi", "title": "Greeting", "description": "first words"},
        "apiToken": {"type": "string", "secret": True},
        "timeoutMs": {"type": "number", "default": 3000, "min": 500, "max": 60000},
        "mode": {"type": "string", "enum": ["fast", "safe"]},
        "enabled": {"type": "boolean"},
        "notes": {"type": "textarea", "max": 10},
        "code": {"type": "string", "pattern": "[A-Z]{3}"},
        "tags": {"type": "array", "items": {"type": "string", "min": 1}, "max": 3},
        "auth": {
            "type": "object",
            "properties": {
                "user": {"type": "string"},
                "password": {"type": "string", "secret": True},
                "port": {"type": "number", "default": 443},
            },
        },
        "extra": {"type": "object"},
    },
}


@pytest.fixture
def schema() -> ConfigSchema:
    return ConfigSchema.parse(SCHEMA)


def props(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def schema_refused(doc: Any, field: str, rule: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        ConfigSchema.parse(doc)
    assert (info.value.field, info.value.rule) == (field, rule), str(info.value)
    return info.value


def config_refused(schema: ConfigSchema, config: Any, field: str, rule: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        schema.validate(config)
    assert info.value.field == field, str(info.value)
    assert str(info.value).endswith(f"[{rule}]"), str(info.value)
    return info.value


# --- checking the schema --------------------------------------------------------------------------


def test_schema_must_be_an_object() -> None:
    schema_refused(["string"], "configSchema", "type")


def test_schema_root_must_be_of_type_object() -> None:
    schema_refused({"type": "string"}, "configSchema.type", "type")


def test_schema_root_type_may_be_omitted() -> None:
    assert ConfigSchema.parse({"properties": {"a": {"type": "string"}}}).validate({"a": "x"}) == {"a": "x"}


def test_schema_field_prefix_is_used_in_errors() -> None:
    with pytest.raises(ManifestError) as info:
        ConfigSchema.parse(props(a={"type": "nope"}), field="plugins.echo.configSchema")
    assert info.value.field == "plugins.echo.configSchema.properties.a.type"


def test_schema_unknown_option_is_refused() -> None:
    # A typo must not silently leave a secret unmasked.
    schema_refused(
        props(token={"type": "string", "secert": True}), "configSchema.properties.token.secert", "unknown-key"
    )


def test_schema_node_without_type_is_refused() -> None:
    schema_refused(props(a={"title": "A"}), "configSchema.properties.a.type", "required")


@pytest.mark.parametrize("kind", ["integer", "str", ["string"], None, 3])
def test_schema_unknown_type_is_refused(kind: Any) -> None:
    field, rule = ("configSchema.properties.a.type", "required" if kind is None else "type")
    schema_refused(props(a={"type": kind}), field, rule)


@pytest.mark.parametrize(
    ("node", "option"),
    [
        ({"type": "number", "pattern": "x"}, "pattern"),
        ({"type": "string", "items": {"type": "string"}}, "items"),
        ({"type": "array", "properties": {}}, "properties"),
        ({"type": "object", "enum": [{}]}, "enum"),
        ({"type": "boolean", "min": 1}, "min"),
        ({"type": "number", "secret": True}, "secret"),
    ],
)
def test_schema_option_not_applicable_to_the_type_is_refused(node: dict[str, Any], option: str) -> None:
    schema_refused(props(a=node), f"configSchema.properties.a.{option}", "not-applicable")


def test_schema_secret_inside_array_items_is_refused() -> None:
    node = {"type": "array", "items": {"type": "string", "secret": True}}
    schema_refused(props(a=node), "configSchema.properties.a.items.secret", "not-applicable")


@pytest.mark.parametrize("option", [("default", "let-me-in"), ("enum", ["let-me-in"])])
def test_schema_secret_with_a_value_in_the_manifest_is_refused(option: tuple[str, Any]) -> None:
    # A default secret would "configure" an ingress route for anyone who reads the manifest.
    node = {"type": "string", "secret": True, option[0]: option[1]}
    schema_refused(props(webhookSecret=node), f"configSchema.properties.webhookSecret.{option[0]}", "secret")


def test_schema_secret_nested_below_array_items_is_refused() -> None:
    node = {"type": "array", "items": props(token={"type": "string", "secret": True})}
    schema_refused(props(a=node), "configSchema.properties.a.items.properties.token.secret", "not-applicable")


@pytest.mark.parametrize("option", [("required", True), ("default", "x")])
def test_schema_required_or_default_on_the_items_node_is_refused(option: tuple[str, Any]) -> None:
    node = {"type": "array", "items": {"type": "string", option[0]: option[1]}}
    schema_refused(props(a=node), f"configSchema.properties.a.items.{option[0]}", "not-applicable")


def test_schema_title_not_a_string_is_refused() -> None:
    schema_refused(props(a={"type": "string", "title": 5}), "configSchema.properties.a.title", "type")


@pytest.mark.parametrize("option", ["required", "secret"])
def test_schema_flag_not_a_bool_is_refused(option: str) -> None:
    schema_refused(props(a={"type": "string", option: "yes"}), f"configSchema.properties.a.{option}", "type")


def test_schema_number_min_not_a_number_is_refused() -> None:
    schema_refused(
        props(timeoutMs={"type": "number", "min": "500"}), "configSchema.properties.timeoutMs.min", "type"
    )


@pytest.mark.parametrize("bound", [-1, 1.5, True])
def test_schema_length_bound_not_a_natural_number_is_refused(bound: Any) -> None:
    schema_refused(props(a={"type": "string", "max": bound}), "configSchema.properties.a.max", "type")


def test_schema_min_above_max_is_refused() -> None:
    schema_refused(props(a={"type": "number", "min": 10, "max": 1}), "configSchema.properties.a.max", "range")


def test_schema_pattern_longer_than_cap_is_refused() -> None:
    schema_refused(
        props(a={"type": "string", "pattern": "a" * 513}), "configSchema.properties.a.pattern", "pattern"
    )


def test_schema_pattern_that_does_not_compile_is_refused() -> None:
    schema_refused(
        props(a={"type": "string", "pattern": "([a-z]"}), "configSchema.properties.a.pattern", "pattern"
    )


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?=a)a", "(?<!b)a"])
def test_schema_pattern_with_backreference_or_lookaround_is_refused_naming_re2(pattern: str) -> None:
    with pytest.raises(ManifestError, match="RE2 syntax") as err:
        ConfigSchema.parse(props(a={"type": "string", "pattern": pattern}))
    assert err.value.field == "configSchema.properties.a.pattern" and err.value.rule == "pattern"


@pytest.mark.timeout(20)  # a backtracking matcher would not finish these in any lifetime
@pytest.mark.parametrize(
    ("pattern", "hostile"),
    [("(a+)+$", "a" * 5000 + "!"), ("(a|aa)*c", "a" * 5000), ("a*a*a*a*a*a*b", "a" * 5000),
     ("(\\w+\\s?)*$", "word " * 1000 + "!")],
)
def test_patterns_that_make_backtracking_explode_validate_in_linear_time(pattern: str, hostile: str) -> None:
    schema = ConfigSchema.parse(props(a={"type": "string", "pattern": pattern}))
    config_refused(schema, {"a": hostile}, "a", "pattern")


@pytest.mark.parametrize(
    "pattern", ["[A-Z]{3}", "https://[a-z0-9.-]+(:[0-9]{1,5})?", "(\\d{3})+", "[\\w.+-]+@[\\w.-]+"]
)
def test_schema_ordinary_pattern_is_accepted(pattern: str) -> None:
    ConfigSchema.parse(props(a={"type": "string", "pattern": pattern}))


def test_schema_enum_empty_is_refused() -> None:
    schema_refused(props(a={"type": "string", "enum": []}), "configSchema.properties.a.enum", "enum")


def test_schema_enum_value_of_wrong_type_is_refused() -> None:
    schema_refused(
        props(a={"type": "number", "enum": [1, True]}), "configSchema.properties.a.enum[1]", "enum"
    )


def test_schema_default_that_does_not_fit_is_refused() -> None:
    schema_refused(
        props(a={"type": "number", "min": 5, "default": 1}), "configSchema.properties.a.default", "default"
    )


def test_schema_default_must_match_pattern() -> None:
    node = {"type": "string", "pattern": "[a-z]+", "default": "ABC"}
    schema_refused(props(a=node), "configSchema.properties.a.default", "default")


def test_schema_deeper_than_cap_is_refused() -> None:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(SCHEMA_MAX_DEPTH):
        node = props(a=node)
    with pytest.raises(ManifestError) as info:
        ConfigSchema.parse(node)
    assert info.value.rule == "depth"


def test_schema_at_depth_cap_is_accepted() -> None:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(SCHEMA_MAX_DEPTH - 1):
        node = props(a=node)
    ConfigSchema.parse(node)


def test_schema_with_too_many_properties_is_refused() -> None:
    many = {f"p{i}": {"type": "string"} for i in range(SCHEMA_MAX_PROPERTIES + 1)}
    schema_refused(props(**many), f"configSchema.properties.p{SCHEMA_MAX_PROPERTIES}", "size")


@pytest.mark.parametrize("name", ["a.b", "", "-x", "a b", "x" * 129])
def test_schema_property_name_not_allowed_is_refused(name: str) -> None:
    schema_refused(props(**{name: {"type": "string"}}), f"configSchema.properties.{name}", "name")


def test_schema_required_list_naming_unknown_property_is_refused() -> None:
    doc = {"type": "object", "required": ["b"], "properties": {"a": {"type": "string"}}}
    schema_refused(doc, "configSchema.required", "required")


def test_schema_to_json_is_the_document_as_given(schema: ConfigSchema) -> None:
    exported = schema.to_json()
    assert exported == SCHEMA
    exported["properties"].clear()
    assert schema.to_json() == SCHEMA


def test_schemas_from_equal_documents_are_equal() -> None:
    a, b = ConfigSchema.parse(copy.deepcopy(SCHEMA)), ConfigSchema.parse(copy.deepcopy(SCHEMA))
    assert a == b
    assert hash(a) == hash(b)
    assert a != ConfigSchema.parse(props())


def test_field_type_follows_dotted_paths(schema: ConfigSchema) -> None:
    assert schema.field_type("greeting") == "string"
    assert schema.field_type("auth.port") == "number"
    assert schema.field_type("auth.missing") is None
    assert schema.field_type("greeting.x") is None


# --- validating config ----------------------------------------------------------------------------


def test_validate_applies_defaults(schema: ConfigSchema) -> None:
    assert schema.validate({}) == {"greeting": "hi", "timeoutMs": 3000, "auth": {"port": 443}}


def test_validate_does_not_mutate_its_input(schema: ConfigSchema) -> None:
    config = {"auth": {"user": "u"}, "tags": ["a"]}
    before = copy.deepcopy(config)
    result = schema.validate(config)
    result["auth"]["user"] = "changed"
    result["tags"].append("b")
    assert config == before


def test_validate_treats_null_as_absent(schema: ConfigSchema) -> None:
    assert schema.validate({"greeting": None, "apiToken": None})["greeting"] == "hi"
    assert "apiToken" not in schema.validate({"apiToken": None})


def test_validate_refuses_non_object_config(schema: ConfigSchema) -> None:
    config_refused(schema, ["a"], "(root)", "type")


def test_validate_refuses_unknown_top_level_key(schema: ConfigSchema) -> None:
    config_refused(schema, {"greting": "typo"}, "greting", "unknown")


def test_validate_refuses_unknown_nested_key(schema: ConfigSchema) -> None:
    config_refused(schema, {"auth": {"token": "x"}}, "auth.token", "unknown")


def test_validate_refuses_missing_required_field() -> None:
    schema = ConfigSchema.parse(props(apiUrl={"type": "string", "required": True}))
    config_refused(schema, {}, "apiUrl", "required")


def test_validate_refuses_empty_required_string() -> None:
    schema = ConfigSchema.parse(props(apiUrl={"type": "string", "required": True}))
    config_refused(schema, {"apiUrl": ""}, "apiUrl", "required")


def test_validate_required_field_with_default_is_satisfied() -> None:
    schema = ConfigSchema.parse(props(apiUrl={"type": "string", "required": True, "default": "https://x"}))
    assert schema.validate({}) == {"apiUrl": "https://x"}


def test_validate_json_schema_style_required_list() -> None:
    schema = ConfigSchema.parse(
        {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}
    )
    config_refused(schema, {}, "a", "required")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"greeting": 5}, "greeting"),
        ({"timeoutMs": "3000"}, "timeoutMs"),
        ({"timeoutMs": True}, "timeoutMs"),
        ({"timeoutMs": float("inf")}, "timeoutMs"),
        ({"enabled": 1}, "enabled"),
        ({"notes": ["x"]}, "notes"),
        ({"tags": "a,b"}, "tags"),
        ({"tags": ["a", 2]}, "tags[1]"),
        ({"tags": [None]}, "tags[0]"),
        ({"auth": "user:pw"}, "auth"),
    ],
)
def test_validate_refuses_wrong_type(schema: ConfigSchema, config: dict[str, Any], field: str) -> None:
    config_refused(schema, config, field, "type")


def test_validate_number_accepts_int_and_float(schema: ConfigSchema) -> None:
    assert schema.validate({"timeoutMs": 1500.5})["timeoutMs"] == 1500.5
    assert schema.validate({"timeoutMs": 1500})["timeoutMs"] == 1500


def test_validate_textarea_is_a_string(schema: ConfigSchema) -> None:
    assert schema.validate({"notes": "two\nlines"})["notes"] == "two\nlines"


def test_validate_refuses_value_outside_enum(schema: ConfigSchema) -> None:
    config_refused(schema, {"mode": "reckless"}, "mode", "enum")


def test_validate_refuses_number_below_min(schema: ConfigSchema) -> None:
    config_refused(schema, {"timeoutMs": 499}, "timeoutMs", "min")


def test_validate_refuses_number_above_max(schema: ConfigSchema) -> None:
    config_refused(schema, {"timeoutMs": 60001}, "timeoutMs", "max")


def test_validate_min_max_bound_string_length(schema: ConfigSchema) -> None:
    config_refused(schema, {"notes": "x" * 11}, "notes", "max")
    config_refused(schema, {"tags": [""]}, "tags[0]", "min")


def test_validate_min_max_bound_array_length(schema: ConfigSchema) -> None:
    config_refused(schema, {"tags": ["a", "b", "c", "d"]}, "tags", "max")


def test_validate_pattern_must_match_the_whole_string(schema: ConfigSchema) -> None:
    assert schema.validate({"code": "ABC"})["code"] == "ABC"
    config_refused(schema, {"code": "ABCD"}, "code", "pattern")


def test_validate_free_form_object_accepts_plain_data(schema: ConfigSchema) -> None:
    extra = {"a": [1, 2.5, None, True, {"b": "c"}]}
    assert schema.validate({"extra": extra})["extra"] == extra


def test_validate_free_form_object_refuses_non_plain_data(schema: ConfigSchema) -> None:
    config_refused(schema, {"extra": {"a": {1, 2}}}, "extra.a", "type")


def test_validate_free_form_object_refuses_deep_nesting(schema: ConfigSchema) -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ConfigError, match=r"\[depth\]"):
        schema.validate({"extra": {"deep": deep}})


def test_validate_refuses_config_over_size_cap(schema: ConfigSchema) -> None:
    config_refused(schema, {"extra": {"blob": "x" * CONFIG_MAX_BYTES}}, "(root)", "size")


def test_validate_fills_optional_group_defaults_only_when_valid() -> None:
    schema = ConfigSchema.parse(
        props(
            retry=props(count={"type": "number", "default": 3}),
            login=props(user={"type": "string", "required": True}, port={"type": "number", "default": 1}),
        )
    )
    assert schema.validate({}) == {"retry": {"count": 3}}
    config_refused(schema, {"login": {}}, "login.user", "required")


def test_validate_object_default_gets_nested_defaults() -> None:
    schema = ConfigSchema.parse(props(box={**props(a={"type": "number", "default": 1}), "default": {}}))
    assert schema.validate({}) == {"box": {"a": 1}}


def test_validate_items_of_objects_report_indexed_paths() -> None:
    schema = ConfigSchema.parse(
        props(servers={"type": "array", "items": props(host={"type": "string", "required": True})})
    )
    config_refused(schema, {"servers": [{"host": "a"}, {}]}, "servers[1].host", "required")


# --- secrets --------------------------------------------------------------------------------------


def test_secret_paths_are_dotted(schema: ConfigSchema) -> None:
    assert schema.secret_paths() == ["apiToken", "auth.password"]


def test_mask_replaces_set_secrets_only(schema: ConfigSchema) -> None:
    config = schema.validate({"apiToken": "tok", "auth": {"user": "u", "password": ""}})
    masked = schema.mask(config)
    assert masked["apiToken"] == MASK
    assert masked["auth"]["password"] == ""
    assert masked["auth"]["user"] == "u"
    assert config["apiToken"] == "tok"


def test_mask_leaves_unset_secrets_absent(schema: ConfigSchema) -> None:
    assert "apiToken" not in schema.mask(schema.validate({}))


def test_merge_update_keeps_secret_sent_back_masked(schema: ConfigSchema) -> None:
    old = schema.validate({"apiToken": "tok", "auth": {"password": "pw"}})
    new = schema.mask(old) | {"greeting": "hello"}
    merged = schema.merge_update(old, new)
    assert merged["apiToken"] == "tok"
    assert merged["auth"]["password"] == "pw"
    assert merged["greeting"] == "hello"


def test_merge_update_keeps_secret_left_absent(schema: ConfigSchema) -> None:
    old = schema.validate({"apiToken": "tok"})
    assert schema.merge_update(old, {"greeting": "yo"})["apiToken"] == "tok"


def test_merge_update_replaces_secret_given_a_new_value(schema: ConfigSchema) -> None:
    old = schema.validate({"apiToken": "tok"})
    assert schema.merge_update(old, {"apiToken": "new"})["apiToken"] == "new"


def test_merge_update_null_clears_a_secret(schema: ConfigSchema) -> None:
    old = schema.validate({"apiToken": "tok"})
    assert "apiToken" not in schema.merge_update(old, {"apiToken": None})


def test_merge_update_mask_for_unset_secret_is_not_stored(schema: ConfigSchema) -> None:
    assert "apiToken" not in schema.merge_update({}, {"apiToken": MASK})


def test_merge_update_dropped_group_drops_its_secret(schema: ConfigSchema) -> None:
    old = schema.validate({"auth": {"user": "u", "password": "pw"}})
    assert schema.merge_update(old, {})["auth"] == {"port": 443}


def test_merge_update_validates_the_result(schema: ConfigSchema) -> None:
    with pytest.raises(ConfigError):
        schema.merge_update({}, {"timeoutMs": 1})


def test_secret_values_lists_set_secret_strings(schema: ConfigSchema) -> None:
    config = schema.validate({"apiToken": "tok", "auth": {"password": "pw"}})
    assert schema.secret_values(config) == ["tok", "pw"]
    assert schema.secret_values(schema.validate({})) == []


def test_every_wrong_field_is_reported_at_once() -> None:
    schema = ConfigSchema.parse({"type": "object", "properties": {
        "name": {"type": "string", "required": True},
        "count": {"type": "number", "min": 1},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "inner": {"type": "object", "properties": {"flag": {"type": "boolean"}, "n": {"type": "number"}}},
        "fine": {"type": "string"},
    }})
    with pytest.raises(ConfigError) as caught:
        schema.validate({"count": 0, "mode": "c", "inner": {"flag": "yes", "n": "x"}, "fine": "ok", "extra": 1})
    fields = [e.field for e in caught.value.errors]
    assert sorted(fields) == ["count", "extra", "inner.flag", "inner.n", "mode", "name"]
    assert caught.value.field == "extra"  # the first one found (unknown keys are checked first)
    for field in fields:
        assert f"config field {field!r}" in str(caught.value)


def test_a_single_wrong_field_is_a_plain_error() -> None:
    schema = ConfigSchema.parse({"type": "object", "properties": {"count": {"type": "number"}}})
    with pytest.raises(ConfigError) as caught:
        schema.validate({"count": "x"})
    assert caught.value.errors == ()
    assert str(caught.value) == "config field 'count': must be a finite number [type]"
