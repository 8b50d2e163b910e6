"""Ingress instances an operator creates for a plugin (OpenWA's plugin instances): one more path
`/api/ingress/{plugin}/{instance}/{route}` per external account, each checked against its OWN secrets.

An instance is a row in `ingress_instances`: its id (unique within the plugin), an optional session
it is bound to (the `sessionId` its deliveries carry), the secrets the plugin's routes verify with
(keyed by the manifest's `secretField`/`tokenField` names, set by the operator, never taken from a
schema default or from the plugin's base config) and a description. A route's signature on an
instance is checked against that instance's secrets only: a request signed with `default`'s secret,
or another instance's, is refused. Deleting the row makes its paths answer 404 like any unknown one.

Reads come from a cache of each plugin's instances, loaded on first need: an ingress request, which
anyone may send with any instance id, never costs a database round trip on the event loop. Every
write drops its plugin's entry once committed, so on one host a deleted instance answers 404 from
the delete's answer on; on a database several hosts share, the write also announces `TOPIC`, and
the other hosts drop theirs when told (`follow`, within about a second; everything on a resync).
Creation counts the plugin's rows and inserts in one write owned by the plugin, so the bound holds
across hosts too.

This module owns the table, the checks on an operator's request and the API's masked view; it must
not verify signatures (`plugbox.api.ingress`) or decide which instance a path names
(`plugbox.lifecycle.ingress`, through the host).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from plugbox.errors import ConfigError, InstanceConflict
from plugbox.manifest import IngressRoute
from plugbox.storage.db import Connection, Database

__all__ = ["INSTANCE_ID", "MASK", "TOPIC", "IngressInstance", "InstanceSpec", "InstanceStore", "parse_spec",
           "parse_update", "secret_fields"]

# Path-safe (one URL segment, never rewritten by normalisation) and bounded; the same rule a session
# instance id meets, so a URL that reaches the handler always fits one.
INSTANCE_ID = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]{0,127}", re.ASCII)
RESERVED_IDS = frozenset({"default"})
MASK = "********"
TOPIC = "ingress_instances"  # what a change announces to other hosts on a shared database (subject: plugin id)
_DESCRIPTION_MAX_CHARS = 512
_FIELDS = ("id", "sessionId", "secrets", "description")
_WHSEC = "whsec_"


class IngressInstance(msgspec.Struct, frozen=True, kw_only=True):
    """One stored instance. `secrets` maps a manifest secret field name to its value; it never
    leaves the host through the API (`public` masks it)."""

    plugin_id: str
    id: str
    session_id: str | None
    secrets: dict[str, str]
    description: str
    created_at: float

    def config(self) -> dict[str, Any]:
        """The instance's secrets shaped as a config document (dotted field names nested), which is
        what a route's signature and challenge read their secret from. Nothing else of the plugin's
        config is in it: a route verifies with this instance's secret or not at all."""
        out: dict[str, Any] = {}
        for path, value in self.secrets.items():
            node = out
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out

    def public(self, routes: Sequence[IngressRoute]) -> dict[str, Any]:
        """The API's view: secrets masked, and the path of each of the plugin's routes on it."""
        return {"id": self.id, "pluginId": self.plugin_id, "sessionId": self.session_id,
                "secrets": dict.fromkeys(sorted(self.secrets), MASK), "description": self.description,
                "createdAt": self.created_at,
                "routes": {r.route: f"/api/ingress/{self.plugin_id}/{self.id}/{r.route}" for r in routes}}


class InstanceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A checked create request."""

    id: str
    session_id: str | None
    secrets: dict[str, str]
    description: str


def secret_fields(routes: Sequence[IngressRoute]) -> dict[str, frozenset[str]]:
    """Every secret field the plugin's routes read (signature `secretField`, challenge `tokenField`),
    each with the signature schemes that use it (empty for a challenge token)."""
    out: dict[str, set[str]] = {}
    for route in routes:
        if route.signature.secret_field is not None:
            out.setdefault(route.signature.secret_field, set()).add(route.signature.scheme)
        if route.challenge is not None:
            out.setdefault(route.challenge.token_field, set())
    return {name: frozenset(schemes) for name, schemes in out.items()}


def parse_spec(doc: Any, *, routes: Sequence[IngressRoute], sessions: Sequence[str], new_id: str,
               secret_max_chars: int, current: Mapping[str, str] | None = None) -> InstanceSpec:
    """Check an operator's `{"id"?, "sessionId"?, "secrets", "description"?}` against the plugin's
    manifest; ConfigError names the field at fault. `new_id` is used when the request names none."""
    if not isinstance(doc, Mapping):
        raise ConfigError("body", "must be a JSON object")
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise ConfigError(str(unknown[0]), f"unknown field; expected some of {', '.join(_FIELDS)}")
    instance_id = doc.get("id", new_id)
    if not isinstance(instance_id, str) or not INSTANCE_ID.fullmatch(instance_id):
        raise ConfigError("id", "must be 1..128 letters, digits or '.', '_', '@', '-', not starting with '.'")
    if instance_id in RESERVED_IDS:
        raise ConfigError("id", f"{instance_id!r} is the plugin's base config, not an instance an operator creates")
    session = doc.get("sessionId")
    if session is not None:
        if not isinstance(session, str) or not INSTANCE_ID.fullmatch(session):
            raise ConfigError("sessionId", "must be a session id (1..128 letters, digits, '.', '_', '@', '-')")
        if "*" not in sessions and session not in sessions:
            raise ConfigError("sessionId", f"the plugin's manifest does not allow session {session!r}")
    description = doc.get("description", "")
    if not isinstance(description, str) or len(description) > _DESCRIPTION_MAX_CHARS:
        raise ConfigError("description", f"must be a string of at most {_DESCRIPTION_MAX_CHARS} characters")
    return InstanceSpec(id=instance_id, session_id=session, description=description,
                        secrets=_secrets(doc.get("secrets"), secret_fields(routes), secret_max_chars, current))


def parse_update(doc: Any, current: IngressInstance, *, routes: Sequence[IngressRoute], sessions: Sequence[str],
                 secret_max_chars: int) -> InstanceSpec:
    """Check an operator's change to `current`: the fields given replace the stored ones (`id` cannot
    change). In `secrets`, a value sets that secret (rotation), `********` or an absent name keeps
    it, `null` removes it; at least one must remain."""
    if not isinstance(doc, Mapping):
        raise ConfigError("body", "must be a JSON object")
    if "id" in doc and doc["id"] != current.id:
        raise ConfigError("id", "an instance's id is its path and cannot change; create another instance")
    merged = {"id": current.id, "sessionId": doc.get("sessionId", current.session_id),
              "description": doc.get("description", current.description),
              "secrets": doc.get("secrets", {}), **{k: v for k, v in doc.items() if k not in _FIELDS}}
    return parse_spec(merged, routes=routes, sessions=sessions, new_id=current.id,
                      secret_max_chars=secret_max_chars, current=current.secrets)


def _secrets(value: Any, fields: Mapping[str, frozenset[str]], max_chars: int,
             current: Mapping[str, str] | None = None) -> dict[str, str]:
    names = ", ".join(sorted(fields)) or "none: its routes are unsigned"
    if not isinstance(value, Mapping):
        raise ConfigError("secrets", f"must be an object of secrets; the plugin's routes read: {names}")
    out: dict[str, str] = dict(current or {})
    for name, secret in value.items():
        where = f"secrets.{name}"
        if name not in fields:
            raise ConfigError(where, f"no ingress route of the plugin reads this secret; they read: {names}")
        if secret == MASK:  # what a read shows: keeps a stored secret, and is never one itself
            if current is None or name not in current:
                raise ConfigError(where, "is not set: send the secret itself, not the mask")
            continue
        if current is not None and secret is None:
            out.pop(name, None)
            continue
        if not isinstance(secret, str) or not 1 <= len(secret) <= max_chars or not secret.isprintable():
            raise ConfigError(where, f"must be 1..{max_chars} printable characters")
        if "standard-webhooks" in fields[name] and secret.startswith(_WHSEC):
            try:
                base64.b64decode(secret[len(_WHSEC):], validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(where, "a whsec_ secret must be base64 after the prefix") from None
        out[name] = secret
    if not out:
        raise ConfigError("secrets", f"must hold at least one secret; the plugin's routes read: {names}")
    return out


T = TypeVar("T")
_COLUMNS = "plugin_id, id, session_id, secrets, description, created_at"


def _instance(row: Sequence[Any]) -> IngressInstance:
    plugin_id, instance_id, session_id, secrets, description, created_at = row
    return IngressInstance(plugin_id=str(plugin_id), id=str(instance_id),
                           session_id=None if session_id is None else str(session_id),
                           secrets=msgspec.json.decode(str(secrets), type=dict[str, str]),
                           description=str(description), created_at=float(created_at))


class InstanceStore:
    """The `ingress_instances` table. `per_plugin` bounds the rows of one plugin."""

    def __init__(self, db: Database, *, per_plugin: int) -> None:
        self._db = db
        self._per_plugin = per_plugin
        # plugin id -> its instances in creation order. Callers ask only for plugins that exist (the
        # API and the ingress route check first), so this holds at most plugins x per_plugin rows.
        self._cache: dict[str, dict[str, IngressInstance]] = {}

    def get(self, plugin_id: str, instance_id: str) -> IngressInstance | None:
        return self._of(plugin_id).get(instance_id)

    def list(self, plugin_id: str) -> list[IngressInstance]:
        return list(self._of(plugin_id).values())

    def follow(self, plugin_id: str | None) -> None:
        """Another host changed `plugin_id`'s instances (None: maybe anyone's): read them again."""
        if plugin_id is None:
            self._cache.clear()
        else:
            self._cache.pop(plugin_id, None)

    def _of(self, plugin_id: str) -> dict[str, IngressInstance]:
        cached = self._cache.get(plugin_id)
        if cached is None:
            rows = self._db.read(lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM ingress_instances WHERE plugin_id = ? ORDER BY created_at, id",
                (plugin_id,)).fetchall())
            cached = self._cache[plugin_id] = {i.id: i for i in map(_instance, rows)}
        return cached

    async def _write(self, plugin_id: str, fn: Callable[[Connection], T]) -> T:
        def run(c: Connection) -> T:
            out = fn(c)
            self._db.announce(c, TOPIC, plugin_id)
            return out

        try:
            return await self._db.write(run, owner=plugin_id)
        finally:
            self._cache.pop(plugin_id, None)  # after the commit: the next read sees it

    async def create(self, plugin_id: str, spec: InstanceSpec) -> IngressInstance:
        """Store a new instance; InstanceConflict when the id is taken or the plugin holds its bound."""
        instance = IngressInstance(plugin_id=plugin_id, id=spec.id, session_id=spec.session_id,
                                   secrets=dict(spec.secrets), description=spec.description,
                                   created_at=time.time())

        def run(c: Connection) -> None:
            if c.execute("SELECT 1 FROM ingress_instances WHERE plugin_id = ? AND id = ?",
                         (plugin_id, spec.id)).fetchone() is not None:
                raise InstanceConflict(f"plugin {plugin_id!r} already has an ingress instance {spec.id!r}")
            (count,) = c.execute("SELECT count(*) FROM ingress_instances WHERE plugin_id = ?",
                                 (plugin_id,)).fetchone()
            if int(count) >= self._per_plugin:
                raise InstanceConflict(f"plugin {plugin_id!r} has {count} ingress instances, the most "
                                       f"ingress_instances_per_plugin ({self._per_plugin}) allows; delete one first")
            c.execute(f"INSERT INTO ingress_instances ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                      (plugin_id, instance.id, instance.session_id, msgspec.json.encode(instance.secrets).decode(),
                       instance.description, instance.created_at))

        await self._write(plugin_id, run)
        return instance

    async def update(self, plugin_id: str, spec: InstanceSpec) -> IngressInstance | None:
        """Replace the session, secrets and description of instance `spec.id`; None when it is gone."""
        def run(c: Connection) -> bool:
            return c.execute("UPDATE ingress_instances SET session_id = ?, secrets = ?, description = ? "
                             "WHERE plugin_id = ? AND id = ?",
                             (spec.session_id, msgspec.json.encode(spec.secrets).decode(), spec.description,
                              plugin_id, spec.id)).rowcount > 0

        if not await self._write(plugin_id, run):
            return None
        return self.get(plugin_id, spec.id)

    async def delete(self, plugin_id: str, instance_id: str) -> bool:
        def run(c: Connection) -> bool:
            return c.execute("DELETE FROM ingress_instances WHERE plugin_id = ? AND id = ?",
                             (plugin_id, instance_id)).rowcount > 0

        return await self._write(plugin_id, run)

    async def drop_plugin(self, plugin_id: str) -> None:
        """Forget every instance of an uninstalled plugin."""
        await self._write(plugin_id, lambda c: c.execute("DELETE FROM ingress_instances WHERE plugin_id = ?",
                                                         (plugin_id,)))
