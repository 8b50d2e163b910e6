"""`plugbox dev run`'s human report prints plugin text (its error, its hook data, the messages it
sent, its stored values) on the operator's terminal: none of it may move the cursor, colour the
terminal or speak rich markup of its own."""

from __future__ import annotations

from plugbox.cli import report

HOSTILE = "x\x1b[2J\x1b]8;;http://evil\x07[red][link=http://evil]click[/link]\r\nforged"


def test_plugin_text_in_the_dev_report_is_printed_inert() -> None:
    data = {"plugin": {"id": "p", "status": "error", "error": HOSTILE},
            "hook": {"continue": True, "data": HOSTILE}, "sent": [{"chatId": HOSTILE, "body": HOSTILE}],
            "storage": {"k": HOSTILE}, "logs": [], "confinement": []}
    with report.console.capture() as captured:
        report.print_dev_report(data)
    out = captured.get()
    assert out.count("[link=http://evil]click[/link]") >= 3  # shown literally, markup and all
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "x\\x1b[2J" in out  # the escape is shown, not obeyed
