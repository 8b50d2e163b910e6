"""The capability router: the single entry through which both tiers reach host services.

`CapabilityRouter.invoke(caller, verb, args)`, the one entry point: look the verb up in the allowlist, check the
permission, validate the arguments, check the session scope, then call the service under the
verb's timeout. Every refusal is a CapabilityError whose message names the verb and the
permission, argument or session at fault; host-service errors are translated, never leaked raw.

A worker's arguments arrive encoded (`msgspec.Raw`, straight from its frame) and are decoded
into the verb's argument Struct and nothing else, so what decoding them costs is bounded by that
schema; a built-in's are encoded first, so both tiers are validated alike. A value the host only
stores and hands back stays encoded end to end (`storage.set`, `storage.get`): a worker gets it
as it was stored, a built-in decoded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from plugbox.capabilities.metered import Charge, metered
from plugbox.capabilities.services import Caller, Services
from plugbox.capabilities.verbs import VERBS, Verb
from plugbox.errors import (
    CapabilityError,
    CapabilityTimeout,
    EngineError,
    PermissionDenied,
    PlainDataError,
    SendVetoed,
    StorageError,
)
from plugbox.permissions import check_permission, check_session
from plugbox.plain import check_plain
from plugbox.protocol import encoded, value_decoder

__all__ = ["Caller", "CapabilityRouter", "Services"]

log = logging.getLogger("plugbox.capabilities")


class CapabilityRouter:
    def __init__(
        self,
        services: Services,
        *,
        timeout: float,
        send_factor: int,
        verbs: dict[str, Verb] = VERBS,
        on_call: Callable[[str, str, str], None] | None = None,
        on_denied: Callable[[str, str], None] | None = None,
    ) -> None:
        self.services = services
        self._timeout = timeout
        self._send_timeout = timeout * send_factor
        self._verbs = verbs
        self._decoders = {name: value_decoder(verb.args) for name, verb in verbs.items()}
        self.on_call = on_call  # told (plugin id, verb, outcome) of every call; None: nobody counts
        self._on_denied = on_denied  # told (plugin id, message) of every refusal for a missing permission

    def verb_names(self) -> list[str]:
        return sorted(self._verbs)

    def is_sync(self, verb_name: str) -> bool:
        """True for a verb whose handler never waits: `invoke` answers it before returning."""
        verb = self._verbs.get(verb_name)
        return verb is not None and verb.sync

    def invoke(self, caller: Caller, verb_name: str, args: Any, *, charge: Charge | None = None) -> asyncio.Future[Any]:
        """Check and run one capability call; the future of its answer (a CapabilityError, or
        CapabilityTimeout once the verb's timeout has passed, on refusal or failure).

        A verb that never waits is run before this returns, so its future is already settled and a
        caller that cannot afford a task (the bridge, inside its read callback) answers it inline;
        any other verb runs as a task, which copies the caller's context. With `charge`, that task
        tells it the loop time of each of its steps (the bridge charges it to the worker's CPU
        bucket: the time of an inline verb is already inside the read batch it charges)."""
        loop = asyncio.get_running_loop()
        try:
            wire = type(args) is msgspec.Raw  # a worker's: it takes encoded values back as they are
            verb, parsed = self._check(caller, verb_name, args if wire else _encode_args(verb_name, args))
            if not verb.sync:
                run = self._run_counted(caller, verb, parsed, wire)
                return loop.create_task(run if charge is None else metered(run, charge))
            fut: asyncio.Future[Any] = loop.create_future()
            result = self._run_now(caller, verb, parsed)
            fut.set_result(result if wire or not verb.encoded else _decoded(result))
        except CapabilityError as exc:
            outcome = "error"
            if isinstance(exc, PermissionDenied):
                outcome = "denied"
                if self._on_denied is not None:
                    self._on_denied(caller.plugin_id, str(exc))
            self._count(caller, verb_name, outcome)
            fut = loop.create_future()
            fut.set_exception(exc)
            return fut
        self._count(caller, verb_name, "ok")
        return fut

    def _count(self, caller: Caller, verb_name: Any, outcome: str) -> None:
        if self.on_call is not None:
            self.on_call(caller.plugin_id, self._label(verb_name), outcome)

    async def _run_counted(self, caller: Caller, verb: Verb, parsed: Any, wire: bool) -> Any:
        outcome = "error"
        try:
            result = await self._run(caller, verb, parsed)
            outcome = "ok"
            return result if wire or not verb.encoded else _decoded(result)
        except CapabilityTimeout:
            outcome = "timeout"
            raise
        finally:
            self._count(caller, verb.name, outcome)

    def _label(self, verb_name: Any) -> str:
        """The verb as counted: its name if allowlisted, else "unknown" (any type may arrive here)."""
        return verb_name if isinstance(verb_name, str) and verb_name in self._verbs else "unknown"

    def _check(self, caller: Caller, verb_name: Any, args: msgspec.Raw) -> tuple[Verb, Any]:
        """Allowlist, permission, argument schema, session scope — before any service is touched."""
        verb = self._verbs.get(verb_name) if isinstance(verb_name, str) else None
        if verb is None:
            raise CapabilityError(f"unknown capability verb {str(verb_name)[:64]!r}")
        check_permission(caller.plugin_id, caller.permissions, verb.permission, verb.name)
        try:
            parsed: Any = self._decoders[verb.name].decode(args)
        except msgspec.ValidationError as exc:
            raise CapabilityError(f"{verb.name}: invalid argument: {_name_arg(str(exc))}") from None
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:  # ValueError: an extension type
            raise CapabilityError(f"{verb.name}: undecodable arguments: {str(exc)[:200]}") from None
        if verb.session_arg:
            check_session(caller.plugin_id, caller.scope, parsed.session_id, self.services.engine.is_live)
        return verb, parsed

    def _run_now(self, caller: Caller, verb: Verb, parsed: Any) -> Any:
        try:
            return verb.handler(self.services, caller, parsed)
        except (CapabilityError, TimeoutError):
            raise
        except Exception as exc:
            raise _translated(verb, caller, exc) from None

    async def _run(self, caller: Caller, verb: Verb, parsed: Any) -> Any:
        budget = self._send_timeout if verb.send else self._timeout
        try:
            async with asyncio.timeout(budget):
                return await verb.handler(self.services, caller, parsed)
        except TimeoutError:
            raise CapabilityTimeout(f"{verb.name}: timed out after {budget:g} s") from None
        except CapabilityError:
            raise
        except Exception as exc:
            raise _translated(verb, caller, exc) from None


def _encode_args(verb_name: Any, args: Any) -> msgspec.Raw:
    """A built-in's arguments, encoded as a worker's arrive (plain data only: msgspec would
    encode a set or a tuple as a list)."""
    try:
        check_plain(args, "args")
        return encoded(args)
    except PlainDataError as exc:
        raise CapabilityError(f"{str(verb_name)[:64]}: invalid argument: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:  # msgspec.EncodeError is a ValueError
        raise CapabilityError(f"{str(verb_name)[:64]}: invalid argument: {exc}") from None


_decode_result = value_decoder().decode


def _decoded(result: Any) -> Any:
    """A result holding values kept encoded (`msgspec.Raw`), decoded for a built-in caller."""
    return _decode_result(encoded(result))


def _translated(verb: Verb, caller: Caller, exc: Exception) -> CapabilityError:
    """A host-service error as a CapabilityError that names the verb; nothing leaks raw. (A plain
    function called from `except`, not a context manager: `storage.get` is served inline on the
    bridge's hot path, where a generator-based context manager per call was measurable.)"""
    if isinstance(exc, (EngineError, StorageError, SendVetoed)):
        return CapabilityError(f"{verb.name}: {exc}")
    log.error("capability %s for plugin %s failed inside the host", verb.name, caller.plugin_id, exc_info=exc)
    return CapabilityError(f"{verb.name}: host service failed ({type(exc).__name__})")


def _name_arg(msgspec_message: str) -> str:
    """msgspec says '... - at `$.chat_id`'; lead with the argument's name."""
    text, sep, where = msgspec_message.rpartition(" - at `$.")
    if sep:
        return f"{where.rstrip('`')!r}: {text}"
    return msgspec_message
