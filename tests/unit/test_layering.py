"""The two process sides meet only at the protocol: nothing that runs in the sandboxed process
(worker, sdk, confine, protocol) imports host services, storage, the loader or the bridge's host
side, and the protocol itself imports nothing of plugbox but its errors."""

from __future__ import annotations

import ast
from pathlib import Path

import plugbox

ROOT = Path(plugbox.__file__).parent
WORKER_SIDE = [ROOT / "worker", ROOT / "sdk", ROOT / "confine", ROOT / "protocol"]
WORKER_PACKAGES = ("plugbox.worker", "plugbox.sdk", "plugbox.confine", "plugbox.protocol")
ALLOWED_SHARED = {"plugbox", "plugbox.errors", "plugbox.plain", "plugbox.events"}
FORBIDDEN_PREFIXES = (
    "plugbox.storage",
    "plugbox.lifecycle",
    "plugbox.runtime",
    "plugbox.observer",
    "plugbox.host",
    "plugbox.hooks",
    "plugbox.capabilities",
    "plugbox.engines",
    "plugbox.bridge",
    "plugbox.net",
    "plugbox.api",
    "plugbox.cli",
    "plugbox.settings",
    "plugbox.inprocess",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _worker_side_modules() -> list[Path]:
    return [p for base in WORKER_SIDE for p in sorted(base.rglob("*.py"))]


def test_worker_side_has_modules_to_check() -> None:
    assert len(_worker_side_modules()) >= 5


def test_worker_side_never_imports_host_modules() -> None:
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _worker_side_modules()
        for name in _imports(path)
        if name.startswith(FORBIDDEN_PREFIXES)
    }
    assert not offenders, sorted(offenders)


def test_worker_side_plugbox_imports_stay_within_the_worker_side() -> None:
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _worker_side_modules()
        for name in _imports(path)
        if name.startswith("plugbox") and not name.startswith(WORKER_PACKAGES) and name not in ALLOWED_SHARED
    }
    assert not offenders, sorted(offenders)


def test_the_protocol_imports_nothing_of_plugbox_but_errors() -> None:
    modules = sorted((ROOT / "protocol").rglob("*.py"))
    assert len(modules) >= 3
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules
        for name in _imports(path)
        if name.startswith("plugbox") and not name.startswith("plugbox.protocol") and name != "plugbox.errors"
    }
    assert not offenders, sorted(offenders)


def test_the_host_side_of_the_bridge_imports_nothing_of_the_worker() -> None:
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "bridge").rglob("*.py"))
        for name in _imports(path)
        if name.startswith("plugbox.worker")
    }
    assert not offenders, sorted(offenders)
