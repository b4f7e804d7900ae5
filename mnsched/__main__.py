"""``python -m mnsched`` / the ``mnsched`` command."""

from __future__ import annotations

import sys

USAGE = """\
usage: mnsched COMMAND [options]

mnsched: Go's M:N scheduler for Python's asyncio world. Goroutines run on several
event loops (Ps), one per thread, with Go's run queues, work stealing, syscall
handoff and a monitor that defeats CPU hogs.

commands:
  bench    run the same workloads under plain asyncio, uvloop and mnsched, side
           by side (mnsched bench --help for its options)
  trace    run a script with the execution trace on: mnsched trace -o out.json
           [--plot out.png] script.py [args] (open out.json in ui.perfetto.dev)
  console  attach to a running program that opened a console
           (MNSCHED_DEBUG=console=PATH): mnsched console PATH

Docs: README.md (start here) and docs/design.md (how it works).
"""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["bench"]:
        from .bench.cli import main as bench_main

        bench_main(args[1:])
        return
    if args[:1] == ["trace"]:
        from .tracetool import main as trace_main

        trace_main(args[1:])
        return
    if args[:1] == ["console"]:
        from .console import main as console_main

        console_main(args[1:])
        return
    if args[:1] in (["-h"], ["--help"], ["help"]):
        print(USAGE, end="")
        return
    print(USAGE, end="", file=sys.stderr)
    if args:
        print(f"\nmnsched: unknown command {args[0]!r}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
