"""Go's concurrent prime sieve (from the Go tour / go.dev), with mnsched channels.

A generator goroutine sends 2, 3, 4, ...; each prime found adds a filter goroutine to the
chain, dropping multiples of that prime. Run: ``python samples/sieve.py [n] [--procs N]``.
"""

from __future__ import annotations

from cli import parser

import mnsched
from mnsched import Chan


async def generate(ch: Chan[int]) -> None:
    i = 2
    while True:
        await ch.send(i)
        i += 1


async def filter_multiples(src: Chan[int], dst: Chan[int], prime: int) -> None:
    while True:
        i = await src.recv()
        if i % prime:
            await dst.send(i)


async def primes(n: int) -> list[int]:
    """The first n primes. The goroutines left running are cancelled when run() ends."""
    ch: Chan[int] = Chan()
    mnsched.go(generate(ch))
    found = []
    for _ in range(n):
        prime = await ch.recv()
        found.append(prime)
        ch1: Chan[int] = Chan()
        mnsched.go(filter_multiples(ch, ch1, prime))
        ch = ch1
    return found


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("n", nargs="?", type=int, default=100, help="how many primes")
    args = ap.parse_args()
    print(*mnsched.run(primes(args.n), procs=args.procs))


if __name__ == "__main__":
    main()
