"""Shared fixtures: hosts on a temporary data dir (SQLite + loopback engine, no bundled plugins), and
databases of either backend for the storage contract (`any_db`, `make_database`).

Settings are built with an empty environment so a developer's `PLUGBOX_*` variables never leak in.
"""

from __future__ import annotations

import asyncio
import glob
import os
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plugbox.host import Host
from plugbox.settings import load_settings
from plugbox.storage.db import Database

MakeHost = Callable[..., Host]


@pytest.fixture
async def make_host(tmp_path: Path) -> AsyncIterator[MakeHost]:
    """`make_host(**setting_overrides)`: a new, not yet started Host on the test's data dir. Two hosts
    made in one test share the data dir, as a restart would. Every host is stopped at teardown."""
    hosts: list[Host] = []

    def make(**overrides: Any) -> Host:
        settings = load_settings(environ={}, data_dir=str(tmp_path / "data"), **overrides)
        host = Host(settings, bundled=False)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        await host.stop()
        await host.db.close()  # a host that was never started is not closed by stop()


@pytest.fixture
async def host(make_host: MakeHost) -> Host:
    """A started host with no plugins."""
    h = make_host()
    await h.start()
    return h


# -- databases: the storage contract runs on both backends --------------------------------------------

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The postgresql:// URL of a server the tests may create databases on, as a superuser:
    `PLUGBOX_TEST_DATABASE_URL` (CI's `.ci/postgres` sets it), else a throwaway cluster started here
    once per session with the same script. In CI a missing server fails the PostgreSQL half; on a
    developer's machine without PostgreSQL it is skipped, saying why."""
    url = os.environ.get("PLUGBOX_TEST_DATABASE_URL", "")
    if url:
        yield url
        return
    script = Path(__file__).resolve().parent.parent / ".ci" / "postgres"
    if not any(Path(p).is_dir() for p in glob.glob("/usr/lib/postgresql/*/bin")) and not os.environ.get("PG_BIN"):
        message = "no PostgreSQL: set PLUGBOX_TEST_DATABASE_URL or install the server (initdb)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # A short path: a Unix socket path is limited to ~107 bytes.
    cluster = Path(tempfile.mkdtemp(prefix="plugbox-pg-"))
    started = subprocess.run([str(script), "start", str(cluster)], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        pytest.fail(f".ci/postgres could not start a cluster: {started.stderr.strip()}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([str(script), "stop", str(cluster)], capture_output=True, check=False)


@pytest.fixture
def make_postgres_url(postgres_server: str) -> Iterator[Callable[[], str]]:
    """`make_postgres_url()`: the URL of a new, empty database on the test server, dropped at teardown."""
    import psycopg

    created: list[str] = []

    def make() -> str:
        name = f"plugbox_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"'.encode())
        created.append(name)
        return urllib.parse.urlsplit(postgres_server)._replace(path=f"/{name}").geturl()

    yield make
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
async def two_hosts(tmp_path: Path, make_postgres_url: Callable[[], str]) -> AsyncIterator[tuple[Host, Host]]:
    """Two started hosts sharing one new PostgreSQL database, each with its own data dir; stopped at
    teardown, before the database is dropped."""
    url = make_postgres_url()
    a, b = (Host(load_settings(environ={}, data_dir=str(tmp_path / name), database_url=url), bundled=False)
            for name in ("a", "b"))
    try:
        await a.start()
        await b.start()
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def within(check: Callable[[], bool], seconds: float) -> float:
    """Wait until `check()` holds, failing past `seconds`; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture(params=BACKENDS)
def make_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Database]]:
    """`make_database()`: a fresh database of the test's backend (each test runs once per backend).
    Calling it again opens another handle on the SAME database, as a restart or a second host would."""
    from plugbox.storage.postgres import PostgresDatabase
    from plugbox.storage.sqlite import SqliteDatabase

    opened: list[Database] = []
    url = request.getfixturevalue("make_postgres_url")() if request.param == "postgres" else ""

    def make() -> Database:
        db: Database = PostgresDatabase(url) if url else SqliteDatabase(tmp_path / "data" / "plugbox.db")
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close_sync()


@pytest.fixture
def any_db(make_database: Callable[[], Database]) -> Database:
    """A fresh database, once per backend."""
    return make_database()
