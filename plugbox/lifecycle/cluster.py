"""Many hosts, one database: keeping this host in step with the others (docs/postgres.md).

Created by the host only when its database is shared (PostgreSQL). Two duties, one owner task each:

- **following changes.** The database tells this host, within about a second of the commit, which
  plugin another host changed (`Database.subscribe`: topic `package` or `registry`, and `RESYNC` when
  announcements may have been missed, which includes the first moment of listening). For each plugin
  named, in order, one at a time: a package stored in the database that this host does not have
  (or has in another version) is installed through this host's own installer, with every check an
  upload gets; a package deleted from the database is uninstalled here; then the registry record is
  applied (`PluginManager.follow`: config, session config, active sessions, enabled or not).
  Changes of other topics (the webhook subscriptions) go to `on_change`, the host's, and so does
  `RESYNC`.
- **session leases.** Each messaging session is owned by exactly one host at a time: the holder of
  its lease (`Database.acquire_leases`, an advisory lock on the holder's connection). Every
  `lease_interval` this host tries to take the leases of the engine's sessions it does not hold;
  the host runs hooks only for the sessions it holds (`owns`), so each inbound message of a session
  is handled once, by its owner. A host that dies drops its connection and with it its leases; the
  next round of a surviving host takes them, so a session moves within one interval (2 s by default)
  of the database noticing.

This module decides nothing about a plugin itself: the manager and the installer do.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable, Collection

from plugbox.errors import PlugboxError
from plugbox.lifecycle import packages as packages_topic
from plugbox.lifecycle import registry as registry_topic
from plugbox.lifecycle.install import PluginInstaller
from plugbox.lifecycle.manager import PluginManager
from plugbox.lifecycle.packages import PackageStore
from plugbox.lifecycle.registry import Registry
from plugbox.storage.db import RESYNC, Change, Database

__all__ = ["Cluster"]

log = logging.getLogger(__name__)


class Cluster:
    def __init__(
        self,
        db: Database,
        manager: PluginManager,
        registry: Registry,
        packages: PackageStore,
        installer: PluginInstaller,
        sessions: Callable[[], Collection[str]],
        *,
        lease_interval_s: float,
        on_change: Callable[[Change], None] | None = None,
    ) -> None:
        self._db = db
        self._manager = manager
        self._registry = registry
        self._packages = packages
        self._installer = installer
        self._sessions = sessions  # the engine's session ids, asked each lease round
        self._lease_interval_s = lease_interval_s
        self._on_change = on_change  # told changes of topics other than plugins', and RESYNC
        self._owned: frozenset[str] = frozenset()
        self._tasks: list[asyncio.Task[None]] = []
        self.followed = 0  # changes applied, for tests and metrics

    def owns(self, session_id: str | None) -> bool:
        """True when this host holds the lease of `session_id` (host-wide events, None, are everyone's)."""
        return session_id is None or session_id in self._owned

    @property
    def owned(self) -> frozenset[str]:
        return self._owned

    async def start(self) -> None:
        """Listen, catch up with what the other hosts did while this one was away (install their
        packages, apply their records), then follow their changes until `stop`. Before the host
        restores its plugins, so a package already in the plugins directory is refreshed while the
        plugin is still stopped, not restarted under load."""
        loop = asyncio.get_running_loop()
        changes: asyncio.Queue[Change] = asyncio.Queue()

        def heard(change: Change) -> None:  # on the database's listener thread
            loop.call_soon_threadsafe(changes.put_nowait, change)

        self._db.subscribe(heard)
        await self._apply(Change(RESYNC, ""))
        self._tasks.append(asyncio.create_task(self._follow_loop(changes), name="plugbox-cluster-follow"))

    async def take_sessions(self) -> None:
        """Take this host's share of the session leases now, and renew it until `stop`. After the
        host restored its plugins: a host runs a session's hooks only once it runs every plugin."""
        await self._lease_round()
        self._tasks.append(asyncio.create_task(self._lease_loop(), name="plugbox-cluster-leases"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- leases --
    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_interval_s)
            await self._lease_round()

    async def _lease_round(self) -> None:
        try:
            held = await self._db.acquire_leases(sorted(self._sessions()))
        except PlugboxError as exc:
            log.warning("session leases not renewed: %s", exc)
            held = set()
        gained, lost = held - self._owned, self._owned - held
        if gained or lost:
            log.info("session leases: now %s (gained %s, lost %s)", sorted(held), sorted(gained), sorted(lost))
        self._owned = frozenset(held)

    # -- following --
    async def _follow_loop(self, changes: asyncio.Queue[Change]) -> None:
        while True:
            await self._apply(await changes.get())

    async def _apply(self, change: Change) -> None:
        if self._on_change is not None and change.topic not in (packages_topic.TOPIC, registry_topic.TOPIC):
            try:
                self._on_change(change)
            except Exception as exc:  # the host's follower failing must not stop following plugins
                log.error("change %s from another host not applied: %s", change, exc)
        if change.topic == RESYNC:
            subjects = set(self._packages.ids()) | {r.plugin_id for r in self._registry.all()}
            subjects |= set(self._installer.digests)
        elif change.topic in (packages_topic.TOPIC, registry_topic.TOPIC):
            subjects = {change.subject}
        else:
            return
        for plugin_id in sorted(subjects):
            try:
                await self.follow(plugin_id)
            except Exception as exc:  # one plugin's trouble must not stop following the rest
                log.error("plugin %s: change from another host not applied: %s", plugin_id, exc)

    async def follow(self, plugin_id: str) -> None:
        """Bring this host's copy of `plugin_id` in line with the database."""
        await self._follow_package(plugin_id)
        if plugin_id not in self._manager:
            return
        record = self._registry.get(plugin_id)
        if record is not None:
            await self._manager.follow(record)
        self.followed += 1

    async def _follow_package(self, plugin_id: str) -> None:
        digest = self._packages.digest(plugin_id)
        known = self._installer.digests.get(plugin_id)
        if digest is None:
            if known is not None and plugin_id in self._manager:  # installed from the database, now gone
                del self._installer.digests[plugin_id]
                await self._manager.uninstall(plugin_id)
                log.info("plugin %s uninstalled: another host removed it", plugin_id)
            return
        if digest == known:
            return
        package = await self._packages.get(plugin_id)
        if package is None:
            return
        archive, digest = package
        await self._installer.install(io.BytesIO(archive), publish=False)
        self._installer.digests[plugin_id] = digest
        log.info("plugin %s installed from the database (sha256 %s)", plugin_id, digest[:12])
