"""Run modules of CPython's own test_asyncio (the ``test`` package pyenv's Pythons ship)
and write each test's outcome as JSON: ``python cpython.py OUT.json MODULE...``.

Run by ``run.py`` once plainly and once per mnsched mode (see goroutines.py); each
test's id and outcome (pass, fail, error, skip, xfail, xpass; n/a for a test the mode cannot
run, see ``main``) is printed to stderr as it
ends, so that a test that hangs is named by the last line.
"""

from __future__ import annotations

import json
import sys
import time
import unittest
from collections.abc import Iterator
from typing import Any

import goroutines


class Outcomes(unittest.TestResult):
    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, str] = {}
        self.details: dict[str, str] = {}

    def _record(self, test: Any, outcome: str, detail: str = "") -> None:
        self.outcomes[test.id()] = outcome
        if detail:
            self.details[test.id()] = detail[-3000:]
        print(f"{outcome:5} {test.id()}", file=sys.stderr, flush=True)

    def addSuccess(self, test: Any) -> None:
        self._record(test, "pass")

    def addFailure(self, test: Any, err: Any) -> None:
        self._record(test, "fail", self._exc_info_to_string(err, test))

    def addError(self, test: Any, err: Any) -> None:
        self._record(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test: Any, reason: str) -> None:
        self._record(test, "skip", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        self._record(test, "xfail")

    def addUnexpectedSuccess(self, test: Any) -> None:
        self._record(test, "xpass")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._record(subtest, kind, self._exc_info_to_string(err, test))


def _tests(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _tests(t)
        else:
            yield t  # type: ignore[misc]


def main(out: str, modules: list[str]) -> None:
    goroutines.install()
    result = Outcomes()
    start = time.monotonic()
    for name in modules:
        started = time.monotonic()
        suite = unittest.defaultTestLoader.loadTestsFromName(f"test.test_asyncio.{name}")
        if goroutines.MODE == "other":
            # A test that is not an IsolatedAsyncioTestCase awaits objects of its own
            # loop (self.loop): run on another loop it fails as a Task of another loop
            # would. Only the others run, through a suite (class and module fixtures).
            tests = list(_tests(suite))
            suite = unittest.TestSuite(
                x for x in tests if isinstance(x, unittest.IsolatedAsyncioTestCase)
            )
            for x in tests:
                if not isinstance(x, unittest.IsolatedAsyncioTestCase):
                    result.outcomes[x.id()] = "n/a"
        suite.run(result)
        print(f"module {name}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    with open(out, "w") as f:
        json.dump(
            {
                "outcomes": result.outcomes,
                "details": result.details,
                "seconds": time.monotonic() - start,
            },
            f,
            indent=0,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
