"""Claims on queued rows that several hosts may hand over (SPEC: PostgreSQL and many hosts): the
two statements the webhook and ingress delivery queues share, renewing and releasing one host's
claims on their `claimed_by` / `claimed_until` columns. Claiming itself stays with each queue: what
is due differs between them. Only on a shared database; a single host claims nothing."""

from __future__ import annotations

from collections.abc import Iterable

from plugbox.storage.db import Database

__all__ = ["release_claims", "renew_claims"]


async def renew_claims(db: Database, table: str, holder: str, pending: str, ids: Iterable[str],
                       until: float) -> None:
    """Extend `holder`'s claims on the `pending` rows `ids` of `table` to `until`."""
    wanted = tuple(ids)
    if not db.shared or not wanted:
        return
    await db.write(lambda c: c.execute(
        f"UPDATE {table} SET claimed_until = ? WHERE claimed_by = ? AND state = ? "
        f"AND id IN ({', '.join('?' * len(wanted))})", (until, holder, pending, *wanted)))


async def release_claims(db: Database, table: str, holder: str) -> None:
    """Give up every claim of `holder` on `table` (its host stops): other hosts may take those rows at once."""
    if db.shared:
        await db.write(lambda c: c.execute(
            f"UPDATE {table} SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?", (holder,)))
