"""mnsched: Go's M:N scheduler for Python's asyncio world."""

from .chan import Chan, ChannelClosed, Recv, Send, Ticker, WouldBlock, after, select, tick
from .errors import (
    BlockingCallError,
    Deadlock,
    InternalError,
    MnschedError,
    RuntimeClosedError,
)
from .g import G
from .proc import blocking, go, gomaxprocs, gosched, num_goroutine, sleep, stats, syscall
from .runtime import Runtime, current_runtime, run
from .sync import Mutex, Once, WaitGroup

__all__ = [
    "BlockingCallError",
    "Chan",
    "ChannelClosed",
    "Deadlock",
    "G",
    "InternalError",
    "MnschedError",
    "Mutex",
    "Once",
    "Recv",
    "Runtime",
    "RuntimeClosedError",
    "Send",
    "Ticker",
    "WaitGroup",
    "WouldBlock",
    "after",
    "blocking",
    "current_runtime",
    "go",
    "gomaxprocs",
    "gosched",
    "num_goroutine",
    "run",
    "select",
    "sleep",
    "stats",
    "syscall",
    "tick",
]
__version__ = "0.1.0"
