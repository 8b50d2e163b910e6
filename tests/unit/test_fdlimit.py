"""The host raises its own soft open-file limit (every worker holds two fds on the host), never
past the hard limit and never downwards."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from plugbox.fdlimit import open_fds, raise_open_files


@pytest.fixture
def low_soft_limit() -> Iterator[tuple[int, int]]:
    """This process's soft limit lowered to 512 for the test (lowering the soft limit needs no
    privilege), restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        yield 512, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_soft_limit_is_raised_to_what_is_asked(low_soft_limit: tuple[int, int]) -> None:
    _, hard = low_soft_limit
    wanted = 1024 if hard == resource.RLIM_INFINITY else min(1024, hard)
    assert raise_open_files(wanted) == (wanted, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (wanted, hard)


def test_soft_limit_stops_at_the_hard_limit(low_soft_limit: tuple[int, int]) -> None:
    _, hard = low_soft_limit
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on this host to stop at")
    assert raise_open_files(hard * 4) == (hard, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard


def test_a_higher_soft_limit_is_never_lowered(low_soft_limit: tuple[int, int]) -> None:
    assert raise_open_files(100) == low_soft_limit
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 512


def test_open_fds_counts_a_new_fd() -> None:
    before = open_fds()
    with open("/dev/null") as f:
        assert f.fileno() >= 0
        assert open_fds() == before + 1
    assert open_fds() == before
