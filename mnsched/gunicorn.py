"""A gunicorn worker for ASGI apps on mnsched: ``gunicorn -k mnsched.gunicorn.Worker -w 2
app:app``. A service that outgrows one process's GIL scales over processes this way,
each with Ps of its own, all accepting on gunicorn's one port.

Each worker serves the app with uvicorn on a uvloop loop, lifespan on (the app starts its
runtime there: ``async with mnsched.Runtime()``, which every request then sees). Unless
``MNSCHED_PROCS`` is set, a worker gets ``CPUs // workers`` Ps (at least one), so that the
workers' Ps together match the cores instead of each worker taking them all. SIGTERM
(gunicorn's graceful stop) runs the lifespan's shutdown, which closes the runtime.

Needs ``gunicorn`` and ``uvicorn`` (not dependencies of mnsched).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

import uvicorn
from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker as BaseWorker

from .runtime import PROCS_ENV, resolve_procs


def procs_per_worker(workers: int) -> int:
    """The Ps each of ``workers`` processes gets: $MNSCHED_PROCS if set, else a share."""
    if os.environ.get(PROCS_ENV) is not None:
        return resolve_procs(None)
    return max(1, resolve_procs(None) // max(1, workers))


class Worker(BaseWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn worker: uvicorn on uvloop, lifespan on, Ps shared out between workers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, target in (
            ("uvicorn.error", self.log.error_log),
            ("uvicorn.access", self.log.access_log),
        ):
            logger = logging.getLogger(name)
            logger.handlers = target.handlers
            logger.setLevel(target.level)
            logger.propagate = False
        kwargs_ssl: dict[str, Any] = {}
        if self.cfg.is_ssl:
            opts = self.cfg.ssl_options
            kwargs_ssl = {
                "ssl_keyfile": opts.get("keyfile"),
                "ssl_certfile": opts.get("certfile"),
                "ssl_keyfile_password": opts.get("password"),
                "ssl_version": opts.get("ssl_version"),
                "ssl_cert_reqs": opts.get("cert_reqs"),
                "ssl_ca_certs": opts.get("ca_certs"),
                "ssl_ciphers": opts.get("ciphers"),
            }
        backlog = self.cfg.settings["backlog"].value
        self.config_kwargs: dict[str, Any] = dict(
            loop="uvloop",
            lifespan="on",
            log_config=None,
            timeout_keep_alive=self.cfg.keepalive,
            timeout_notify=self.timeout,
            callback_notify=self._notify,
            limit_max_requests=self.max_requests,
            forwarded_allow_ips=self.cfg.forwarded_allow_ips,
            **({"backlog": backlog} if backlog else {}),
            **kwargs_ssl,
        )

    def init_process(self) -> None:
        # Before the app is loaded (it may read the P count at import).
        os.environ[PROCS_ENV] = str(procs_per_worker(self.cfg.workers))
        super().init_process()

    def init_signals(self) -> None:
        # uvicorn installs its own handlers for SIGINT/SIGTERM when it serves; gunicorn's
        # would swallow subprocesses' exit codes.
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    async def _notify(self) -> None:
        self.notify()

    async def _serve(self) -> None:
        # self.wsgi: gunicorn's name for the loaded app (an ASGI one here)
        server = uvicorn.Server(config=uvicorn.Config(app=self.wsgi, **self.config_kwargs))
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGQUIT, self.handle_exit, signal.SIGQUIT, None
        )
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def run(self) -> None:
        import uvloop

        uvloop.run(self._serve())
