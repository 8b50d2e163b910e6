from datetime import UTC, datetime
from pathlib import Path

from plugbox.testing import run_plugin

PLUGIN = Path(__file__).resolve().parent.parent
CHAT, OTHER = "15550001111@c.us", "15550002222@c.us"
AWAY = "Thanks for your message! We are closed now and answer from 9:00 to 17:00."


def at(day: int, hour: int, minute: int = 0) -> float:
    """A moment in November 2026 (the 30th is a Monday, the 28th a Saturday), UTC."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC).timestamp()


async def say(plugin, when: float, body: str = "hello", chat: str = CHAT) -> None:
    plugin.engine.clock = lambda: when  # the loopback engine stamps the message with its clock
    await plugin.inbound(body, chat_id=chat)


def bodies(plugin) -> list[str]:
    return [m["body"] for m in plugin.sent]


async def test_no_answer_during_office_hours():
    async with run_plugin(PLUGIN) as plugin:
        await say(plugin, at(30, 12))
        assert plugin.sent == []


async def test_after_hours_a_chat_gets_the_away_message_once_per_cooldown():
    async with run_plugin(PLUGIN) as plugin:
        await say(plugin, at(30, 20))
        await say(plugin, at(30, 20, 30))  # within the 60-minute cooldown
        await say(plugin, at(30, 20, 10), chat=OTHER)  # another chat has its own cooldown
        assert bodies(plugin) == [AWAY, AWAY]
        await say(plugin, at(30, 21, 1))
        assert bodies(plugin) == [AWAY, AWAY, AWAY]
        assert plugin.storage[f"answered:test:{CHAT}"] == int(at(30, 21, 1))


async def test_weekends_are_closed_unless_configured_open():
    async with run_plugin(PLUGIN) as plugin:
        await say(plugin, at(28, 12))
        assert bodies(plugin) == [AWAY]
    async with run_plugin(PLUGIN, config={"openOnWeekends": True}) as plugin:
        await say(plugin, at(28, 12))
        assert plugin.sent == []


async def test_hours_are_local_to_the_configured_offset():
    config = {"utcOffsetMinutes": 540, "message": "Closed, see you tomorrow"}  # UTC+9
    async with run_plugin(PLUGIN, config=config) as plugin:
        await say(plugin, at(30, 2))  # 11:00 local: open
        assert plugin.sent == []
        await say(plugin, at(30, 12))  # 21:00 local: closed
        assert bodies(plugin) == ["Closed, see you tomorrow"]


async def test_the_openwa_floor_is_kept_and_the_plugin_runs_confined():
    async with run_plugin(PLUGIN) as plugin:
        assert plugin.view.manifest.openwa.min_openwa_version == "0.8.0"
        assert plugin.view.warnings == ()
        assert all(layer["applied"] for layer in plugin.confinement if not layer.get("skipped"))
        assert (await plugin.host.health("office-hours"))["healthy"] is True
