"""The confinement orchestrator's rules, without confining anything.

Fake layers record what ran; the real layers are only inspected (order, pure helpers, probes).
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import plugbox.confine as confine
from plugbox.confine import contain, fds, landlock
from plugbox.confine.layer import Layer, LayerProbe, LayerResult
from plugbox.confine.policy import Policy, default_runtime_paths
from plugbox.confine.report import Report
from plugbox.errors import ConfinementError

CONFINE_DIR = Path(confine.__file__).parent


def policy(**overrides: Any) -> Policy:
    fields: dict[str, Any] = {"keep_fds": (3,), "scratch_dir": "/tmp/scratch", "plugin_dir": "/tmp/plugin"}
    return Policy(**(fields | overrides))


class Journal:
    """Records the order in which fake layers were shared, prepared and applied."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def layer(self, name: str, outcome: str = "ok") -> Layer[str, str]:
        def share() -> str:
            self.events.append(f"share:{name}")
            return name

        def prepare(_policy: Policy, shared: str) -> str:
            self.events.append(f"prepare:{name}")
            if outcome == "prepare-raises":
                raise RuntimeError("broken prepare")
            return shared

        def apply(plan: str) -> LayerResult:
            self.events.append(f"apply:{plan}")
            if outcome == "fails":
                return LayerResult.failed(name, f"{name} is not available here")
            if outcome == "skipped":
                return LayerResult.not_requested(name, "not requested")
            if outcome == "raises":
                raise OSError(5, "I/O error")
            return LayerResult.ok(name, f"{name} applied")

        def probe() -> LayerProbe:
            if outcome == "probe-raises":
                raise RuntimeError("no kernel")
            return LayerProbe(name, outcome != "fails", "fake")

        return Layer(name, share, prepare, apply, probe)

    @property
    def applied(self) -> list[str]:
        return [e.removeprefix("apply:") for e in self.events if e.startswith("apply:")]


@pytest.fixture(autouse=True)
def single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contain, "_threads", lambda: 1)


def run(layers: list[Layer[Any, Any]], **overrides: Any) -> Report:
    return contain.apply(contain.prepare(policy(**overrides), contain.prepare_shared(layers)))


# --- order ---------------------------------------------------------------------------------------------


def test_layers_run_in_the_documented_order() -> None:
    assert [layer.name for layer in confine.LAYERS] == [
        "session",
        "cgroups",
        "fds",
        "env",
        "rlimits",
        "userns",
        "scratch",
        "credentials",
        "namespaces",
        "nnp",
        "landlock",
        "seccomp",
    ]


def test_nnp_precedes_landlock_and_seccomp_is_last() -> None:
    names = [layer.name for layer in confine.LAYERS]
    assert names.index("credentials") < names.index("nnp") < names.index("landlock")
    assert names[-1] == "seccomp"


def test_scratch_mounts_while_privileged_and_after_env_enters_it() -> None:
    names = [layer.name for layer in confine.LAYERS]
    assert names.index("env") < names.index("scratch") < names.index("credentials")


def test_apply_runs_layers_in_the_given_order() -> None:
    journal = Journal()
    report = run([journal.layer("a"), journal.layer("b"), journal.layer("c")])
    assert journal.applied == ["a", "b", "c"]
    assert [r.name for r in report.layers] == ["a", "b", "c"]


def test_prepare_order_is_visible_before_applying() -> None:
    journal = Journal()
    prepared = contain.prepare(policy(), contain.prepare_shared([journal.layer("a"), journal.layer("b")]))
    assert prepared.order == ["a", "b"]
    assert journal.applied == []


def test_shared_work_runs_once_for_many_workers() -> None:
    journal = Journal()
    shared = contain.prepare_shared([journal.layer("a")])
    contain.prepare(policy(), shared)
    contain.prepare(policy(), shared)
    assert journal.events == ["share:a", "prepare:a", "prepare:a"]


# --- strict versus degraded ---------------------------------------------------------------------------


def test_strict_mode_raises_naming_the_first_failing_layer_and_stops() -> None:
    journal = Journal()
    with pytest.raises(ConfinementError) as caught:
        run([journal.layer("a"), journal.layer("b", "fails"), journal.layer("c")])
    assert caught.value.layer == "b"
    assert "b is not available here" in caught.value.reason
    assert journal.applied == ["a", "b"]  # c never ran: no payload behind a half-applied policy


def test_degraded_mode_records_the_failure_and_applies_the_rest() -> None:
    journal = Journal()
    report = run([journal.layer("a"), journal.layer("b", "fails"), journal.layer("c")], degraded=True)
    assert journal.applied == ["a", "b", "c"]
    assert report.degraded is True
    assert report.missing == ["b"]
    assert report.applied == ["a", "c"]
    assert report.layers[1] == LayerResult("b", False, "b is not available here")


def test_a_layer_not_requested_is_neither_missing_nor_fatal() -> None:
    journal = Journal()
    report = run([journal.layer("a"), journal.layer("ns", "skipped"), journal.layer("c")])
    assert journal.applied == ["a", "ns", "c"]
    assert report.degraded is False
    assert report.missing == []
    assert report.layers[1].skipped is True


def test_an_unexpected_exception_in_apply_fails_that_layer() -> None:
    journal = Journal()
    with pytest.raises(ConfinementError) as caught:
        run([journal.layer("a", "raises"), journal.layer("b")])
    assert caught.value.layer == "a"
    assert "unexpected OSError" in caught.value.reason
    assert journal.applied == ["a"]


def test_an_unexpected_exception_in_prepare_fails_that_layer_at_apply() -> None:
    journal = Journal()
    prepared = contain.prepare(policy(degraded=True), contain.prepare_shared([journal.layer("a", "prepare-raises")]))
    report = contain.apply(prepared)
    assert report.missing == ["a"]
    assert "broken prepare" in report.layers[0].detail
    assert journal.applied == []


def test_apply_refuses_a_multithreaded_process_even_in_degraded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal()
    monkeypatch.setattr(contain, "_threads", lambda: 2)
    with pytest.raises(ConfinementError) as caught:
        run([journal.layer("a")], degraded=True)
    assert caught.value.layer == "contain"
    assert journal.applied == []


# --- report and probe ------------------------------------------------------------------------------------


def test_report_round_trips_through_json() -> None:
    report = Report.of([LayerResult.ok("a", "x"), LayerResult.failed("b", "y"), LayerResult.not_requested("c", "z")])
    decoded = msgspec.json.decode(msgspec.json.encode(report), type=Report)
    assert decoded == report
    assert decoded.missing == ["b"]


def test_probe_lists_every_layer_and_survives_a_broken_probe() -> None:
    journal = Journal()
    probes = confine.probe([journal.layer("a"), journal.layer("b", "probe-raises")])
    assert [(p.name, p.available) for p in probes] == [("a", True), ("b", False)]
    assert "no kernel" in probes[1].detail


@pytest.mark.skipif(sys.platform != "linux", reason="probes read Linux kernel facts")
def test_real_probe_covers_all_layers_in_order() -> None:
    probes = confine.probe()
    assert [p.name for p in probes] == [layer.name for layer in confine.LAYERS]
    assert all(p.detail for p in probes)


# --- policy ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"keep_fds": (1,)}, "0/1/2"),
        ({"keep_fds": ()}, "channel fd"),
        ({"keep_fds": (4, 4)}, "duplicate"),
        ({"scratch_dir": "scratch"}, "absolute"),
        ({"runtime_paths": ("lib",)}, "not absolute"),
        ({"memory_bytes": 0}, "positive"),
        ({"unprivileged_uid": 0}, "non-root"),
    ],
)
def test_policy_rejects_unsafe_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        policy(**overrides)


def test_policy_defaults_match_the_spec() -> None:
    p = policy()
    assert (p.memory_bytes, p.open_files, p.file_size_bytes) == (256 << 20, 256, 64 << 20)
    assert (p.netns, p.degraded, p.unprivileged_uid) == (False, False, 65534)
    assert p.env_allow == ("LANG", "LC_ALL", "TZ")


def test_default_runtime_paths_cover_the_interpreter_but_not_the_working_directory() -> None:
    paths = default_runtime_paths()
    assert os.path.abspath(sys.base_prefix) in paths
    assert os.getcwd() not in paths
    assert "" not in paths
    assert str(CONFINE_DIR.parent) in paths  # the plugbox package itself, editable or not


# --- pure helpers of the layers ----------------------------------------------------------------------------


def test_fds_closes_every_gap_around_kept_fds() -> None:
    top = 0xFFFFFFFF
    assert fds._gaps((3,)) == [(4, top)]
    assert fds._gaps((5, 9)) == [(3, 4), (6, 8), (10, top)]
    assert fds._gaps((3, 4)) == [(5, top)]


def test_landlock_handles_every_right_of_the_running_abi() -> None:
    fs1, net1, scope1 = landlock._handled(1)
    assert (fs1, net1, scope1) == ((1 << 13) - 1, 0, 0)
    fs7, net7, scope7 = landlock._handled(7)
    assert fs7 == (1 << 16) - 1
    assert net7 == landlock.NET_BIND_TCP | landlock.NET_CONNECT_TCP
    assert scope7 == landlock.SCOPE_ABSTRACT_UNIX_SOCKET | landlock.SCOPE_SIGNAL


def test_landlock_keeps_only_outermost_paths() -> None:
    P = landlock._Path
    kept = landlock._outermost([P("/usr/lib/python3", True), P("/usr/lib", True), P("/usr/libx", True)])
    assert kept == [P("/usr/lib", True), P("/usr/libx", True)]


def test_landlock_refuses_a_plugin_dir_inside_the_scratch_dir(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    shared = landlock._Shared(abi=7, error="", runtime=())
    plan = landlock.prepare(policy(scratch_dir=str(tmp_path), plugin_dir=str(tmp_path / "plugin")), shared)
    assert "inside the writable scratch_dir" in plan.error


def test_landlock_grants_read_only_and_read_write_rights(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    (tmp_path / "scratch").mkdir()
    shared = landlock._Shared(abi=7, error="", runtime=())
    plan = landlock.prepare(policy(scratch_dir=str(tmp_path / "scratch"), plugin_dir=str(tmp_path / "plugin")), shared)
    rules = dict(plan.rules)
    plugin_rights = rules[str((tmp_path / "plugin").resolve())]
    assert plugin_rights == landlock.FS_READ_FILE | landlock.FS_READ_DIR
    scratch_rights = rules[str((tmp_path / "scratch").resolve())]
    assert scratch_rights & landlock.FS_WRITE_FILE and scratch_rights & landlock.FS_MAKE_REG
    assert not scratch_rights & (landlock.FS_EXECUTE | landlock.FS_MAKE_CHAR | landlock.FS_MAKE_BLOCK)
    assert rules["/dev/null"] == landlock.FS_READ_FILE | landlock.FS_WRITE_FILE | landlock.FS_TRUNCATE


# --- package hygiene --------------------------------------------------------------------------------------


def _plugbox_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "plugbox":  # from plugbox import errors
            found.update(f"plugbox.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plugbox"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("plugbox"))
    return found


@pytest.mark.parametrize("module", sorted(CONFINE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_confine_imports_nothing_from_plugbox_but_errors(module: Path) -> None:
    def allowed(name: str) -> bool:
        return name == "plugbox.errors" or name.startswith("plugbox.confine")

    assert {n for n in _plugbox_imports(module) if not allowed(n)} == set()


def test_public_api_is_exactly_exported() -> None:
    assert sorted(confine.__all__) == sorted(
        [
            "LAYERS",
            "CgroupPlacement",
            "LayerProbe",
            "LayerResult",
            "Policy",
            "Prepared",
            "Report",
            "Shared",
            "UidPlacement",
            "apply",
            "default_runtime_paths",
            "prepare",
            "prepare_shared",
            "probe",
        ]
    )
    for name in confine.__all__:
        assert getattr(confine, name) is not None


def test_every_layer_module_exposes_the_four_verbs() -> None:
    verbs: list[Callable[..., Any]]
    for layer in confine.LAYERS:
        verbs = [layer.share, layer.prepare, layer.apply, layer.probe]
        assert all(callable(v) for v in verbs), layer.name
