"""Installing a plugin from an uploaded zip: every member checked and the manifest validated before a
byte is written; extraction into a hidden temp dir inside the plugins dir (so the final rename stays on
one filesystem and is atomic; `discover` skips dot-directories); then rename, or on update an atomic
directory swap (Linux `renameat2(RENAME_EXCHANGE)`, two renames elsewhere).

Refused (ZipRefused, naming the member): path escape (`..`, absolute, drive letters, backslashes, NUL),
symlinks, device files, FIFOs and sockets (from the Unix mode in `external_attr`), more than
`install_max_files` members, declared or actual uncompressed size past `install_unpacked_max_bytes`
(zip bombs: sizes are counted while decompressing, not trusted from the header), encrypted members,
a missing or invalid manifest, a `main` absent from the archive. The zip may hold the plugin at its
root or inside one top-level directory.

The blocking parts (`inspect`, `extract`) run in a thread; `PluginInstaller.install` serialises
installs and drives the host (disable, swap, reload, re-enable).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import posixpath
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from plugbox import __version__
from plugbox.errors import ManifestError, PlugboxError
from plugbox.loader import Status
from plugbox.manifest import MANIFEST_MAX_BYTES, Manifest, load_manifest, parse_manifest

if TYPE_CHECKING:
    from plugbox.host import Host
    from plugbox.loader import PluginEntry

__all__ = ["Archive", "PluginInstaller", "ZipRefused", "extract", "inspect"]

MANIFEST = "manifest.json"
_CHUNK = 64 * 1024
_ALLOWED_TYPES = (0, stat.S_IFREG, stat.S_IFDIR)  # 0: no Unix mode recorded (Windows zips)


class ZipRefused(PlugboxError):
    """The upload is not an acceptable plugin archive; the message names the member and rule."""


@dataclass(frozen=True, slots=True)
class Archive:
    manifest: Manifest
    root: str  # "" or "dir/": the prefix stripped from every member
    members: tuple[zipfile.ZipInfo, ...]


def _check_name(name: str) -> None:
    if "\\" in name or "\x00" in name:
        raise ZipRefused(f"zip member {name!r}: backslashes and NUL are not allowed in paths")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ZipRefused(f"zip member {name!r}: absolute paths are not allowed")
    parts = name.rstrip("/").split("/")
    if any(p == ".." for p in parts):
        raise ZipRefused(f"zip member {name!r}: '..' would escape the plugin directory")
    if not name.strip("/") or any(p == "" for p in parts):
        raise ZipRefused(f"zip member {name!r}: empty path component")


def _check_type(info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise ZipRefused(f"zip member {info.filename!r}: symlinks are not allowed")
    if kind not in _ALLOWED_TYPES:
        raise ZipRefused(f"zip member {info.filename!r}: only regular files and directories are allowed")
    if info.flag_bits & 0x1:
        raise ZipRefused(f"zip member {info.filename!r}: encrypted members are not supported")


def _root(names: list[str]) -> str:
    if MANIFEST in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        top = tops.pop() + "/"
        if top + MANIFEST in names:
            return top
    raise ZipRefused(f"no {MANIFEST} at the root of the zip (or inside its single top-level directory)")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ZipRefused(f"zip member {info.filename!r}: larger than {limit} bytes")
    return data


def inspect(file: IO[bytes], *, max_files: int, max_unpacked: int, reserved_ids: set[str],
            allow_unsigned_ingress: bool) -> Archive:
    """Check the archive and its manifest without writing anything."""
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ZipRefused(f"not a valid zip file: {exc}") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise ZipRefused("the zip is empty")
        if len(infos) > max_files:
            raise ZipRefused(f"the zip has {len(infos)} members; at most {max_files} are allowed")
        total = 0
        for info in infos:
            _check_name(info.filename)
            _check_type(info)
            total += info.file_size
        if total > max_unpacked:
            raise ZipRefused(f"the zip unpacks to {total} bytes; at most {max_unpacked} are allowed")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise ZipRefused("the zip holds the same path twice")
        root = _root(names)
        if any(not n.startswith(root) for n in names):
            raise ZipRefused("every zip member must sit under the plugin's top-level directory")
        raw = _read_member(zf, zf.getinfo(root + MANIFEST), MANIFEST_MAX_BYTES)
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ManifestError(MANIFEST, "json", f"is not valid JSON: {exc}") from None
        manifest = parse_manifest(doc, host_version=__version__, reserved_ids=reserved_ids,
                                  allow_unsigned_ingress=allow_unsigned_ingress)
        if root + manifest.main not in names:
            raise ManifestError("main", "missing", f"{manifest.main!r} is not in the zip")
        return Archive(manifest=manifest, root=root, members=tuple(infos))


def extract(file: IO[bytes], archive: Archive, dest: Path, *, max_unpacked: int) -> None:
    """Write the checked members under `dest` (which must exist, empty). Sizes are counted as the
    data is decompressed: a member that inflates past its declared size, or the total past
    `max_unpacked`, stops the extraction (the caller removes `dest`)."""
    total = 0
    with zipfile.ZipFile(file) as zf:
        for info in archive.members:
            rel = info.filename[len(archive.root):]
            if not rel:
                continue
            target = dest / posixpath.normpath(rel)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True, mode=0o755)
                continue
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            written = 0
            with zf.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    total += len(chunk)
                    if written > info.file_size or total > max_unpacked:
                        raise ZipRefused(f"zip member {info.filename!r} inflates past its declared size")
                    out.write(chunk)
            os.chmod(target, 0o644)
    os.chmod(dest, 0o755)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux renameat2); elsewhere, two renames via a third name."""
    libc_name = ctypes.util.find_library("c")
    fn = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (38, 22):  # ENOSYS, EINVAL (kernel or filesystem without the flag)
            raise OSError(err, os.strerror(err), str(a))
    spare = a.with_name(a.name + ".swap")
    os.rename(a, spare)
    os.rename(b, a)
    os.rename(spare, b)


class PluginInstaller:
    """Installs and updates disk plugins on a host, one at a time."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._lock = asyncio.Lock()

    async def install(self, upload: IO[bytes]) -> tuple[PluginEntry, bool]:
        """Install or update from a zip; returns (entry, updated)."""
        host = self._host
        s = host.settings
        async with self._lock:
            archive = await asyncio.to_thread(
                inspect, upload, max_files=s.install_max_files, max_unpacked=s.install_unpacked_max_bytes,
                reserved_ids=host.builtin_ids(), allow_unsigned_ingress=s.allow_unsigned_ingress,
            )
            plugins = s.plugins_path
            plugins.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".install-", dir=plugins))
            try:
                await asyncio.to_thread(extract, upload, archive, staging, max_unpacked=s.install_unpacked_max_bytes)
                manifest = load_manifest(staging, host_version=__version__, reserved_ids=host.builtin_ids(),
                                         allow_unsigned_ingress=s.allow_unsigned_ingress)
                return await self._place(manifest, staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    async def _place(self, manifest: Manifest, staging: Path) -> tuple[PluginEntry, bool]:
        host = self._host
        target = (host.settings.plugins_path / manifest.id).resolve()
        existing = host.manager.entries.get(manifest.id)
        if existing is None:
            if target.exists():
                raise ZipRefused(f"{target.name!r} already exists in the plugins directory but is not loaded; "
                                 "remove it first")
            os.rename(staging, target)
            try:
                return host.load_plugin(target), False
            except Exception:
                shutil.rmtree(target, ignore_errors=True)
                raise
        if existing.builtin:
            raise ManifestError("id", "reserved", f"{manifest.id!r} is reserved by a built-in plugin")
        if existing.record.path:  # update it where it was loaded from, whatever that directory's name
            target = Path(existing.record.path)
        return await self._update(existing, target, staging), True

    async def _update(self, old: PluginEntry, target: Path, staging: Path) -> PluginEntry:
        """Disable the running one, swap directories atomically, reload, re-enable if it was enabled.
        If the new version cannot even be registered, the old directory is swapped back."""
        host = self._host
        was_enabled = old.record.enabled
        if old.status != Status.INSTALLED:  # never enabled: nothing to stop, and it stays `installed`
            await host.manager.disable(old.plugin_id, operator=False)
        _exchange(target, staging)  # staging now holds the old version, removed by the caller
        del host.manager.entries[old.plugin_id]
        try:
            entry = host.load_plugin(target)
        except Exception:
            _exchange(target, staging)
            host.load_plugin(target)
            raise
        if was_enabled:
            with contextlib.suppress(PlugboxError):  # the entry's status and error say what went wrong
                await host.manager.enable(entry.plugin_id)
        return entry

