"""A real HTTP receiver for outbound webhook tests: a threaded `http.server` on 127.0.0.1 that
records every request and answers with the status its `answer` function picks (per delivery id
and attempt)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    delivery_id: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    url: str
    answer: Callable[[str, int], int] = lambda _id, _nth: 200  # (delivery id, nth request of it) -> status
    delay_s: float = 0.0  # how long each answer takes (recorded at once, answered after the delay)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, delivery_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.delivery_id == delivery_id]

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]


@contextmanager
def receiving(answer: Callable[[str, int], int] | None = None) -> Iterator[Receiver]:
    receiver: Receiver | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert receiver is not None
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            delivery_id = self.headers.get("webhook-id", "")
            with receiver.lock:
                nth = 1 + sum(1 for r in receiver.requests if r.delivery_id == delivery_id)
                status = receiver.answer(delivery_id, nth)
                receiver.requests.append(Received(delivery_id, dict(self.headers.items()), body, status))
            time.sleep(receiver.delay_s)
            try:
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender died meanwhile (a host killed mid-delivery): nobody to answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    if answer is not None:
        receiver.answer = answer
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
