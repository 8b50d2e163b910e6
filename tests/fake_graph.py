"""Meta's Graph API as far as the Cloud API engine uses it, served on 127.0.0.1 from a thread, with
canned answers from `tests/fixtures/cloudapi`. It records every request (path, headers, JSON body)
so a test can assert what the engine sent, and answers each send from a queue of scripted replies
(the documented 200 by default)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FIXTURES", "FakeGraph", "Recorded", "fake_graph", "fixture", "signed"]

FIXTURES = Path(__file__).parent / "fixtures" / "cloudapi"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def signed(app_secret: str, body: bytes) -> dict[str, str]:
    """Headers Meta would send with `body`: computed here independently of plugbox's own `sign`."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeGraph:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: list[tuple[int, bytes]] = []  # next answers to POST; empty: the documented 200
        self.delay_s = 0.0
        self.received = threading.Event()
        self.url = ""

    def answer(self) -> tuple[int, bytes]:
        if self.replies:
            return self.replies.pop(0)
        doc = json.loads(fixture("send_response.json"))
        doc["messages"][0]["id"] = f"wamid.fake-{len(self.requests)}"
        return 200, json.dumps(doc).encode()


@contextlib.contextmanager
def fake_graph() -> Iterator[FakeGraph]:
    graph = FakeGraph()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            graph.requests.append(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                           json.loads(raw) if raw else None))
            status, body = graph.answer()
            if graph.delay_s:
                threading.Event().wait(graph.delay_s)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            graph.received.set()

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    graph.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield graph
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
