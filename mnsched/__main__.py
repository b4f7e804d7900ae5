"""``python -m mnsched`` / the ``mnsched`` command: ``mnsched bench [options]``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["bench"]:
        from .bench.cli import main as bench_main

        bench_main(args[1:])
        return
    print(
        "usage: mnsched bench [--quick] [--workloads W,...] [--procs 1,2,4] [--repeat N]\n"
        "                     [--json PATH] [--markdown] [--plot PATH.png]\n"
        "       (mnsched bench --help for more)",
        file=sys.stderr,
    )
    raise SystemExit(2)


if __name__ == "__main__":
    main()
