"""The fuzz suite generates large, deeply nested examples on purpose. Hypothesis warns when it has
to format such an example ("Generating overly large repr"); with warnings as errors that notice
about the test tool itself would fail whichever test happened to draw a big example. Only that
one message is ignored here; every other warning stays an error."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/fuzz/" in item.nodeid:
            item.add_marker(pytest.mark.filterwarnings(
                "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"))
