"""Installing and updating disk plugins from a zip (SPEC §9 "install"), one at a time.

The archive is checked whole before a byte is written (`plugbox.lifecycle.archive`), extracted
into a hidden staging directory inside the plugins dir (`discover` skips dot-directories, and the
final rename stays on one filesystem), then renamed into place; an update disables the running
version, swaps the directories atomically, registers the new version and re-enables it if the
operator had it enabled. A new version that cannot even be registered is swapped back out. On a
shared database the accepted zip is also stored in it, for the other hosts (`lifecycle.packages`).

`fetch_archive` gets the zip for an install from a URL: through `FetchService.download`, so the
same URL rules, public-address check, pinned connection and refusal of redirects as `net.fetch`,
capped at `install_zip_max_bytes`, and checked against a sha256 pin when the operator gives one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from plugbox import __version__
from plugbox.errors import (
    CapabilityError,
    CapabilityTimeout,
    DownloadError,
    FetchRefused,
    ManifestError,
    PlugboxError,
    ZipRefused,
)
from plugbox.lifecycle.archive import ZipLimits, check_archive, exchange, extract
from plugbox.lifecycle.entry import PluginEntry
from plugbox.lifecycle.manager import PluginManager
from plugbox.lifecycle.packages import PackageStore
from plugbox.lifecycle.status import Status
from plugbox.manifest import Manifest, load_manifest
from plugbox.net.fetch import FetchService
from plugbox.settings import Settings

__all__ = ["PluginInstaller", "fetch_archive"]

_ARCHIVE_OWNER = "<install>"  # whose share of the fetch slots a download takes


async def fetch_archive(fetch: FetchService, settings: Settings, url: str, sha256: str | None = None) -> bytes:
    """The archive at `url`, or DownloadError saying which rule refused it (and with which status)."""
    try:
        data = await fetch.download(url, max_bytes=settings.install_zip_max_bytes,
                                    timeout_ms=settings.install_url_timeout_ms, owner=_ARCHIVE_OWNER)
    except CapabilityTimeout as exc:
        raise DownloadError(_reworded(exc), 504) from None
    except FetchRefused as exc:  # the URL or its address: the operator's request is at fault
        raise DownloadError(_reworded(exc), 400) from None
    except CapabilityError as exc:  # the server it names failed, answered badly or sent too much
        raise DownloadError(_reworded(exc), 502) from None
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(got, sha256.lower()):
            raise DownloadError(f"install from URL: the archive's sha256 is {got}, the pin says {sha256.lower()}")
    return data


def _reworded(exc: CapabilityError) -> str:
    return "install from URL: " + str(exc).removeprefix("net.fetch: ")


class PluginInstaller:
    def __init__(
        self, manager: PluginManager, load: Callable[[Path], PluginEntry], packages: PackageStore | None = None
    ) -> None:
        self._manager = manager
        self._load = load  # validate and register a plugin directory (the host's `load_plugin`)
        self._packages = packages  # a shared database's package table: every host can then run it
        self._lock = asyncio.Lock()
        self.digests: dict[str, str] = {}  # plugin id -> SHA-256 of the package installed from/to the database

    async def install(self, upload: IO[bytes], *, publish: bool = True) -> tuple[PluginEntry, bool]:
        """Install or update from a zip; returns (entry, updated). With a package store and
        `publish`, the accepted zip is stored for the other hosts (`lifecycle.packages`); a host
        installing what another published passes publish=False."""
        entry, updated = await self._install(upload)
        if self._packages is not None and publish:
            upload.seek(0)
            archive = await asyncio.to_thread(upload.read, self._manager.settings.install_zip_max_bytes + 1)
            self.digests[entry.plugin_id] = await self._packages.put(entry.plugin_id, archive)
        return entry, updated

    async def _install(self, upload: IO[bytes]) -> tuple[PluginEntry, bool]:
        s = self._manager.settings
        async with self._lock:
            archive = await asyncio.to_thread(
                check_archive, upload, ZipLimits(s.install_max_files, s.install_unpacked_max_bytes,
                                                 s.install_max_depth, s.install_max_ratio),
                reserved_ids=self._manager.builtin_ids(), allow_unsigned_ingress=s.allow_unsigned_ingress,
            )
            plugins = s.plugins_path
            plugins.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".install-", dir=plugins))
            try:
                await asyncio.to_thread(extract, upload, archive, staging, max_unpacked=s.install_unpacked_max_bytes)
                manifest = load_manifest(staging, host_version=__version__, reserved_ids=self._manager.builtin_ids(),
                                         allow_unsigned_ingress=s.allow_unsigned_ingress)
                return await self._place(manifest, staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    async def _place(self, manifest: Manifest, staging: Path) -> tuple[PluginEntry, bool]:
        target = (self._manager.settings.plugins_path / manifest.id).resolve()
        if manifest.id not in self._manager:
            if target.exists():
                raise ZipRefused(f"{target.name!r} already exists in the plugins directory but is not loaded; "
                                 "remove it first")
            os.rename(staging, target)
            try:
                return self._load(target), False
            except Exception:
                shutil.rmtree(target, ignore_errors=True)
                raise
        existing = self._manager.get(manifest.id)
        if existing.builtin:
            raise ManifestError("id", "reserved", f"{manifest.id!r} is reserved by a built-in plugin")
        if existing.record.path:  # update it where it was loaded from, whatever that directory's name
            target = Path(existing.record.path)
        return await self._update(existing, target, staging), True

    async def _update(self, old: PluginEntry, target: Path, staging: Path) -> PluginEntry:
        """Disable the running one, swap directories atomically, reload, re-enable if it was enabled.
        If the new version cannot even be registered, the old directory is swapped back."""
        manager = self._manager
        was_enabled = old.record.enabled
        if old.status != Status.INSTALLED:  # never enabled: nothing to stop, and it stays `installed`
            await manager.disable(old.plugin_id, operator=False)
        exchange(target, staging)  # staging now holds the old version, removed by the caller
        manager.forget(old.plugin_id)
        try:
            entry = self._load(target)
        except Exception:
            exchange(target, staging)
            self._load(target).logs.continue_from(old.logs)
            raise
        entry.logs.continue_from(old.logs)  # the log history outlives the version
        entry.logs.emit("info", f"updated from version {old.manifest.version} to {entry.manifest.version}")
        if was_enabled:
            with contextlib.suppress(PlugboxError):  # the entry's status and error say what went wrong
                await manager.enable(entry.plugin_id)
        return entry
