"""Real servers for the tests, on 127.0.0.1 (mnsched/localservers.py), each started once
per test session and stopped at its end. Without the package, the tests that need it
skip, saying what to install."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mnsched import localservers


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server of our own (trust auth, user postgres); yields its DSN."""
    try:
        with localservers.postgres() as dsn:
            yield dsn
    except localservers.Unavailable as e:
        pytest.skip(str(e))


@contextmanager
def redis() -> Iterator[str]:
    """A Redis server of our own, nothing persisted; yields its URL."""
    try:
        with localservers.redis() as url:
            yield url
    except localservers.Unavailable as e:
        pytest.skip(str(e))
