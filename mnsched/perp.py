"""PerP: one instance of a loop-bound resource per P (see docs/design.md, "Per-P resources").

A client made on one loop (an HTTP session, a database pool) may be used only on that
loop, and each P runs a loop of its own. ``PerP(factory)`` makes one instance per P, on
that P, the first time a goroutine there asks for it; the goroutine is then pinned to its
P (it holds the instance). The runtime closes every instance on its own loop at shutdown,
after the goroutines have finished and before the loops stop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .m import m
from .p import P, Resource

T = TypeVar("T")


class PerP(Generic[T]):
    """``PerP(factory, *, close=None)``: ``.get()`` returns the calling P's instance.

    ``factory()`` runs on the P, inside the goroutine (or host task) that first asks
    there, so what it makes binds to that P's loop. At shutdown each instance is closed
    on its own loop with ``close(obj)`` if given, else its ``aclose()``, ``close()`` or
    ``dispose()`` (awaited if that returns an awaitable). A factory whose result must be
    awaited (``asyncpg.create_pool``) is used through ``await .aget()``::

        sessions = mnsched.PerP(aiohttp.ClientSession)
        pools = mnsched.PerP(lambda: asyncpg.create_pool(DSN))

        async def fetch(url):  # in any goroutine
            async with sessions.get().get(url) as r:
                return await r.text()

        async def count():
            return await (await pools.aget()).fetchval("select count(*) from t")
    """

    def __init__(
        self, factory: Callable[[], T | Awaitable[T]], *, close: Callable[[T], Any] | None = None
    ):
        if not callable(factory):
            raise TypeError(f"PerP needs a factory to call, not {factory!r}")
        self.factory = factory
        self.close = close
        # aget(): the P whose instance is being made, and a future set once it is.
        self._making: dict[P, asyncio.Future[None]] = {}

    def get(self) -> T:
        p = self._here("get()")
        res = p.resources.get(self)
        if res is None:
            obj = self.factory()
            if inspect.isawaitable(obj):
                _discard(obj)
                raise TypeError(
                    f"{self!r}: the factory returned an awaitable ({type(obj).__name__}): "
                    "use 'await perp.aget()' for factories that must be awaited"
                )
            res = p.resources[self] = Resource(obj, self.close)
        return res.obj  # type: ignore[return-value]

    async def aget(self) -> T:
        """As ``get()``, for a factory whose result is awaited to make the instance
        (``asyncpg.create_pool``). Others asking on the same P meanwhile wait for that
        one instead of making their own."""
        p = self._here("aget()")
        while (res := p.resources.get(self)) is None:
            making = self._making.get(p)
            if making is not None:
                await asyncio.shield(making)  # then look again (it may have failed)
                continue
            self._making[p] = done = p.loop.create_future()
            try:
                obj = self.factory()
                if inspect.isawaitable(obj):
                    obj = await obj
                p.resources[self] = Resource(obj, self.close)
            finally:
                del self._making[p]
                done.set_result(None)
        return res.obj  # type: ignore[return-value]

    def _here(self, what: str) -> P:
        p = m.p
        if p is None:
            raise RuntimeError(
                f"PerP.{what} makes or finds the instance of the calling P: call it from a "
                "goroutine, or from a task on an attached runtime's loop"
            )
        p.pin_current()  # the caller holds an object of this loop from now on
        return p

    def __repr__(self) -> str:
        return f"<mnsched.PerP of {getattr(self.factory, '__qualname__', self.factory)!r}>"


def _discard(obj: Awaitable[Any]) -> None:
    """Close a coroutine that will never be awaited (no "never awaited" warning)."""
    if inspect.iscoroutine(obj):
        obj.close()
