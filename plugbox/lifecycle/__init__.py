"""The plugin lifecycle (SPEC §5), host side: known plugins, their statuses, enable/disable,
failure accounting and restarts, installation, and the immutable views the rest of the host reads.

    status.py    the `Status` enum
    registry.py  persisted records (SQLite/PostgreSQL through `plugbox.storage.db`)
    entry.py     one known plugin, internal to this package
    failures.py  consecutive failures and the circuit breaker, counted once
    manager.py   the lifecycle itself; budgets around every runtime call
    view.py      `PluginView`, the read-only snapshot handed out
    archive.py   checking and extracting an uploaded zip
    install.py   installing and updating disk plugins
    ingress.py   finding an ingress route and running its webhook handler
    clock.py     the injectable clock (restart backoff)

Nothing outside this package reads the manager's entries; `plugbox.host.Host` is its façade.
"""

from plugbox.lifecycle.clock import Clock, SystemClock
from plugbox.lifecycle.status import Status
from plugbox.lifecycle.view import PluginView

__all__ = ["Clock", "PluginView", "Status", "SystemClock"]
