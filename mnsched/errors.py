"""Errors: user mistakes get a specific, user-facing class; runtime bugs get InternalError."""

import errno


class MnschedError(Exception):
    """Base class of every error mnsched raises itself."""


class InternalError(MnschedError):
    """A scheduler invariant was broken: this is a bug in mnsched, please report it."""


class RuntimeClosedError(MnschedError, RuntimeError):
    """The runtime is closed or shutting down, so it cannot take new goroutines."""


class Deadlock(MnschedError, RuntimeError):
    """Every goroutine is blocked on channels, sync objects or each other, and nothing
    (timer, blocking call, I/O, task) could ever wake one (Go: "all goroutines are asleep
    - deadlock!")."""


class BlockingCallError(MnschedError, RuntimeError):
    """A blocking call was made on a P's thread, where it would stall every goroutine there."""


class ResourceLimitError(MnschedError, RuntimeError):
    """The OS refused a thread or a file descriptor the runtime needed (a P's thread or
    loop, an M thread): the message names the limit and the fix; ``__cause__`` is the
    OS's error. The runtime stays as it was before the attempt."""


# errno values that mean a limit was reached (fds: the process's, the system's; memory,
# or the kernel's thread and process limits).
_LIMIT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})


def resource_limit(what: str, exc: BaseException) -> BaseException:
    """exc (raised while starting ``what``) as a ResourceLimitError naming the limit, if
    it is one; else exc itself."""
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        soft = _nofile_limit()
        err = ResourceLimitError(
            f"cannot start {what}: too many open files ({exc.strerror}; this process may "
            f"have {soft}, RLIMIT_NOFILE): raise the limit (ulimit -n, or "
            "resource.setrlimit), close files, or use fewer Ps"
        )
    elif (isinstance(exc, OSError) and exc.errno in _LIMIT_ERRNOS) or (
        type(exc) is RuntimeError and "can't start new thread" in str(exc)
    ):
        refused = "a new thread" if isinstance(exc, RuntimeError) else "it"
        err = ResourceLimitError(
            f"cannot start {what}: the OS refused {refused} ({exc}): a limit on threads or "
            "memory was reached (ulimit -u, /proc/sys/kernel/threads-max, RLIMIT_AS); "
            "use fewer Ps, a smaller max_threads=, or raise the limit"
        )
    else:
        return exc
    err.__cause__ = exc
    return err


def _nofile_limit() -> str:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return "a limited number"
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return "any number" if soft == resource.RLIM_INFINITY else str(soft)


def check(cond: object, what: str) -> None:
    """Assert a scheduler invariant (kept in optimised runs, unlike ``assert``)."""
    if not cond:
        raise InternalError(what)
