"""Search across plugins (SPEC §4, search:provide), against fake providers: one entry per plugin
asked, in plugin-id order; a provider that fails, hangs or is missing yields an `ok: false` entry
for that plugin only, with secrets redacted from the error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from plugbox.capabilities.search import ERROR_MAX_CHARS, Provider, SearchService
from plugbox.logrelay import TRUNCATED


def answering(plugin_id: str, results: Any, seen: list[dict[str, Any]] | None = None) -> Provider:
    async def search(query: dict[str, Any]) -> Any:
        if seen is not None:
            seen.append(query)
        return results

    return Provider(plugin_id, search, lambda: [])


def failing(plugin_id: str, exc: Exception, secrets: list[str] | None = None) -> Provider:
    async def search(_query: dict[str, Any]) -> Any:
        raise exc

    return Provider(plugin_id, search, lambda: list(secrets or []))


def hanging(plugin_id: str) -> Provider:
    async def search(_query: dict[str, Any]) -> Any:
        await asyncio.Event().wait()

    return Provider(plugin_id, search, lambda: [])


def service(*providers: Provider, known: tuple[str, ...] = (), timeout: float = 1.0) -> SearchService:
    by_id = {p.plugin_id: p for p in providers}
    names = {*by_id, *known}
    return SearchService(lambda: by_id, lambda plugin_id: plugin_id in names, timeout)


async def test_every_provider_is_asked_and_answers_come_in_plugin_id_order() -> None:
    seen: list[dict[str, Any]] = []
    svc = service(answering("zeta", ["z"], seen), answering("alpha", ["a"], seen))
    assert await svc.query(None, {"q": "hi"}) == [
        {"plugin": "alpha", "ok": True, "results": ["a"]},
        {"plugin": "zeta", "ok": True, "results": ["z"]},
    ]
    assert seen == [{"q": "hi"}, {"q": "hi"}]


async def test_naming_a_plugin_asks_only_that_one() -> None:
    seen: list[dict[str, Any]] = []
    svc = service(answering("alpha", ["a"]), answering("beta", ["b"], seen))
    assert await svc.query("beta", {"q": "x"}) == [{"plugin": "beta", "ok": True, "results": ["b"]}]
    assert seen == [{"q": "x"}]


async def test_each_provider_gets_its_own_copy_of_the_query() -> None:
    async def meddle(query: dict[str, Any]) -> Any:
        query["q"] = "changed"
        return []

    seen: list[dict[str, Any]] = []
    svc = service(Provider("alpha", meddle, lambda: []), answering("beta", [], seen))
    query = {"q": "original"}
    await svc.query(None, query)
    assert query == {"q": "original"} and seen == [{"q": "original"}]


async def test_a_query_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^search query must be an object$"):
        await service(answering("alpha", [])).query(None, ["q"])  # type: ignore[arg-type]


async def test_an_unknown_plugin_is_an_entry_saying_so() -> None:
    assert await service().query("ghost", {}) == [
        {"plugin": "ghost", "ok": False, "error": "no plugin with id 'ghost'"}
    ]


async def test_a_known_plugin_without_a_provider_is_an_entry_saying_so() -> None:
    assert await service(known=("quiet",)).query("quiet", {}) == [
        {"plugin": "quiet", "ok": False, "error": "plugin 'quiet' is not enabled with a search provider"}
    ]


async def test_a_failing_provider_is_its_own_entry_and_the_others_still_answer() -> None:
    svc = service(failing("broken", ValueError("index missing")), answering("fine", [1]))
    assert await svc.query(None, {}) == [
        {"plugin": "broken", "ok": False, "error": "ValueError: index missing"},
        {"plugin": "fine", "ok": True, "results": [1]},
    ]


async def test_a_provider_error_never_shows_the_plugins_secrets() -> None:
    svc = service(failing("leaky", RuntimeError("token s3cr3t-value rejected"), ["s3cr3t-value"]))
    [entry] = await svc.query(None, {})
    assert entry["ok"] is False and "s3cr3t-value" not in entry["error"]
    assert entry["error"].startswith("RuntimeError: token ")


async def test_a_long_provider_error_is_cut_to_the_cap() -> None:
    [entry] = await service(failing("wordy", ValueError("x" * 5000))).query(None, {})
    assert entry["error"] == ("ValueError: " + "x" * 5000)[:ERROR_MAX_CHARS] + TRUNCATED


async def test_a_provider_past_the_timeout_is_its_own_entry() -> None:
    svc = service(hanging("slow"), answering("fast", ["f"]))
    assert await svc.query(None, {}, timeout=0.05) == [
        {"plugin": "fast", "ok": True, "results": ["f"]},
        {"plugin": "slow", "ok": False, "error": "search provider did not answer within 0.05 s"},
    ]


async def test_without_a_timeout_the_service_default_applies() -> None:
    [entry] = await service(hanging("slow"), timeout=0.02).query(None, {})
    assert entry == {"plugin": "slow", "ok": False, "error": "search provider did not answer within 0.02 s"}


async def test_a_failing_provider_is_noted_in_the_host_log_by_plugin_and_kind_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = service(failing("broken", ValueError("token s3cr3t")))
    with caplog.at_level(logging.INFO, logger="plugbox.search"):
        await svc.query(None, {})
    assert [r.getMessage() for r in caplog.records if r.name == "plugbox.search"] == [
        "search provider of plugin broken failed: ValueError"]
