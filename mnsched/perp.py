"""PerP: one instance of a loop-bound resource per P (see docs/design.md, "Per-P resources").

A client made on one loop (an HTTP session, a database pool) may be used only on that
loop, and each P runs a loop of its own. ``PerP(factory)`` makes one instance per P, on
that P, the first time a goroutine there asks for it; the goroutine is then pinned to its
P (it holds the instance). The runtime closes every instance on its own loop at shutdown,
after the goroutines have finished and before the loops stop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .m import m
from .p import Resource

T = TypeVar("T")


class PerP(Generic[T]):
    """``PerP(factory, *, close=None)``: ``.get()`` returns the calling P's instance.

    ``factory()`` runs on the P, inside the goroutine (or host task) that first asks
    there, so what it makes binds to that P's loop. At shutdown each instance is closed
    on its own loop with ``close(obj)`` if given, else its ``aclose()``, ``close()`` or
    ``dispose()`` (awaited if that returns an awaitable)::

        sessions = mnsched.PerP(aiohttp.ClientSession)

        async def fetch(url):  # in any goroutine
            async with sessions.get().get(url) as r:
                return await r.text()
    """

    def __init__(self, factory: Callable[[], T], *, close: Callable[[T], Any] | None = None):
        if not callable(factory):
            raise TypeError(f"PerP needs a factory to call, not {factory!r}")
        self.factory = factory
        self.close = close

    def get(self) -> T:
        p = m.p
        if p is None:
            raise RuntimeError(
                "PerP.get() makes or finds the instance of the calling P: call it from a "
                "goroutine, or from a task on an attached runtime's loop"
            )
        p.pin_current()  # the caller holds an object of this loop from now on
        res = p.resources.get(self)
        if res is None:
            res = p.resources[self] = Resource(self.factory(), self.close)
        return res.obj  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<mnsched.PerP of {getattr(self.factory, '__qualname__', self.factory)!r}>"
