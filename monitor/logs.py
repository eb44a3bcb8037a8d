"""Structured logging: JSON lines for journald and log shippers, console format on a TTY."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, TextIO

import structlog

SECRET_KEYS = frozenset({"password", "token", "secret", "community", "auth", "authorization"})


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name looks like a secret."""
    for key in event:
        if any(word in key.lower() for word in SECRET_KEYS):
            event[key] = "<redacted>"
    return event


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process: JSON unless the stream is a TTY."""
    stream = stream or sys.stdout
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if stream.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


@contextlib.contextmanager
def command_logging(level: str = "warning", stream: TextIO | None = None) -> Iterator[None]:
    """Configure logging for a one-shot command (to stderr), restoring the previous setup after.

    Unconfigured structlog prints every event, debug included, to stdout: a `vigie probe` run
    then showed each probe event twice, once logged and once among the run's `# log:` lines.
    """
    saved = structlog.get_config()
    configure_logging(level, stream or sys.stderr)
    try:
        yield
    finally:
        structlog.configure(**saved)
