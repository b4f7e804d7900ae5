"""Serving on every P: one listening socket per P on the same port (``SO_REUSEPORT``),
so the kernel spreads connections across the Ps' loops, and each connection (or aiohttp
request) is handled by a goroutine on the P that accepted it.

Handlers are pinned to their P from birth: the reader, writer and request objects they
are handed belong to that P's loop. Goroutines they spawn are free, and spill to other
Ps by stealing. A handler that blocks unmarked stalls the other connections of its own
P only (they hold objects of its loop); the other Ps serve on. Through ``syscall`` it
stalls nobody.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .g import CORE, G, add_waiter
from .m import m
from .runtime import Runtime, current_runtime

if TYPE_CHECKING:
    from .p import P

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def spawn_here(coro: Any, name: str | None = None) -> G[Any]:
    """Start a goroutine pinned to the P of the calling thread (a loop callback or task
    on a P), stepping it at once: a handler that needs no wait is done on return."""
    if CORE is not None:
        g: G[Any] | None = CORE.spawn_here(coro, name)  # the C driver's, the common case
        if g is not None:
            return g
    p = m.p
    if p is None or p.curg is not None:
        raise RuntimeError("spawn_here() runs on a P's thread, outside goroutines")
    return p.sched.newproc(coro, name, pin=True, eager=True)


class Server:
    """Listeners on every P, as asyncio's ``Server``: ``await serve_forever()`` until it
    is closed (cancelling it closes the server); ``await close()`` stops accepting on
    every P; ``await wait_closed()`` waits until it is closed and the handlers in flight
    are done (cancelling those still running ``drain_timeout`` seconds after close)."""

    def __init__(self, rt: Runtime, drain_timeout: float) -> None:
        self.rt = rt
        self.drain_timeout = drain_timeout
        self.port = 0
        self._closers: list[tuple[P, Callable[[], Coroutine[Any, Any, None]]]] = []
        # Set once every P stopped accepting; a concurrent future, as it is awaited from
        # any loop (goroutines on every P, host tasks).
        self._closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._inflight: set[G[Any]] = set()
        self.addresses: list[Any] = []  # one per P: the same port, SO_REUSEPORT
        self.nhandled = 0

    def _track(self, g: G[Any]) -> None:
        self.nhandled += 1
        if g.done():
            return  # a light handler ends in its first step (spawn_here steps it at once)
        self._inflight.add(g)
        if not add_waiter(g, self._inflight.discard):  # called as it ends, on its P
            self._inflight.discard(g)  # it already has

    def is_serving(self) -> bool:
        return not self._closed.done()

    async def close(self) -> None:
        """Stop accepting on every P (idempotent)."""
        closers, self._closers = self._closers, []
        try:
            await asyncio.gather(*(_on(p, close) for p, close in closers))
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    async def serve_forever(self) -> None:
        """Serve until the server is closed. Cancelling it (Ctrl-C cancels main) closes
        the server and waits for the handlers in flight, as asyncio's does."""
        try:
            await asyncio.wrap_future(self._closed)
        except asyncio.CancelledError:
            await self.close()
            await self.wait_closed()
            raise

    async def wait_closed(self) -> None:
        """Wait until the server is closed and its handlers in flight are done; cancel
        those still running ``drain_timeout`` seconds after that."""
        await asyncio.shield(asyncio.wrap_future(self._closed))
        inflight = list(self._inflight)
        done = await _wait_all(inflight, self.drain_timeout)
        for g in inflight:
            if g not in done:
                g.cancel()
        await _wait_all(inflight, None)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        await self.wait_closed()


async def _wait_all(gs: list[G[Any]], timeout: float | None) -> set[G[Any]]:
    done: set[G[Any]] = set()

    async def one(g: G[Any]) -> None:
        try:
            await g
        except BaseException:
            pass
        done.add(g)

    if gs:
        await asyncio.wait([asyncio.ensure_future(one(g)) for g in gs], timeout=timeout)
    return done


async def _on(p: P, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run fn() as a task on P p's loop; await it from here (any loop)."""
    cf: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(fn(), p.loop)
    return await asyncio.wrap_future(cf)


async def start_server(
    handler: StreamHandler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    rt: Runtime | None = None,
    drain_timeout: float = 10.0,
    **kwargs: Any,
) -> Server:
    """``asyncio.start_server`` on every P of the runtime: ``handler(reader, writer)`` runs
    as a goroutine for each connection, on the P that accepted it."""
    rt = rt or current_runtime()
    server = Server(rt, drain_timeout)

    def make_listener(p: P) -> Callable[[], Coroutine[Any, Any, None]]:
        async def listen() -> None:
            def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                server._track(spawn_here(handler(reader, writer), name="conn"))

            srv = await asyncio.start_server(
                connected, host, server.port or port, reuse_port=True, **kwargs
            )
            server.port = server.port or srv.sockets[0].getsockname()[1]
            server.addresses.extend(sock.getsockname() for sock in srv.sockets)

            async def close() -> None:
                srv.close()
                await srv.wait_closed()

            server._closers.append((p, close))

        return listen

    await _listen_everywhere(rt, make_listener)
    return server


async def serve_aiohttp(
    app_factory: Callable[[], Any],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    rt: Runtime | None = None,
    drain_timeout: float = 10.0,
    goroutines: bool = True,
) -> Server:
    """Serve an aiohttp application on every P: ``app_factory()`` builds one
    ``web.Application`` per P (an application belongs to one loop), and each request's
    handler runs as a goroutine on the P that accepted the connection.

    The goroutine runs the application's whole handling of the request (routing, the
    middlewares, the handler), and aiohttp's per-request task awaits it. With
    ``goroutines=False`` handlers run in aiohttp's own tasks, a little cheaper, but sysmon
    cannot see (nor report) a handler that hogs, and mnsched's park points inside
    handlers fall back to their asyncio forms."""
    from aiohttp import web

    rt = rt or current_runtime()
    server = Server(rt, drain_timeout)

    def make_listener(p: P) -> Callable[[], Coroutine[Any, Any, None]]:
        async def listen() -> None:
            app = app_factory()
            runner = web.AppRunner(app, handle_signals=False)
            await runner.setup()
            if goroutines:
                # The server's request handler (aiohttp's public Server.request_handler,
                # the application's handling) runs in a goroutine: a wrapper that returns
                # the G for aiohttp to await costs no coroutine frame of its own, where a
                # middleware cost ~4 us a request.
                web_server = runner.server
                if web_server is None:
                    raise RuntimeError("aiohttp's AppRunner made no server in setup()")
                handle = web_server.request_handler

                def goroutine_per_request(request: web.BaseRequest) -> G[Any]:
                    g = spawn_here(handle(request), name="request")
                    server._track(g)
                    return g

                web_server.request_handler = goroutine_per_request
            site = web.TCPSite(runner, host, server.port or port, reuse_port=True)
            await site.start()
            server.port = server.port or runner.addresses[0][1]
            server.addresses.extend(runner.addresses)

            async def close() -> None:
                await runner.cleanup()

            server._closers.append((p, close))

        return listen

    await _listen_everywhere(rt, make_listener)
    return server


async def _listen_everywhere(
    rt: Runtime,
    make_listener: Callable[[P], Callable[[], Coroutine[Any, Any, None]]],
) -> None:
    """P0 first (it picks the port when port is 0), then every other P on that port."""
    ps = rt.sched.allp
    if not ps:
        raise RuntimeError(f"{rt!r} is not running")
    await _on(ps[0], make_listener(ps[0]))
    await asyncio.gather(*(_on(p, make_listener(p)) for p in ps[1:]))
