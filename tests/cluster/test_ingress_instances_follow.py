"""Many hosts, one PostgreSQL database: an ingress instance created, rotated or deleted through one
host is served that way by the others within about a second (each host caches a plugin's instances
so that an ingress request costs no database round trip; a change announces itself)."""

from __future__ import annotations

from plugbox.host import Host
from plugbox.ingress.instances import InstanceSpec
from tests.conftest import within


def _secret(host: Host) -> str | None:
    found = host.ingress_instances.get("w", "acme")
    return None if found is None else found.secrets["webhookSecret"]


async def test_an_instance_changed_on_one_host_is_served_so_by_the_others(two_hosts: tuple[Host, Host]) -> None:
    a, b = two_hosts
    assert _secret(b) is None  # cached: b now holds "no instances" for the plugin

    spec = InstanceSpec(id="acme", session_id=None, secrets={"webhookSecret": "one"}, description="")
    await a.ingress_instances.create("w", spec)
    took = await within(lambda: _secret(b) == "one", seconds=2.0)
    print(f"a new instance served by the other host after {took:.2f} s")

    await b.ingress_instances.update("w", InstanceSpec(id="acme", session_id=None,
                                                       secrets={"webhookSecret": "two"}, description=""))
    assert _secret(b) == "two"  # the writing host at once
    await within(lambda: _secret(a) == "two", seconds=2.0)

    await a.ingress_instances.delete("w", "acme")
    assert _secret(a) is None
    await within(lambda: _secret(b) is None, seconds=2.0)
