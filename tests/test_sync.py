"""WaitGroup, Mutex, Once, tickers, and deadlock detection."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import mnsched
from mnsched import Chan, Deadlock, Mutex, Once, WaitGroup
from mnsched.serve import start_server


def test_waitgroup_wait_returns_at_once_at_zero(run):
    async def main():
        wg = WaitGroup()
        await wg.wait()
        return wg.count

    assert run(main()) == 0


def test_waitgroup_negative_counter_raises(run):
    async def main():
        with pytest.raises(ValueError, match="negative WaitGroup counter"):
            WaitGroup().done()
        return True

    assert run(main())


def test_waitgroup_waits_for_every_done(run):
    async def main():
        wg = WaitGroup()
        done = []

        async def work(i):
            await mnsched.sleep(0.001 * (i % 3))
            done.append(i)
            wg.done()

        for i in range(100):
            wg.add(1)
            mnsched.go(work(i))
        await wg.wait()
        return sorted(done), wg.count

    assert run(main()) == (list(range(100)), 0)


def test_waitgroup_from_a_plain_thread(runtime):
    wg = WaitGroup()
    wg.add(3)
    for _ in range(3):
        runtime.go(_done_later(wg))
    wg.wait_blocking(timeout=10)
    wg.add(1)
    with pytest.raises(TimeoutError):
        wg.wait_blocking(timeout=0.01)
    wg.done()


async def _done_later(wg):
    await mnsched.sleep(0.01)
    wg.done()


def test_mutex_excludes_across_ps(run):
    async def main():
        mu = Mutex()
        counter = [0]

        async def bump():
            for _ in range(200):
                async with mu:
                    v = counter[0]
                    await mnsched.gosched()  # others run here, but not in here
                    counter[0] = v + 1

        gs = [mnsched.go(bump()) for _ in range(8)]
        for g in gs:
            await g
        assert not mu.locked()
        with pytest.raises(RuntimeError, match="unlock of unlocked mutex"):
            mu.unlock()
        assert mu.try_lock() and not mu.try_lock()
        mu.unlock()
        return counter[0]

    assert run(main()) == 8 * 200


def test_mutex_with_plain_threads(runtime):
    mu = Mutex()
    total = [0]

    def thread_bump():
        for _ in range(100):
            mu.lock_blocking(timeout=10)
            total[0] += 1
            mu.unlock()

    async def g_bump():
        for _ in range(100):
            async with mu:
                total[0] += 1
                await mnsched.sleep(0)

    ts = [threading.Thread(target=thread_bump) for _ in range(2)]
    for t in ts:
        t.start()
    gs = [runtime.go(g_bump()) for _ in range(2)]
    for t in ts:
        t.join(30)
    for g in gs:
        g.result(timeout=30)
    assert total[0] == 400


def test_once(run):
    async def main():
        once = Once()
        calls = []

        async def setup():
            calls.append(1)
            await mnsched.sleep(0.01)

        async def user():
            await once.do(setup)
            return len(calls)

        gs = [mnsched.go(user()) for _ in range(10)]
        seen = [await g for g in gs]
        return calls, seen, once.done

    calls, seen, done = run(main())
    assert calls == [1] and seen == [1] * 10 and done


def test_once_that_raises_counts_as_done(run):
    async def main():
        once = Once()

        def boom():
            raise ValueError("setup failed")

        with pytest.raises(ValueError):
            await once.do(boom)
        await once.do(boom)  # not called again
        return once.done

    assert run(main())


def test_ticker(run):
    async def main():
        t = mnsched.Ticker(0.005)
        stamps = [await t.c.recv() for _ in range(5)]
        t.stop()
        assert stamps == sorted(stamps)
        ch = mnsched.tick(0.002)
        await ch.recv()
        with pytest.raises(ValueError):
            mnsched.Ticker(0)
        return True

    assert run(main())


def test_deadlock_is_reported(run):
    async def main():
        ch = Chan()

        async def stuck():
            await ch.send(1)
            await ch.send(2)

        mnsched.go(stuck())
        await ch.recv()
        await Chan().recv()  # nobody will ever send

    with pytest.raises(Deadlock, match=r"all goroutines are asleep - deadlock! 2 goroutine") as e:
        run(main())
    # each goroutine with its wait reason, how long it has waited, and on what
    assert re.search(
        r"'G\d+' \S*main parked \(chan receive, \d+ ms\).*: receive from <Chan", str(e.value)
    )
    assert re.search(r"stuck parked \(chan send, \d+ ms\).*: send to <Chan", str(e.value))
    # and where each one is, as Go's goroutine dump says: file, line, function
    report = str(e.value)
    assert re.search(r'File ".*test_sync.py", line \d+, in stuck\n +await ch.send\(2\)', report)
    assert re.search(r'File ".*test_sync.py", line \d+, in main\n +await Chan\(\).recv', report)
    assert "mnsched/chan.py" not in report  # mnsched's own frames are left out


def test_deadlock_on_waitgroup_and_mutex(run):
    async def main():
        wg = WaitGroup()
        wg.add(1)
        await wg.wait()

    with pytest.raises(Deadlock, match="wait on <WaitGroup count=1"):
        run(main())


def test_no_false_deadlock_while_sleeping_in_syscall_or_asyncio(run):
    async def main():
        ch = Chan()

        async def later_sleep():
            await mnsched.sleep(0.2)
            await ch.send("slept")

        async def later_syscall():
            await mnsched.syscall(time.sleep, 0.2)
            await ch.send("syscall")

        async def later_asyncio():
            await asyncio.sleep(0.2)
            await ch.send("asyncio")

        out = []
        for f in (later_sleep, later_syscall, later_asyncio):
            mnsched.go(f())
            out.append(await ch.recv())
        return out

    assert run(main()) == ["slept", "syscall", "asyncio"]


def test_no_false_deadlock_when_a_thread_will_send(run):
    ch = Chan()

    async def main():
        # the thread has not touched the channel yet: only its existence tells
        threading.Timer(0.2, ch.send_blocking, args=("from thread",)).start()
        return await ch.recv()

    assert run(main()) == "from thread"


CLIENT = """
import socket, sys, time
time.sleep(0.3)  # longer than the detector takes to decide (two sysmon rounds)
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
    s.sendall(b"ping")
    s.recv(10)
"""


def test_no_false_deadlock_while_a_server_listens(run):
    # The aiohttp_service keep-alive idiom: main waits on a channel that only a request
    # handler sends on; nothing else runs until a client (another process) connects.
    async def main():
        got = Chan()

        async def handle(reader, writer):
            await got.send(await reader.read(4))
            writer.write(b"pong")
            await writer.drain()
            writer.close()

        async with await start_server(handle) as server:
            client = subprocess.Popen([sys.executable, "-c", CLIENT, str(server.port)])
            try:
                return await got.recv()
            finally:
                await mnsched.syscall(client.wait, 10)

    assert run(main()) == b"ping"


def test_no_false_deadlock_awaiting_another_runtimes_goroutine(run):
    with mnsched.Runtime(procs=1) as other:
        g = other.go(mnsched.sleep(0.3, "from the other runtime"))

        async def main():
            return await g  # parked on a goroutine only the other runtime can end

        assert run(main()) == "from the other runtime"


def test_network_may_wake():
    probe = "from mnsched.sysmon import network_may_wake as n; import socket; "
    pair = probe + "a, b = socket.socketpair(); print(n())"
    listener = probe + "s = socket.create_server(('127.0.0.1', 0)); print(n())"
    udp = probe + "s = socket.socket(type=socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0)); print(n())"
    outs = [
        subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, check=True)
        for c in (pair, listener, udp)
    ]
    assert [o.stdout.strip() for o in outs] == ["False", "True", "True"]


SIGNALLER = """
import os, signal, sys, time
time.sleep(0.3)  # longer than the detector takes to decide (two sysmon rounds)
os.kill(int(sys.argv[1]), signal.SIGUSR1)
"""


@pytest.mark.parametrize("how", ["signal.signal", "loop.add_signal_handler"])
def test_no_false_deadlock_while_a_signal_handler_may_send(run, how):
    # Go's checkdead does not fire while signal.Notify waits for signals either.
    async def main():
        ch = Chan(1)
        if how == "signal.signal":
            signal.signal(signal.SIGUSR1, lambda *_: ch.try_send("signalled"))
        else:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGUSR1, ch.try_send, "signalled")
        child = subprocess.Popen([sys.executable, "-c", SIGNALLER, str(os.getpid())])
        try:
            return await ch.recv()
        finally:
            await mnsched.syscall(child.wait, 10)
            if how == "signal.signal":
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            else:
                loop.remove_signal_handler(signal.SIGUSR1)

    assert run(main()) == "signalled"
