"""Permission and session-scope checks (SPEC §3): the one place both tiers are checked, with errors
that name the permission, verb, plugin or session at fault."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from plugbox.errors import CapabilityError
from plugbox.manifest import parse_manifest
from plugbox.permissions import PERMISSIONS, SessionScope, check_permission, check_session


def _live(*sessions: str) -> Callable[[str], bool]:
    return lambda session_id: session_id in sessions


def test_permission_names_are_exactly_the_documented_ones() -> None:
    assert {
        "messages:send",
        "engine:read",
        "storage:use",
        "net:fetch",
        "conversation:send",
        "conversation:read",
        "webhook:ingress",
        "search:provide",
        "hooks:modify",
    } == PERMISSIONS


def test_granted_permission_passes() -> None:
    check_permission("echo", {"messages:send"}, "messages:send", "messages.send_text")


def test_missing_permission_is_refused_naming_plugin_permission_and_verb() -> None:
    with pytest.raises(CapabilityError) as caught:
        check_permission("echo", {"storage:use"}, "messages:send", "messages.send_text")
    message = str(caught.value)
    assert "'echo'" in message
    assert "'messages:send'" in message
    assert "messages.send_text" in message


def test_manifest_without_permissions_grants_nothing() -> None:
    manifest = parse_manifest(
        {"id": "bare", "name": "Bare", "version": "1.0.0", "type": "extension", "main": "builtin"},
        host_version="0.1.0",
        builtin=True,
    )
    assert manifest.permissions == frozenset()
    for permission in PERMISSIONS:
        with pytest.raises(CapabilityError):
            check_permission("bare", manifest.permissions, permission, "some.verb")


def test_wildcard_manifest_sessions_permit_any_session() -> None:
    assert SessionScope(["*"], True, []).permits("anything")


def test_listed_manifest_sessions_permit_only_those() -> None:
    scope = SessionScope(["a", "b"], True, [])
    assert scope.permits("a") and scope.permits("b")
    assert not scope.permits("c")


def test_session_outside_the_manifest_sessions_is_refused_naming_it() -> None:
    scope = SessionScope(["a"], False, [])
    with pytest.raises(CapabilityError, match=r"session 'b' is not in the manifest sessions"):
        check_session("echo", scope, "b", _live("a", "b"))


def test_session_scoped_plugin_not_active_on_the_session_is_refused_naming_it() -> None:
    scope = SessionScope(["*"], True, ["a"])
    with pytest.raises(CapabilityError, match=r"not active on session 'b'"):
        check_session("echo", scope, "b", _live("a", "b"))


def test_listed_session_the_plugin_is_not_active_on_is_refused_as_inactive_not_as_outside_the_manifest() -> None:
    # the operator needs the right reason: activate the plugin there, not edit its manifest
    scope = SessionScope(["a", "b"], True, ["a"])
    with pytest.raises(CapabilityError, match=r"plugin 'echo' is not active on session 'b'"):
        check_session("echo", scope, "b", _live("a", "b"))


def test_plugin_that_is_not_session_scoped_needs_no_activation() -> None:
    check_session("echo", SessionScope(["*"], False, []), "b", _live("b"))


def test_session_without_a_live_engine_is_refused_naming_it() -> None:
    scope = SessionScope(["*"], True, ["a"])
    with pytest.raises(CapabilityError, match=r"session 'a' has no live engine"):
        check_session("echo", scope, "a", _live())


def test_manifest_sessions_are_checked_before_activation() -> None:
    # config cannot widen the static manifest list: being "active" on a session outside it is not enough
    scope = SessionScope(["a"], True, ["a", "b"])
    with pytest.raises(CapabilityError, match="manifest sessions"):
        check_session("echo", scope, "b", _live("a", "b"))


@pytest.mark.parametrize("session_scoped", [True, False])
@pytest.mark.parametrize("allowed", [["*"], ["a"], ["b"], []])
@pytest.mark.parametrize("active", [[], ["a"], ["b"]])
def test_covers_is_exactly_what_check_session_lets_through_on_a_live_session(
    session_scoped: bool, allowed: list[str], active: list[str]
) -> None:
    scope = SessionScope(allowed, session_scoped, active)
    expected = ("*" in allowed or "a" in allowed) and (not session_scoped or "a" in active)
    assert scope.covers("a") is expected
    try:
        check_session("echo", scope, "a", _live("a"))
    except CapabilityError:
        passed = False
    else:
        passed = True
    assert passed is expected

