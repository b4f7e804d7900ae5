"""The soak (``python -m mnsched.stress``): it runs clean for a short while, and its
checks catch what they are there to catch."""

from __future__ import annotations

import random
import subprocess
import sys

import mnsched
from mnsched.stress import Round, main


def test_a_short_soak_passes():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnsched.stress",
            "--minutes",
            "0.1",
            "--round-seconds",
            "2",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rounds passed" in proc.stdout and "FAILED" not in proc.stdout


def _checked_round(tamper) -> list[str]:
    r = Round(random.Random(3), 0.3)

    async def body():
        ledger = await r.main()
        assert ledger.violations == [] and ledger.sent
        tamper(r.ledger)
        ledger.violations.clear()
        r.check(serial=True)
        return ledger.violations

    return mnsched.run(body(), procs=2)


def test_the_checks_catch_a_lost_a_duplicated_and_a_foreign_value():
    assert any("lost" in v for v in _checked_round(lambda L: L.got.remove(L.sent[0])))
    assert any("twice" in v for v in _checked_round(lambda L: L.got.append(L.sent[0])))
    assert any("never sent" in v for v in _checked_round(lambda L: L.got.append(-1)))


def test_the_checks_catch_a_skipped_or_doubled_finally_and_a_lost_increment():
    def skip(L):
        L.finals.pop(next(iter(L.started)))

    def double(L):
        L.finals[next(iter(L.started))] += 1

    def lose(L):
        L.count -= 1

    def lose_plain(L):
        L.plain_increments += 1

    assert any("never ran" in v for v in _checked_round(skip))
    assert any("more than once" in v for v in _checked_round(double))
    assert any("mutex" in v for v in _checked_round(lose))
    assert any("serial steps" in v for v in _checked_round(lose_plain))


def test_bad_arguments(capsys):
    for argv in (["--procs", "x"], ["--loops", "trio"], ["--minutes", "0"]):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
    assert "--procs takes" in capsys.readouterr().err
