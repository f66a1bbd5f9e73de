"""Streaming side of cityvitals: topics, schemas, agents, tables, web and CLI."""

from __future__ import annotations


def main() -> None:
    """The ``cityvitals`` command. Its modules take about a second to load; a Ctrl-C
    meanwhile ends it with status 130 and no traceback, as one later does."""
    try:
        from streams.cli import main as cli
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    cli()
