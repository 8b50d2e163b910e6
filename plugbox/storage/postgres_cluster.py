"""What hosts sharing one PostgreSQL database use to stay in step: change announcements
(LISTEN/NOTIFY) and leases (session-level advisory locks). Used by `PostgresDatabase` only.

- `Listener`: one thread and one connection per host, `LISTEN plugbox`. Writers announce with
  `pg_notify` inside their transaction, so the announcement leaves only if the write commits, and
  every listener hears it right after. Each payload names the handle that wrote it (`origin`), and a
  handle never hears itself. Whenever the listener (re)connects it reports `RESYNC`: announcements
  sent while it was away are lost, so its subscriber must re-read what it cares about.
- `Leases`: one connection per host holding session-level advisory locks, one per leased name (a
  messaging session). PostgreSQL releases them when that connection ends, so a host that dies (or
  loses the database) loses its leases within the server's notice of the closed socket, and another
  host's next `acquire` takes them. `acquire` also checks the connection is alive: a host that lost
  it learns it holds nothing. Leases are spread: a host holds at most its fair share, the names
  divided by the hosts with a lease connection open (`pg_stat_activity`, by application name), and
  gives back what it holds past that, so a host that joins takes its share within two rounds. The
  application name also carries the host's id (`plugbox-lease/<host id>`), so the open lease
  connections say which hosts are up (`PostgresDatabase.live_hosts`).

Neither knows what a plugin or a session is: names and subjects are plain strings.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from plugbox.storage.db import RESYNC, Change

__all__ = ["CHANNEL", "LEASE_APPLICATION", "Leases", "Listener", "notify_payload"]

log = logging.getLogger(__name__)

CHANNEL = "plugbox"
LEASE_APPLICATION = "plugbox-lease"  # names lease connections, so hosts can count each other
_POLL_S = 0.25  # how often the listener looks at its stop flag; notifications arrive at once anyway
_RECONNECT_S = 1.0


def notify_payload(origin: str, topic: str, subject: str) -> str:
    return json.dumps({"o": origin, "t": topic, "s": subject}, separators=(",", ":"))


class Listener:
    """A daemon thread telling `callback` every other handle's announcements (see module docstring)."""

    def __init__(self, url: str, origin: str, callback: Callable[[Change], None]) -> None:
        self._url = url
        self._origin = origin
        self._callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plugbox-db-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._tell(Change(RESYNC, ""))
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=_POLL_S):
                            self._heard(note.payload)
            except psycopg.Error as exc:
                log.warning("database listener lost its connection (%s); reconnecting", exc)
                self._stop.wait(_RECONNECT_S)

    def _heard(self, payload: str) -> None:
        try:
            doc: Any = json.loads(payload)
            origin, topic, subject = str(doc["o"]), str(doc["t"]), str(doc["s"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed database announcement (%d chars)", len(payload))
            return
        if origin != self._origin:
            self._tell(Change(topic, subject))

    def _tell(self, change: Change) -> None:
        try:
            self._callback(change)
        except Exception:  # the subscriber's bug must not end the listener
            log.exception("database change subscriber failed on %s", change)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Leases:
    """Advisory-lock leases held by one connection. Not thread-safe: call from one thread."""

    def __init__(self, url: str, key: Callable[[object], int], host_id: str = "") -> None:
        self._url = url
        self._key = key
        # At most 63 bytes reach the server; settings.HOST_ID_PATTERN keeps the id short enough.
        self._application = f"{LEASE_APPLICATION}/{host_id}" if host_id else LEASE_APPLICATION
        self._conn: psycopg.Connection[Any] | None = None
        self.held: set[str] = set()

    def acquire(self, names: Iterable[str]) -> set[str]:
        """Give back the leases held past this host's fair share of `names` (and those of names no
        longer wanted), try to take free ones up to it; return the names held now (none if the
        database is unreachable: whatever this host held may be someone else's by now)."""
        wanted = sorted(set(names))
        try:
            conn = self._connection()
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE (application_name = %s OR application_name LIKE %s) "
                "AND datname = current_database()",
                (LEASE_APPLICATION, f"{LEASE_APPLICATION}/%"),
            ).fetchone()
            hosts = max(1, int(row[0]) if row is not None else 1)
            share = -(-len(wanted) // hosts)
            keep = [n for n in sorted(self.held) if n in wanted][:share]
            for name in sorted(self.held - set(keep)):
                self.release(name)
            for name in wanted:
                if len(self.held) >= share:
                    break
                if name not in self.held:
                    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key(("lease", name)),)).fetchone()
                    if got is not None and got[0]:
                        self.held.add(name)
        except psycopg.Error as exc:
            log.warning("lease connection lost (%s): holding no lease until it is back", exc)
            self._drop()
        return set(self.held)

    def release(self, name: str) -> None:
        if name in self.held and self._conn is not None:
            self.held.discard(name)
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key(("lease", name)),))
            except psycopg.Error:
                self._drop()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self.held.clear()
            self._conn = psycopg.connect(self._url, autocommit=True, application_name=self._application)
        return self._conn

    def _drop(self) -> None:
        self.held.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop()
