"""M: an OS thread.

Each P runs on one M (its own thread, or the caller's thread for ``run``'s P0). The
thread-local below is Go's ``getg().m.p``: it tells scheduler code which P, if any,
owns the current thread, so that spawning and waking stay thread-local when they can.
"""

import threading


class _M(threading.local):
    # The P this thread is running, or None on a plain thread or a foreign loop.
    p = None


m = _M()
