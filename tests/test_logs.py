"""Logs are JSON lines off a terminal and a console format on one; context keys ride along."""

from __future__ import annotations

import io

import orjson
import structlog

from collector.logs import configure


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_when_not_a_terminal_with_bound_context() -> None:
    """Piped stderr gets one JSON object per line, carrying run_id and the event's keys."""
    out = io.StringIO()
    configure(fmt="auto", level="info", stream=out)
    structlog.contextvars.bind_contextvars(run_id="r-1")
    try:
        structlog.get_logger("t").info("unit.failed", account="prod", status=503)
        structlog.get_logger("t").debug("request.retry")  # below the level: not written
    finally:
        structlog.contextvars.unbind_contextvars("run_id")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    line = orjson.loads(lines[0])
    assert (line["event"], line["run_id"], line["account"], line["status"]) == (
        "unit.failed",
        "r-1",
        "prod",
        503,
    )


def test_console_format_on_a_terminal() -> None:
    """A terminal gets the readable console renderer, not JSON."""
    out = Tty()
    configure(fmt="auto", level="info", stream=out)
    structlog.get_logger("t").info("project.discovered", clusters=3)
    text = out.getvalue()
    assert "project.discovered" in text
    assert "clusters" in text
    assert not text.lstrip().startswith("{")
