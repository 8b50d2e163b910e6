"""An engine for Meta's official WhatsApp Cloud API (Graph API), chosen with `PLUGBOX_ENGINE=cloudapi`.

- `_engine`: `CloudApiEngine` — sessions (one per phone number id), Graph sends, notification intake.
- `_session`: one session and its bounded memory of messages and contacts seen.
- `_payloads`: Meta's wire shapes as msgspec Structs (decoding is validation).
- `_signature`: the webhook's verify-token handshake and `X-Hub-Signature-256` check.
The HTTP route Meta calls lives with the other routes, in `plugbox.api.routes.cloudapi`.
Operator guide: docs/cloud-api.md.

Why httpx directly and not a client library such as `pywa` (PyPI: pywa 4.5.0, actively kept, async
via `pywa_async`, depends on httpx itself): we use two Graph calls (send a text, optionally quoting
one message) and one webhook shape (text messages, statuses, contacts). pywa brings ~50k lines of
Python for the whole platform (templates, flows, media, calls, its own webhook router bound to
Flask/FastAPI handlers) and its own dataclass model of every update; we would still have to map that
model onto plugbox's message dicts, bypass its router (our route must verify, cap and count in the
host's own way), and track its releases for a surface we do not use. The part we need is a single
authenticated POST plus strict decoding, which httpx (already a dependency) and msgspec Structs
(already our wire validator) give us with bounded timeouts and response caps we control.
"""

from plugbox.engines.cloudapi._engine import CloudApiEngine
from plugbox.engines.cloudapi._signature import SIGNATURE_HEADER, check_handshake, check_signature, sign

__all__ = ["SIGNATURE_HEADER", "CloudApiEngine", "check_handshake", "check_signature", "sign"]
