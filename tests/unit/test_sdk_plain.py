"""The plain-data rule (SPEC §3): only None, bool, int, float, str, bytes, list, dict with str keys
and aware datetimes cross the plugin boundary; anything else is refused at the sender, naming the
path of the offending value."""

from __future__ import annotations

import enum
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from plugbox.errors import CapabilityError
from plugbox.sdk import Context, PlainDataError, check_plain


class Colour(enum.Enum):
    RED = "red"


PLAIN = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    1.5,
    "text",
    b"\x00bytes",
    [],
    {},
    [1, "two", [3.0, None]],
    {"nested": {"list": [b"x", {"deep": False}]}},
    datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=-3))),
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_values_pass(value: Any) -> None:
    check_plain(value)


def test_offending_path_names_key_and_index() -> None:
    with pytest.raises(PlainDataError) as caught:
        check_plain({"items": [1, 2, 3, object()]}, "data")
    assert caught.value.path == "data.items[3]"
    assert str(caught.value).startswith("data.items[3]:")


def test_offending_path_in_nested_lists_and_dicts() -> None:
    with pytest.raises(PlainDataError) as caught:
        check_plain([{"a": [[None, {"b": {1, 2}}]]}], "value")
    assert caught.value.path == "value[0].a[0][1].b"


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(PlainDataError, match=r"when: naive datetime"):
        check_plain({"when": datetime(2024, 5, 1, 12, 0)}, "args")


def test_aware_datetime_is_accepted() -> None:
    check_plain({"when": datetime(2024, 5, 1, tzinfo=UTC)}, "args")


@pytest.mark.parametrize("key", [1, 2.5, None, b"k", ("a", "b")], ids=repr)
def test_dict_with_a_non_str_key_is_refused_naming_the_key(key: Any) -> None:
    with pytest.raises(PlainDataError) as caught:
        check_plain({"outer": {key: "v"}}, "data")
    assert caught.value.path == f"data.outer[{key!r}]"
    assert "keys must be str" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (frozenset({1}), "frozenset"),
        ((1, 2), "tuple"),
        (date(2024, 5, 1), "date"),
        (Decimal("1.5"), "Decimal"),
        (Colour.RED, "Colour"),
        (bytearray(b"x"), "bytearray"),
        (OrderedDict(a=1), "OrderedDict"),
        (object(), "object"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_non_plain_values_are_refused_naming_their_type(value: Any, type_name: str) -> None:
    with pytest.raises(PlainDataError, match=rf"data\.x: {type_name} is not plain data"):
        check_plain({"x": value}, "data")


def test_subclass_of_str_is_not_plain() -> None:
    class Sneaky(str):
        pass

    with pytest.raises(PlainDataError, match="Sneaky"):
        check_plain([Sneaky("x")], "data")


def test_self_referencing_structure_is_refused_not_recursed_forever() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(PlainDataError, match="nested deeper"):
        check_plain(loop)


def test_plain_data_error_is_a_capability_error() -> None:
    # a plugin catching CapabilityError around a call also catches a refused argument
    assert issubclass(PlainDataError, CapabilityError)


async def test_ctx_refuses_non_plain_arguments_before_the_host_sees_them() -> None:
    calls: list[str] = []

    class Backend:
        async def call(self, verb: str, args: dict[str, Any]) -> Any:
            calls.append(verb)
            return None

    ctx = Context("p", {}, Backend())  # type: ignore[arg-type]
    with pytest.raises(PlainDataError) as caught:
        await ctx.storage.set("k", {"when": datetime(2024, 1, 1)})
    assert caught.value.path == "args.value.when"
    assert calls == []


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1, 2**70])
def test_int_outside_the_wire_range_is_refused_naming_its_path(big: int) -> None:
    with pytest.raises(PlainDataError, match="64-bit range") as caught:
        check_plain({"counts": [1, big]}, "args")
    assert caught.value.path == "args.counts[1]"


async def test_storage_set_of_a_huge_int_is_a_capability_error_naming_the_value() -> None:
    calls: list[str] = []

    class Backend:
        async def call(self, verb: str, args: dict[str, Any]) -> Any:
            calls.append(verb)
            return None

    ctx = Context("p", {}, Backend())  # type: ignore[arg-type]
    with pytest.raises(CapabilityError, match=r"args\.value: int outside the 64-bit range"):
        await ctx.storage.set("k", 2**70)
    assert calls == []


def test_ctx_config_is_read_only() -> None:
    ctx = Context("p", {"greeting": "hi"}, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ctx.config["greeting"] = "changed"  # type: ignore[index]
    assert ctx.config["greeting"] == "hi"
