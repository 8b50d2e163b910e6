"""How the worker server runs a plugin's main file (plugbox.worker.server): the module a plugin
sees is the one an import would have given it, its sibling modules import normally, and a main
that does not compile fails the load with the reason. Driven over a socketpair, as the zygote's
rehearsal drives it."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

from plugbox.protocol import Hello, Lifecycle, Load, Result, Shutdown, encode_frame, value_decoder
from plugbox.worker.rehearsal import _Host
from plugbox.worker.server import serve

MAIN = '''
import sys
import helper
from plugbox.sdk import Plugin

class Facts(Plugin):
    def on_load(self, ctx):
        module = sys.modules[__name__]
        return {
            "name": __name__,
            "file": __file__,
            "spec_name": __spec__.name,
            "spec_origin": __spec__.origin,
            "registered": module.Facts is Facts,
            "sibling": helper.VALUE,
        }
'''


async def _talk(plugin_dir: Path) -> list[Result]:
    host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host_end.setblocking(False)
    loop = asyncio.get_running_loop()
    worker = loop.create_task(serve(worker_end, [], None, 1 << 20))
    host = _Host(host_end)
    answers: list[Result] = []
    try:
        await host.next(Hello)
        await loop.sock_sendall(host_end, bytes(encode_frame(Load(1, "load-test", str(plugin_dir), "main.py", {},
                                                                  [], False))))
        answers.append(await host.next(Result, 1))
        if answers[0].ok:
            await loop.sock_sendall(host_end, bytes(encode_frame(Lifecycle(2, "on_load"))))
            answers.append(await host.next(Result, 2))
        await loop.sock_sendall(host_end, bytes(encode_frame(Shutdown())))
        await worker
    finally:
        worker.cancel()
        host_end.close()
    return answers


def _load(plugin_dir: Path) -> list[Result]:
    saved = sys.stdout, sys.stderr, list(sys.path), set(sys.modules)
    try:
        return asyncio.run(_talk(plugin_dir))
    finally:  # the server relays stdout/stderr and puts the plugin first on sys.path
        sys.stdout, sys.stderr, sys.path[:] = saved[0], saved[1], saved[2]
        for name in set(sys.modules) - saved[3]:
            del sys.modules[name]


def test_the_plugin_module_has_what_an_import_gives_it_and_its_siblings_import(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(MAIN)
    (tmp_path / "helper.py").write_text("VALUE = 42\n")
    load, on_load = _load(tmp_path)
    assert load.ok, load.error
    facts: dict[str, Any] = value_decoder().decode(on_load.value)
    main = str(tmp_path / "main.py")
    assert facts == {
        "name": "plugbox_plugin_load_test",
        "file": main,
        "spec_name": "plugbox_plugin_load_test",
        "spec_origin": main,
        "registered": True,
        "sibling": 42,
    }


def test_a_main_that_does_not_compile_fails_the_load_naming_the_error(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("def broken(:\n")
    [load] = _load(tmp_path)
    assert not load.ok
    assert load.error is not None and load.error.startswith("SyntaxError")
