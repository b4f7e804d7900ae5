"""The live console (Go's schedtrace and pprof's goroutine page, tokio-console's idea):
``mnsched console PATH`` attaches to a running process whose runtime opened it with
``MNSCHED_DEBUG=console=PATH`` or ``Runtime(console=PATH)``.

The process side is a Unix socket, created mode 0600 (only its user may connect; never a
TCP port), served by a thread of its own: it touches no loop and runs no goroutine code,
reading what ``stats()`` and ``stacks()`` read from any thread. One request per line, one
JSON answer per line: ``snapshot`` (the Ps, the goroutines by state and wait reason, the
longest waits, the current steps, the latency and step-time histograms) and ``stack N``
(goroutine N's stack). A process that did not ask for it opens nothing.

The client redraws a screen of it every second (``--interval``); in a terminal, ``s``
then a goroutine id and Enter shows that goroutine's stack below, ``q`` quits. Out of a
terminal (``--once``, or a pipe) it prints one screen.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from .goroutines import stacks

if TYPE_CHECKING:
    from .runtime import Runtime

# How many goroutines the snapshot lists by how long they have waited (the rest are
# counted by state and reason): a screen's worth.
LONGEST_WAITS = 10
# A request longer than this is refused (a line is "snapshot" or "stack N").
MAX_REQUEST = 256


class ConsoleServer:
    """The process side: a Unix socket at ``path`` answering snapshots of ``rt``."""

    def __init__(self, rt: Runtime, path: str) -> None:
        """Create the socket (ValueError if path is taken): before the runtime starts
        anything, so that a refusal leaves nothing behind. ``serve()`` then answers."""
        self.rt = rt
        self.path = path
        self._sock = _listen(path)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="mnsched-console", daemon=True)

    def serve(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop serving, join the thread, remove the socket file."""
        os.write(self._stop_w, b"x")
        if self._thread.ident is not None:  # (serve() ran)
            self._thread.join()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        self._sock.close()
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _serve(self) -> None:
        clients: dict[int, tuple[socket.socket, bytearray]] = {}
        try:
            while True:
                fds = [self._stop_r, self._sock.fileno(), *clients]
                ready, _, _ = select.select(fds, [], [])
                if self._stop_r in ready:
                    return
                if self._sock.fileno() in ready:
                    conn, _ = self._sock.accept()
                    clients[conn.fileno()] = (conn, bytearray())
                for fd in ready:
                    if fd in clients and not self._read(*clients[fd]):
                        clients.pop(fd)[0].close()
        finally:
            for conn, _ in clients.values():
                conn.close()

    def _read(self, conn: socket.socket, buf: bytearray) -> bool:
        """Answer the complete requests conn sent; False once it is gone or misbehaves."""
        try:
            data = conn.recv(4096)
        except OSError:
            return False
        if not data:
            return False
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            try:
                answer = self.answer(line.decode().strip())
            except Exception as e:  # a console must never take the process down
                answer = {"error": f"{type(e).__name__}: {e}"}
            try:
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                return False
        return len(buf) <= MAX_REQUEST

    def answer(self, request: str) -> dict[str, Any]:
        verb, _, arg = request.partition(" ")
        if verb == "snapshot":
            return snapshot(self.rt)
        if verb == "stack":
            try:
                gid = int(arg)
            except ValueError:
                return {"error": f"stack takes a goroutine id, as 'stack 12'; not {arg!r}"}
            for info in stacks(self.rt):
                if info.id == gid:
                    return {"id": gid, "stack": info.format()}
            return {"error": f"no goroutine {gid} (it may have ended)"}
        return {"error": f"unknown request {request!r}: 'snapshot' or 'stack N'"}


def _listen(path: str) -> socket.socket:
    """A listening Unix socket at path, mode 0600 from the start (the umask covers the
    moment between bind and chmod). A stale socket file (nobody listening) is replaced;
    anything else at path is left alone and refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ValueError(f"console={path!r}: something that is not a socket is there")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: its process is gone
        else:
            raise ValueError(f"console={path!r}: another process is serving a console there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise ValueError(f"console={path!r}: cannot create the socket: {e}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(8)
    return sock


def snapshot(rt: Runtime) -> dict[str, Any]:
    """What the console shows, read from any thread."""
    now = time.monotonic()
    st = rt.stats()
    sched = rt.sched
    ps = []
    for i, p in enumerate(sched.allp):
        g = p.curg
        ps.append(
            {
                "id": p.id,
                "state": "running" if g is not None else "active" if p.active else "idle",
                "runq": len(p.runq) + len(p.runnext),
                "inbox": len(p.inbox),
                "steals": st["steals_per_p"][i] if i < len(st["steals_per_p"]) else 0,
                "parks": st["parks"][i] if i < len(st["parks"]) else 0,
                "busy_s": round(st["busy"][i], 3) if i < len(st["busy"]) else 0.0,
                "step": None if g is None else {"g": g.id, "name": g.name},
                "step_ms": round((now - p.last_clock) * 1000, 1) if g is not None else None,
                "stuck": bool(p.stuck_since),
                "spare": p in sched.spares,
            }
        )
    infos = [i for i in stacks(rt) if not i.task]
    waits = sorted((i for i in infos if i.since is not None), key=lambda i: -(i.since or 0))
    return {
        "pid": os.getpid(),
        "procs": ps,
        "global_queue": st["global_queue"],
        "goroutines": st["goroutines"],
        "by_state": dict(Counter(i.state for i in infos)),
        "by_wait": dict(Counter(i.wait_reason for i in infos if i.wait_reason)),
        "longest": [
            {
                "id": i.id,
                "name": i.name,
                "what": i.wait_reason or i.state,
                "since_s": round(i.since or 0.0, 3),
                "p": i.p,
            }
            for i in waits[:LONGEST_WAITS]
        ],
        "hogs": st["hogs"],
        "handoffs": st["handoffs"],
        "spawned": st["spawned"],
        "in_syscall": st["in_syscall"],
        "m_threads": st["m_threads"],
        "sched_latency": _percentiles(st["sched_latency"]),
        "step_time": _percentiles(st["step_time"]),
    }


def _percentiles(h: dict[str, Any]) -> dict[str, Any]:
    """p50, p99 and the largest bucket of a log2 histogram, as 'up to' bounds in us."""
    counts, bounds = h["counts"], h["bounds_us"]
    total = sum(counts)
    out: dict[str, Any] = {"samples": total}
    if not total:
        return out
    for name, q in (("p50_us", 0.5), ("p99_us", 0.99)):
        seen = 0
        for c, b in zip(counts, bounds, strict=True):
            seen += c
            if seen >= q * total:
                out[name] = b
                break
    out["max_us"] = max(b for c, b in zip(counts, bounds, strict=True) if c)
    return out


# -- the client -----------------------------------------------------------------------------


class Client:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise SystemExit(
                f"mnsched console: cannot attach to {path!r} ({e.strerror}): start the "
                "program with MNSCHED_DEBUG=console=PATH or Runtime(console=PATH)"
            ) from None
        self.file = self.sock.makefile("rwb")

    def ask(self, request: str) -> dict[str, Any]:
        self.file.write(request.encode() + b"\n")
        self.file.flush()
        line = self.file.readline()
        if not line:
            raise SystemExit("mnsched console: the process has gone")
        answer: dict[str, Any] = json.loads(line)
        return answer


def render(snap: dict[str, Any], stack: str | None = None) -> str:
    """One screen of the console."""
    lat, step = snap["sched_latency"], snap["step_time"]

    def us(h: dict[str, Any], k: str) -> str:
        return "-" if k not in h else f"{h[k] / 1000:.1f}ms" if h[k] >= 1000 else f"{h[k]}us"

    lines = [
        f"mnsched console: pid {snap['pid']}   goroutines {snap['goroutines']}   "
        f"spawned {snap['spawned']}   global queue {snap['global_queue']}",
        f"hogs {snap['hogs']}   handoffs {snap['handoffs']}   in syscalls "
        f"{snap['in_syscall']} (M threads {snap['m_threads']})",
        f"scheduling latency p50 <={us(lat, 'p50_us')} p99 <={us(lat, 'p99_us')} "
        f"max <={us(lat, 'max_us')}   step time p50 <={us(step, 'p50_us')} "
        f"p99 <={us(step, 'p99_us')} max <={us(step, 'max_us')}",
        "",
        f"{'P':<5}{'state':<10}{'runq':>6}{'inbox':>6}{'steals':>8}{'parks':>9}{'busy s':>9}  step",
    ]
    for p in snap["procs"]:
        step_s = "" if p["step"] is None else (
            f"G{p['step']['g']} {p['step']['name']!r} {p['step_ms']} ms"
            + (" STUCK" if p["stuck"] else "")
        )  # fmt: skip
        name = f"P{p['id']}" + ("*" if p["spare"] else "")
        lines.append(
            f"{name:<5}{p['state']:<10}{p['runq']:>6}{p['inbox']:>6}{p['steals']:>8}"
            f"{p['parks']:>9}{p['busy_s']:>9.2f}  {step_s}"
        )
    states = "  ".join(f"{k} {v}" for k, v in sorted(snap["by_state"].items()))
    reasons = "  ".join(f"{k} {v}" for k, v in sorted(snap["by_wait"].items()))
    lines += ["", f"goroutines by state: {states or '-'}", f"waiting on: {reasons or '-'}", ""]
    lines.append("longest waits:")
    for g in snap["longest"]:
        where = "" if g["p"] is None else f" P{g['p']}"
        lines.append(f"  G{g['id']:<7} {g['what']:<22} {g['since_s']:>9.3f} s{where}  {g['name']}")
    lines += ["", "s + id + Enter: a goroutine's stack   q: quit   (*: a spare P)"]
    if stack is not None:
        lines += ["", stack]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="mnsched console",
        description="Attach to a running mnsched program that opened a console "
        "(MNSCHED_DEBUG=console=PATH or Runtime(console=PATH)) and show its Ps and "
        "goroutines live.",
    )
    ap.add_argument("path", help="the console's socket path")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between screens")
    ap.add_argument("--once", action="store_true", help="print one screen and exit")
    ap.add_argument("--stack", type=int, metavar="ID", help="print goroutine ID's stack and exit")
    args = ap.parse_args(argv)
    out = sys.stdout if out is None else out
    client = Client(args.path)
    if args.stack is not None:
        answer = client.ask(f"stack {args.stack}")
        out.write(answer.get("stack", answer.get("error", "")) + "\n")
        return
    if args.once or not sys.stdin.isatty():
        out.write(render(client.ask("snapshot")) + "\n")
        return
    _live(client, args.interval, out)


def _live(client: Client, interval: float, out: IO[str]) -> None:
    """Redraw every interval; keys: s (then an id and Enter) for a stack, q to quit."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    stack: str | None = None
    typing: str | None = None  # the id being typed after 's'
    try:
        tty.setcbreak(fd)
        while True:
            screen = render(client.ask("snapshot"), stack)
            if typing is not None:
                screen += f"\n\ngoroutine id: {typing}"
            out.write("\x1b[H\x1b[2J" + screen + "\n")
            out.flush()
            deadline = time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([fd], [], [], left)[0]:
                    break
                key = os.read(fd, 1).decode(errors="replace")
                if typing is None:
                    if key == "q":
                        return
                    if key == "s":
                        typing = ""
                        break
                elif key in ("\n", "\r"):
                    if typing.isdigit():
                        answer = client.ask(f"stack {typing}")
                        stack = answer.get("stack", answer.get("error"))
                    typing = None
                    break
                elif key.isdigit():
                    typing += key
                    break
                elif key in ("\x7f", "\b"):
                    typing = typing[:-1]
                    break
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
