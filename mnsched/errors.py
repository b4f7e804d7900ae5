"""Errors: user mistakes get a specific, user-facing class; runtime bugs get InternalError."""


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


def check(cond: object, what: str) -> None:
    """Assert a scheduler invariant (kept in optimised runs, unlike ``assert``)."""
    if not cond:
        raise InternalError(what)
