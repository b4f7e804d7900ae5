"""mnsched: Go's M:N scheduler for Python's asyncio world."""

from .errors import BlockingCallError, InternalError, MnschedError, RuntimeClosedError
from .g import G
from .proc import blocking, go, gomaxprocs, gosched, num_goroutine, sleep, stats, syscall
from .runtime import Runtime, current_runtime, run

__all__ = [
    "BlockingCallError",
    "G",
    "InternalError",
    "MnschedError",
    "Runtime",
    "RuntimeClosedError",
    "blocking",
    "current_runtime",
    "go",
    "gomaxprocs",
    "gosched",
    "num_goroutine",
    "run",
    "sleep",
    "stats",
    "syscall",
]
__version__ = "0.1.0"
