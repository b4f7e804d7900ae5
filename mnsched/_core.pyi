# The C core's seam (mnsched/_core.c): every name the extension exports, its types, and
# its Python twin, the pure driver's code that does the same and is the reference
# (docs/design.md, section 17). tests/test_layout.py holds this file to _core.c (every
# name it exports is here, and nothing else), each "twin:" to an object that exists,
# and each "switch:" line below to the places that choose between the two drivers
# (`CORE is None`): a new switch, or a new entry, without its line here fails there.
#
# The switches (module: the function, class attribute or module-level name it decides):
# switch: api.go             go() is CORE.Go(go): the spawn from a goroutine in C
# switch: api.go             api.go's fast path: CORE.go_here
# switch: chan._ChanBase     Chan's base: ChanBase (send and recv in C)
# switch: chan.Chan.send     Chan.send/recv: ChanBase's, or chan.py's coroutines
# switch: chan.<bind_chan>   CORE.bind_chan
# switch: g.DRIVER           "c" or "python"
# switch: g._GBase           G's base: GBase
# switch: g.new_lock         the driver's Lock, or threading.Lock
# switch: g.newgoid          CORE.newgoid, or g._newgoid
# switch: g.sample_ready     CORE.sample_ready, or g._sample_ready
# switch: g.goready          CORE.goready, or g._goready
# switch: g._after_fork_in_child   CORE.after_fork
# switch: g.G.__init__       the id and sampling inline (pure), or CORE's
# switch: g.G.__await__      G.__await__ in Python only when GBase has none
# switch: p._PBase           P's base: PBase
# switch: p.P._schedule      the scheduling loop: CORE.run_batch
# switch: p.<bind>           CORE.bind
# switch: p.STEP             CORE.step, or P.step
# switch: runq.RunQ          CORE.RunQ, or runq._PureRunQ
# switch: sched.<bind_sched> CORE.bind_sched
# switch: serve.spawn_here   CORE.spawn_here
# switch: steptoken.StepToken  CORE.StepToken, or steptoken._PureStepToken
# switch: trace.<raise>      the kinds' numbering checked against CORE.TRACE_KINDS
# switch: trace._TraceBase   CORE.TraceBuf, or trace._PureTraceBuf

from collections.abc import Callable, Coroutine, Generator
from typing import Any

TRACE_KINDS: tuple[int, ...]  # twin: mnsched.trace._BEGIN

class GBase:  # twin: mnsched.g._PureGBase
    _goid: int
    _golasti: int
    _goparent: int
    _qpos: int
    _readyts: int
    _waitsince: float
    def __await__(self) -> Generator[Any, None, Any]: ...

class PBase:  # twin: mnsched.p._PurePBase
    def __getattr__(self, name: str) -> Any: ...  # its counters and clocks, as C numbers

class RunQ:  # twin: mnsched.runq._PureRunQ
    def __len__(self) -> int: ...
    def __getattr__(self, name: str) -> Any: ...  # deque's methods, and steal_half

class StepToken:  # twin: mnsched.steptoken._PureStepToken
    def __getattr__(self, name: str) -> Any: ...

class TraceBuf:  # twin: mnsched.trace._PureTraceBuf
    def __getattr__(self, name: str) -> Any: ...

class Lock:  # twin: threading.Lock
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc: object) -> None: ...

class ChanBase:  # twin: mnsched.chan._PureChanBase
    def send(self, v: Any) -> ChanOp: ...  # twin: mnsched.chan.Chan._send
    def recv(self) -> ChanOp: ...  # twin: mnsched.chan.Chan._recv

class ChanOp(Coroutine[Any, Any, Any]):  # twin: mnsched.chan.Chan._recv
    def send(self, value: Any) -> Any: ...
    def throw(self, *args: Any) -> Any: ...
    def close(self) -> None: ...
    def __await__(self) -> Generator[Any, None, Any]: ...

class Go:  # twin: mnsched.api.go
    def __init__(self, fallback: Callable[..., Any]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

def step(p: Any, g: Any) -> None: ...  # twin: mnsched.p.P.step

# twin: mnsched.p.P._schedule
def run_batch(p: Any, now: float, deadline: float, time_slice: float, tok: Any) -> bool: ...
def goready(g: Any, old: int = ..., p: Any = None) -> None: ...  # twin: mnsched.g._goready
def go_here(coro: Any, name: str | None) -> Any: ...  # twin: mnsched.sched.Sched.newproc
def spawn_here(coro: Any, name: str | None) -> Any: ...  # twin: mnsched.serve.spawn_here
def newgoid(p: Any) -> int: ...  # twin: mnsched.g._newgoid
def sample_ready(g: Any) -> None: ...  # twin: mnsched.g._sample_ready
def after_fork() -> None: ...  # twin: mnsched.g._after_fork_in_child
def bind(**names: Any) -> None: ...  # twin: mnsched.p.P
def bind_chan(**names: Any) -> None: ...  # twin: mnsched.chan.Chan
def bind_sched(**names: Any) -> None: ...  # twin: mnsched.sched.Sched
