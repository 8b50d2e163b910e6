"""A manifest written for OpenWA loads here with every OpenWA-only field kept and reported
(plugbox.manifest._openwa), and only what cannot work refused with a pointer to the porting guide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plugbox.errors import ManifestError
from plugbox.hooks import HookBus
from plugbox.manifest import load_manifest, parse_manifest

HOST = "0.1.0"


def doc(**fields: Any) -> dict[str, Any]:
    return {"id": "greeter", "name": "Greeter", "version": "1.0.0", "type": "extension", "main": "main.py",
            **fields}


def test_min_openwa_version_is_kept_and_reported_not_enforced() -> None:
    m = parse_manifest(doc(minOpenWAVersion="99.0.0", testedOpenWAVersion="0.8.0"), host_version=HOST)
    assert (m.openwa.min_openwa_version, m.openwa.tested_openwa_version) == ("99.0.0", "0.8.0")
    assert m.to_json()["minOpenWAVersion"] == "99.0.0"
    assert parse_manifest(m.to_json(), host_version=HOST) == m  # round-trips


@pytest.mark.parametrize("value", ["0.8", "v0.8.0", 8, ["0.8.0"]])
def test_a_malformed_min_openwa_version_names_the_field(value: Any) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(doc(minOpenWAVersion=value), host_version=HOST)
    assert caught.value.field == "minOpenWAVersion"


def test_annotation_events_in_hooks_are_left_out_with_a_note_not_fatal() -> None:
    m = parse_manifest(doc(hooks=["message:received", "message:annotation-created", "message:annotation-deleted"]),
                       host_version=HOST)
    assert m.hooks == ("message:received",)
    assert m.notes == (
        "hooks[1]: OpenWA event 'message:annotation-created' is not supported here; the plugin will not receive it",
        "hooks[2]: OpenWA event 'message:annotation-deleted' is not supported here; the plugin will not receive it",
    )


def test_any_other_unknown_event_still_fails_the_load() -> None:
    with pytest.raises(ManifestError, match="unknown event 'message:recieved'"):
        parse_manifest(doc(hooks=["message:recieved"]), host_version=HOST)


def test_config_ui_is_reported_as_not_served() -> None:
    m = parse_manifest(doc(configUi={"entry": "config/index.html"}), host_version=HOST)
    assert len(m.notes) == 1 and m.notes[0].startswith("configUi: ")
    assert parse_manifest(doc(), host_version=HOST).notes == ()


def test_a_javascript_main_points_at_the_porting_guide(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"id": "x", "name": "x", "version": "1.0.0", "type": "extension", '
                                            '"main": "dist/index.js"}')
    with pytest.raises(ManifestError, match=r"porting-from-openwa\.md") as caught:
        load_manifest(tmp_path, host_version=HOST)
    assert caught.value.field == "main"


def test_registering_an_annotation_handler_is_refused_as_not_supported() -> None:
    said: list[str] = []
    bus = HookBus(budget=lambda _p: 1.0, relay=lambda pid, level, ctx, text: said.append(ctx + text) or text)
    assert bus.register("p", "message:annotation-updated", lambda hook: None) is False
    assert said == ["refused hook for an OpenWA event not supported here: message:annotation-updated"]
