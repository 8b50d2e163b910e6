"""The `plugbox` command line: one typer app; each command group lives in its own module."""

from __future__ import annotations

from plugbox.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
