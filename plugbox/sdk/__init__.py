"""What plugin authors import (SPEC §3). Everything here runs in both tiers, unchanged."""

from plugbox.errors import CapabilityError, CapabilityTimeout, PlainDataError
from plugbox.plain import check_plain
from plugbox.sdk._context import Context, Logger
from plugbox.sdk._plugin import Plugin
from plugbox.sdk._types import HookContext, HookResult

__all__ = [
    "CapabilityError",
    "CapabilityTimeout",
    "Context",
    "HookContext",
    "HookResult",
    "Logger",
    "PlainDataError",
    "Plugin",
    "check_plain",
]
