"""The ingress instance store on both backends, and the checks on an operator's request: an instance
is durable, keeps its own secrets, is bounded per plugin in the same transaction as the insert, and
goes with its plugin; a request names the field at fault."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plugbox.errors import ConfigError, InstanceConflict
from plugbox.ingress.instances import IngressInstance, InstanceSpec, InstanceStore, parse_spec
from plugbox.manifest import IngressRoute, parse_manifest
from plugbox.storage.db import Database

SCHEMA = {"type": "object", "properties": {
    "webhookSecret": {"type": "string", "secret": True},
    "whSecret": {"type": "string", "secret": True},
    "provider": {"type": "object", "properties": {"token": {"type": "string", "secret": True}}}}}
ROUTES = [
    {"route": "hmac", "signature": {"scheme": "hmac-sha256", "header": "X-Signature"}},
    {"route": "std", "signature": {"scheme": "standard-webhooks", "secretField": "whSecret"}},
    {"route": "nested", "signature": {"scheme": "shared-secret", "header": "X-Token", "secretField": "provider.token"}},
]


def _routes() -> tuple[IngressRoute, ...]:
    doc = {"id": "p", "name": "p", "version": "1.0.0", "type": "extension", "main": "main.py",
           "permissions": ["webhook:ingress"], "configSchema": SCHEMA, "ingress": ROUTES, "sessions": ["s1", "s2"]}
    return parse_manifest(doc, host_version="1.0.0").ingress


def _parse(doc: Any) -> InstanceSpec:
    return parse_spec(doc, routes=_routes(), sessions=["s1", "s2"], new_id="inst-generated", secret_max_chars=64)


def _spec(instance_id: str, secret: str = "s") -> InstanceSpec:
    return InstanceSpec(id=instance_id, session_id=None, secrets={"webhookSecret": secret}, description="")


def test_a_dotted_secret_field_is_shaped_as_the_config_a_route_reads() -> None:
    spec = _parse({"secrets": {"provider.token": "t", "webhookSecret": "w"}})
    assert spec.id == "inst-generated"
    instance = IngressInstance(plugin_id="p", id=spec.id, session_id=None, secrets=spec.secrets, description="",
                               created_at=0.0)
    assert instance.config() == {"provider": {"token": "t"}, "webhookSecret": "w"}


@pytest.mark.parametrize(("doc", "field"), [
    ({"secrets": {"webhookSecret": "s"}, "sessionId": "s3"}, "sessionId"),
    ({"secrets": {"webhookSecret": "x" * 65}}, "secrets.webhookSecret"),
    ({"secrets": {"whSecret": "whsec_not*base64"}}, "secrets.whSecret"),
    ({"secrets": {"webhookSecret": "s"}, "description": 3}, "description"),
    ({"secrets": {"webhookSecret": 7}}, "secrets.webhookSecret"),
    ([], "body"),
])
def test_a_bad_request_names_its_field(doc: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(doc)
    assert info.value.field == field


def test_a_session_the_manifest_allows_is_bound() -> None:
    assert _parse({"secrets": {"webhookSecret": "s"}, "sessionId": "s2"}).session_id == "s2"


async def test_an_instance_is_durable_and_keeps_its_own_secrets(make_database: Callable[[], Database]) -> None:
    store = InstanceStore(make_database(), per_plugin=10)
    await store.create("p", _spec("acme", "acme-secret"))
    await store.create("p", _spec("globex", "globex-secret"))
    await store.create("q", _spec("acme", "q-secret"))  # ids are per plugin
    reopened = InstanceStore(make_database(), per_plugin=10)  # a restart, or another host on the database
    acme = reopened.get("p", "acme")
    assert acme is not None and acme.secrets == {"webhookSecret": "acme-secret"}
    assert [i.id for i in reopened.list("p")] == ["acme", "globex"]
    other = reopened.get("q", "acme")
    assert other is not None and other.secrets == {"webhookSecret": "q-secret"}


async def test_the_bound_and_a_taken_id_are_refused_in_the_write(any_db: Database) -> None:
    store = InstanceStore(any_db, per_plugin=2)
    await store.create("p", _spec("a"))
    with pytest.raises(InstanceConflict, match="already has an ingress instance 'a'"):
        await store.create("p", _spec("a", "other"))
    await store.create("p", _spec("b"))
    with pytest.raises(InstanceConflict, match=r"ingress_instances_per_plugin \(2\)"):
        await store.create("p", _spec("c"))
    await store.create("q", _spec("c"))  # the bound is each plugin's own
    assert [i.id for i in store.list("p")] == ["a", "b"]
    first = store.get("p", "a")
    assert first is not None and first.secrets == {"webhookSecret": "s"}


async def test_delete_and_uninstall_forget_instances(any_db: Database) -> None:
    store = InstanceStore(any_db, per_plugin=10)
    for name in ("a", "b"):
        await store.create("p", _spec(name))
    await store.create("q", _spec("a"))
    assert await store.delete("p", "a") is True
    assert await store.delete("p", "a") is False
    assert store.get("p", "a") is None
    await store.drop_plugin("p")
    assert store.list("p") == [] and store.get("q", "a") is not None


async def test_an_update_replaces_the_secrets_durably(make_database: Callable[[], Database]) -> None:
    store = InstanceStore(make_database(), per_plugin=10)
    await store.create("p", _spec("a", "old"))
    changed = InstanceSpec(id="a", session_id="s1", secrets={"webhookSecret": "new"}, description="d")
    updated = await store.update("p", changed)
    assert updated is not None and (updated.secrets, updated.session_id) == ({"webhookSecret": "new"}, "s1")
    again = InstanceStore(make_database(), per_plugin=10).get("p", "a")
    assert again is not None and again.secrets == {"webhookSecret": "new"} and again.description == "d"
    assert await store.update("p", _spec("missing")) is None


async def test_a_host_reads_anothers_change_once_told(make_database: Callable[[], Database]) -> None:
    mine, other = InstanceStore(make_database(), per_plugin=10), InstanceStore(make_database(), per_plugin=10)
    assert other.get("p", "a") is None  # cached
    await mine.create("p", _spec("a", "s"))
    assert mine.get("p", "a") is not None  # the writer's own cache is dropped at the commit
    other.follow("p")
    assert other.get("p", "a") is not None
    await mine.delete("p", "a")
    other.follow(None)  # a resync: everything is read again
    assert other.get("p", "a") is None
