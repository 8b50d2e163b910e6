"""Degraded confinement is reported, never silent: a layer that was needed and not applied shows
up as missing, while an opt-in layer that was not requested does not."""

from __future__ import annotations

from plugbox.bridge.client import missing_layers

FULL = [
    {"name": "seccomp", "applied": True, "detail": "...", "skipped": False},
    {"name": "namespaces", "applied": False, "detail": "not requested", "skipped": True},
]


def test_no_layer_is_missing_when_every_needed_layer_applied() -> None:
    assert missing_layers(FULL) == []


def test_a_needed_layer_that_did_not_apply_is_missing() -> None:
    layers = [*FULL, {"name": "landlock", "applied": False, "detail": "kernel without landlock", "skipped": False}]
    assert missing_layers(layers) == ["landlock"]


def test_an_opt_in_layer_that_was_not_requested_is_not_missing() -> None:
    assert "namespaces" not in missing_layers(FULL)


def test_no_report_means_nothing_is_missing() -> None:
    assert missing_layers(None) == [] and missing_layers([]) == []
