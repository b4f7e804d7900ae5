"""A concurrent crawler over a local test site it starts itself (no outside network).

The site serves ``--pages`` pages, each linking to a few others. N worker goroutines
take URLs from a channel, fetch them, and feed new links back; a WaitGroup counts the
URLs not yet done, so the crawl ends exactly when the last page is in. Concurrency is
bounded by the number of workers.

Run: ``python samples/crawler.py [--pages 300] [--workers 16] [--procs N]``.
"""

from __future__ import annotations

import re
import sys
import time

import aiohttp
from aiohttp import web
from cli import parser

import mnsched
from mnsched import Chan, Mutex, WaitGroup
from mnsched.serve import serve_aiohttp

LINK = re.compile(r'href="(/page/\d+)"')
# A ClientSession belongs to the loop it was made on: share one per P (closed by the
# runtime at shutdown, on its own loop), not one per app, nor one per worker.
sessions = mnsched.PerP(aiohttp.ClientSession)


def make_site(pages: int) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        links = {(i * 7 + 1) % pages, (i * 13 + 5) % pages, (i + 1) % pages}
        body = "".join(f'<a href="/page/{j}">{j}</a>' for j in sorted(links))
        return web.Response(text=f"<h1>page {i}</h1>{body}", content_type="text/html")

    app = web.Application()
    app.router.add_get("/page/{i}", page)
    return app


async def crawl(base: str, workers: int, progress: bool = True) -> dict[str, int]:
    """Crawl from base + /page/0; return each page path with its size in bytes."""
    frontier: Chan[str] = Chan(100_000)
    pending = WaitGroup()
    seen_lock = Mutex()
    seen = {"/page/0"}
    sizes: dict[str, int] = {}
    t0 = time.monotonic()

    async def worker() -> None:
        session = sessions.get()  # this P's; the worker stays on this P from now on
        async for path in frontier:
            try:
                async with session.get(base + path) as r:
                    body = await r.text()
                sizes[path] = len(body)
                for link in LINK.findall(body):
                    async with seen_lock:
                        new = link not in seen
                        seen.add(link)
                    if new:
                        pending.add(1)
                        frontier.try_send(link)
                if progress and len(sizes) % 100 == 0:
                    print(
                        f"  {len(sizes)} pages in {time.monotonic() - t0:.2f} s",
                        file=sys.stderr,
                    )
            finally:
                pending.done()

    pending.add(1)
    frontier.try_send("/page/0")
    crew = [mnsched.go(worker()) for _ in range(workers)]
    await pending.wait()
    frontier.close()
    for g in crew:
        await g
    return sizes


async def main_async(pages: int, workers: int) -> dict[str, float]:
    site = await serve_aiohttp(lambda: make_site(pages))
    try:
        t0 = time.monotonic()
        sizes = await crawl(f"http://127.0.0.1:{site.port}", workers)
        return {
            "pages": len(sizes),
            "bytes": sum(sizes.values()),
            "seconds": round(time.monotonic() - t0, 3),
        }
    finally:
        await site.close()
        await site.wait_closed()


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--pages", type=int, default=300, help="pages on the local site")
    ap.add_argument("--workers", type=int, default=16, help="fetching goroutines")
    args = ap.parse_args()
    print(mnsched.run(main_async(args.pages, args.workers), procs=args.procs))


if __name__ == "__main__":
    main()
