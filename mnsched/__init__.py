"""mnsched: Go's M:N scheduler for Python's asyncio world. This module only re-exports;
docs/design.md says how it works."""

from .api import blocking, go, gomaxprocs, gosched, num_goroutine, sleep, stats, syscall
from .chan import Chan, ChannelClosed, WouldBlock
from .errors import (
    BlockingCallError,
    Deadlock,
    InternalError,
    MnschedError,
    RuntimeClosedError,
)
from .g import G
from .goroutines import GoroutineInfo, dump, stacks
from .group import Group
from .perp import PerP
from .runtime import Runtime, current_runtime, run
from .selectgo import Recv, Send, select
from .sync import Mutex, Once, WaitGroup
from .timers import Ticker, after, tick

__all__ = [
    "BlockingCallError",
    "Chan",
    "ChannelClosed",
    "Deadlock",
    "G",
    "GoroutineInfo",
    "Group",
    "InternalError",
    "MnschedError",
    "Mutex",
    "Once",
    "PerP",
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
    "dump",
    "go",
    "gomaxprocs",
    "gosched",
    "num_goroutine",
    "run",
    "select",
    "sleep",
    "stacks",
    "stats",
    "syscall",
    "tick",
]
__version__ = "0.1.0"
