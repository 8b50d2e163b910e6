"""Hostile plugin archives against `POST /api/plugins` (issue 12 class 8): each one is a 400 whose
message names what was wrong, nothing is left in the plugins directory, no plugin is registered,
and the host still installs and serves a good plugin afterwards.

The archives are built by hand where `zipfile` would refuse to write them (a NUL or non-UTF-8
byte in a name, a header that lies about its size, a damaged stream): the raw bytes are patched
after writing a placeholder of the same length, in both the local and the central header.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugbox.host import Host

ADMIN = {"X-API-Key": "admin-key"}
MANIFEST = {"id": "z", "name": "z", "version": "1.0.0", "type": "extension", "main": "main.py"}
MAIN = "from plugbox.sdk import Plugin\nclass Z(Plugin): pass\n"


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"admin_api_keys": ("admin-key",), "plugins_dir": str(tmp_path / "plugins"),
            "install_zip_max_bytes": 1 << 20, "install_unpacked_max_bytes": 8 << 20,
            "install_max_depth": 8, "install_max_ratio": 100}


def build(members: list[tuple[str, bytes | str]], *, method: int = zipfile.ZIP_DEFLATED,
          manifest: Any = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        entries = [("manifest.json", json.dumps(MANIFEST if manifest is None else manifest)), ("main.py", MAIN),
                   *members]
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = ((stat.S_IFDIR | 0o755) if name.endswith("/") else (stat.S_IFREG | 0o644)) << 16
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def patched(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 2, "placeholder must sit in both headers"
    return data.replace(old, new)


def symlink() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(MANIFEST))
        zf.writestr("main.py", MAIN)
        info = zipfile.ZipInfo("evil")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def duplicate() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(MANIFEST))
        zf.writestr("main.py", MAIN)
        with pytest.warns(UserWarning):
            zf.writestr("main.py", "import os; os.system('evil')")
    return buf.getvalue()


def lying_size() -> bytes:
    """A member whose headers declare 16 bytes while its deflate stream inflates to 4 MiB."""
    real = build([("pad.bin", b"\0" * (4 << 20))], method=zipfile.ZIP_DEFLATED)
    size = (4 << 20).to_bytes(4, "little")
    assert real.count(size) == 2
    return real.replace(size, (16).to_bytes(4, "little"))


def corrupt() -> bytes:
    data = bytearray(build([("data.txt", os.urandom(4000).hex())]))
    start = data.find(b"data.txt") + len("data.txt") + 100  # inside the member's deflate stream
    data[start:start + 64] = b"\xa5" * 64
    return bytes(data)


def truncated() -> bytes:
    data = build([("data.txt", os.urandom(4000).hex())])
    return data[: len(data) * 2 // 3]


def nul_name() -> bytes:
    # zipfile cuts names at the first NUL: "main.py\0x" would be read as a second "main.py"
    return patched(build([("main.pyQx", "x")]), b"main.pyQx", b"main.py\0x")


def non_utf8_name() -> bytes:
    return patched(build([("Qcaf.py", "x")]), b"Qcaf.py", b"\xe9caf.py")  # Latin-1 é, no UTF-8 flag


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "zip bomb ratio": (lambda: build([("bomb.bin", b"\0" * (6 << 20))]), "more than 100:1"),
    "header lies about the size": (lying_size, "corrupt"),
    "symlink entry": (symlink, "symlinks are not allowed"),
    "absolute path": (lambda: build([("/etc/cron.d/evil", "x")]), "absolute paths"),
    "dot-dot path": (lambda: build([("a/../../evil.py", "x")]), "'..'"),
    "duplicate name": (duplicate, "same path twice"),
    "file and directory on one path": (lambda: build([("lib", "x"), ("lib/mod.py", "y")]), "is a file"),
    "truncated archive": (truncated, "not a valid zip"),
    "corrupt member": (corrupt, "corrupt"),
    "manifest not JSON": (lambda: _raw_manifest(b"{id: z,"), "not valid JSON"),
    "manifest nested too deep": (lambda: _raw_manifest(b"[" * 50_000 + b"]" * 50_000), "not valid JSON"),
    "huge manifest": (lambda: _raw_manifest(json.dumps({**MANIFEST, "description": os.urandom(200_000).hex()})
                                            .encode(), method=zipfile.ZIP_STORED), "larger than"),
    "nested beyond the depth": (lambda: build([("/".join("d" * 9) + "/f.py", "x")]), "levels deep"),
    "NUL in a name": (nul_name, "NUL"),
    "non-UTF-8 name": (non_utf8_name, "not UTF-8"),
    "control character in a name": (lambda: build([("evil\x1b[2J.py", "x")]), "control characters"),
    "component too long": (lambda: build([("a" * 300, "x")]), "longer than 255"),
    "unsupported compression": (lambda: build([], method=zipfile.ZIP_BZIP2), "compression method"),
    "manifest not an object": (lambda: _raw_manifest(b"[1, 2]"), "JSON object"),
}


def _raw_manifest(raw: bytes, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        zf.writestr("manifest.json", raw)
        zf.writestr("main.py", MAIN)
    return buf.getvalue()


async def upload(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    return await client.post("/api/plugins", files={"file": ("p.zip", data, "application/zip")}, headers=ADMIN)


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_zip_is_a_400_naming_the_fault_and_writes_nothing(
        client: httpx.AsyncClient, host: Host, case: str) -> None:
    make, expected = HOSTILE[case]
    r = await upload(client, make())
    assert r.status_code == 400, (case, r.status_code, r.text)
    assert expected in r.json()["error"], (case, r.json())
    plugins = host.settings.plugins_path
    assert not plugins.exists() or list(plugins.iterdir()) == [], case  # not even a staging directory
    assert "z" not in {v.plugin_id for v in host.plugins()}
    good = build([])  # the host still installs a good plugin after the hostile one
    r = await upload(client, good)
    assert r.status_code == 201, r.text
    assert (await client.get("/health")).json()["status"] == "ok"
