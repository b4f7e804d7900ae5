"""Logging: a filter that tells which goroutine, and which P, wrote each record; and
where mnsched's debug output goes."""

from __future__ import annotations

import logging
import sys

from .m import m

logger = logging.getLogger("mnsched")


def debug_output(level: int, msg: str) -> None:
    """Debug output (schedtrace lines, hog reports): a record of the ``mnsched`` logger
    when the application has configured logging (a handler on it or above), so that it
    lands in its logs with the rest; printed to stderr as Go prints it otherwise (logging's
    last resort would drop the INFO lines)."""
    if logger.hasHandlers():
        logger.log(level, msg)
    else:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


class GoroutineFilter(logging.Filter):
    """Adds ``goid``, ``goname`` and ``procid`` to every record it sees ("-" outside a
    goroutine or a P), for formats such as::

        "%(asctime)s P%(procid)s G%(goid)s %(goname)s %(levelname)s %(message)s"

    Install it on a handler (``handler.addFilter(GoroutineFilter())``) to cover every
    logger that handler serves, or use ``install()``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        p = m.p
        g = p.curg if p is not None else None
        record.procid = p.id if p is not None else "-"
        record.goid = g.id if g is not None else "-"
        record.goname = g.name if g is not None else "-"
        return True


DEFAULT_FORMAT = "%(asctime)s P%(procid)s G%(goid)s %(levelname)s %(name)s: %(message)s"


def install(
    logger: logging.Logger | None = None, fmt: str = DEFAULT_FORMAT, level: int = logging.INFO
) -> logging.Handler:
    """Give ``logger`` (the root logger by default) a stderr handler with the filter and
    a format showing the P and goroutine. Returns the handler."""
    handler = logging.StreamHandler()
    handler.addFilter(GoroutineFilter())
    handler.setFormatter(logging.Formatter(fmt))
    target = logger or logging.getLogger()
    target.addHandler(handler)
    target.setLevel(level)
    return handler
