"""The host side of `ctx.net.fetch` (SPEC §8): which URLs and addresses a plugin may reach, and the
fetch service that reaches them over a connection pinned to the checked address.

    addresses   which IP addresses are public; IP literals in every resolver notation
    urls        one URL parser and one canonical host spelling for every check
    allowlist   the plugin's effective allowlist and the operator's exemption list
    fetch       FetchService: the ordered checks, the in-flight cap, body cap and timeout
    _transport  the httpx transport that connects only to checked addresses

Nothing here runs in the worker; the worker has no network at all.
"""

from plugbox.net.addresses import blocked_reason, parse_ip_literal
from plugbox.net.allowlist import HostList, effective_allowlist
from plugbox.net.fetch import FetchPolicy, FetchService

__all__ = ["FetchPolicy", "FetchService", "HostList", "blocked_reason", "effective_allowlist", "parse_ip_literal"]
