"""`plugbox pack`: the zip leaves out tests, caches and what `.plugboxignore` names, installs on a real
server, and what the installer would refuse is refused before anything is written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import serving

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(120)


def _pack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "plugbox"), "pack", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def _echo_tree(tmp_path: Path) -> Path:
    root = tmp_path / "echo"
    shutil.copytree(REPO / "examples/plugins/echo", root)
    (root / "tests").mkdir(exist_ok=True)
    (root / "tests/test_x.py").write_text("def test(): pass\n")
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__/main.cpython-311.pyc").write_bytes(b"\0")
    (root / ".env").write_text("SECRET=1\n")
    (root / "notes.md").write_text("private\n")
    (root / "data").mkdir()
    (root / "data/words.txt").write_text("hello\n")
    (root / ".plugboxignore").write_text("# author's own\nnotes.md\n")
    return root


def test_pack_leaves_out_ignored_files_and_the_zip_installs(tmp_path: Path) -> None:
    root = _echo_tree(tmp_path)
    run = _pack(str(root), "-o", "echo.zip", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with zipfile.ZipFile(tmp_path / "echo.zip") as zf:
        assert sorted(zf.namelist()) == ["data/words.txt", "main.py", "manifest.json"]
    (tmp_path / "srv").mkdir()
    with serving(tmp_path / "srv", "pack-key") as (_proc, url, _log):
        r = httpx.post(f"{url}/api/plugins", headers={"X-API-Key": "pack-key"}, timeout=30,
                       files={"file": ("echo.zip", (tmp_path / "echo.zip").read_bytes(), "application/zip")})
        assert r.status_code == 201, r.text
        assert r.json()["id"] == "echo"


def test_pack_defaults_the_output_name_to_id_and_version(tmp_path: Path) -> None:
    root = _echo_tree(tmp_path)
    run = _pack(str(root), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "echo-1.0.0.zip").is_file()


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(permissions=["messages:send", "root:everything"]), "permissions"),
    (lambda m: m.update(id="auto-reply"), "auto-reply"),
    (lambda m: m.update(main="missing.py"), "missing.py"),
])
def test_pack_refuses_what_the_installer_refuses_and_writes_nothing(
        tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str) -> None:
    root = _echo_tree(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))
    run = _pack(str(root), "-o", "out.zip", cwd=tmp_path)
    assert run.returncode == 1
    assert "refused" in run.stderr and message in run.stderr
    assert not (tmp_path / "out.zip").exists()


def test_pack_refuses_a_symlink(tmp_path: Path) -> None:
    root = _echo_tree(tmp_path)
    (root / "link.py").symlink_to("/etc/passwd")
    run = _pack(str(root), "-o", "out.zip", cwd=tmp_path)
    assert run.returncode == 1
    assert "symlink" in run.stderr
    assert not (tmp_path / "out.zip").exists()
