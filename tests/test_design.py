"""docs/design.md cannot drift from the code: every constant it names exists, and every
value it quotes beside one, as "`NAME` (value)", is the code's (as test_readme.py holds
the README to its commands)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import mnsched

ROOT = Path(__file__).resolve().parent.parent
DESIGN = (ROOT / "docs" / "design.md").read_text()
CORE_C = (ROOT / "mnsched" / "_core.c").read_text()

# Names design.md quotes that are not mnsched's: the OS's, CPython's, Go's.
FOREIGN = {"RLIMIT_NOFILE", "RLIMIT_AS", "TYPE_CHECKING", "SEND", "SIGINT", "SIGQUIT", "SIGTERM"}
_NAME = re.compile(r"`(?:[a-z_]+\.)?([A-Z][A-Z0-9_]{2,})`")
# "`NAME` (32)", "`NAME` (1 s)", "`NAME` (0.5 ms)": a value quoted beside the name.
_QUOTED = re.compile(r"`(?:[a-z_]+\.)?([A-Z][A-Z0-9_]{2,})` \((\d[\d_,.]*)(?: (ms|s|µs))?[),;]")
# "1 ms (`BATCH_TIME`", "10 ms: `HOG_THRESHOLD`": a value quoted before the name.
_QUOTED_BEFORE = re.compile(r"(\d[\d.]*) (ms|s|µs)(?: \(|: )`(?:[a-z_]+\.)?([A-Z][A-Z0-9_]{2,})`")
_UNIT = {None: 1.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6}


def _quoted() -> set[tuple[str, str, str]]:
    before = {(name, value, unit) for value, unit, name in _QUOTED_BEFORE.findall(DESIGN)}
    return set(_QUOTED.findall(DESIGN)) | before


def _constants() -> dict[str, object]:
    """Every upper-case name of every mnsched module (and the C core's #defines and
    statics, as names only)."""
    found: dict[str, object] = {}
    for mod in pkgutil.walk_packages(mnsched.__path__, "mnsched."):
        if mod.name.endswith(("__main__", "gunicorn", "pytest_plugin")):
            continue  # (entry points with side effects; they define no constants design.md quotes)
        module = importlib.import_module(mod.name)
        for name, value in vars(module).items():
            if name.isupper():
                found.setdefault(name, value)
    return found


CONSTANTS = _constants()


def _in_core(name: str) -> bool:
    return re.search(rf"\b{name}\b", CORE_C) is not None


@pytest.mark.parametrize("name", sorted(set(_NAME.findall(DESIGN)) - FOREIGN))
def test_every_constant_design_md_names_exists(name):
    assert name in CONSTANTS or _in_core(name), (
        f"docs/design.md names `{name}`, which no mnsched module (nor _core.c) defines: "
        "rename it there, or say what it became"
    )


@pytest.mark.parametrize(("name", "quoted", "unit"), sorted(_quoted()))
def test_every_value_design_md_quotes_is_the_codes(name, quoted, unit):
    value = CONSTANTS.get(name)
    assert isinstance(value, (int, float)), f"`{name}` ({quoted}) is not a number in the code"
    want = float(quoted.replace(",", "").replace("_", "")) * _UNIT[unit or None]
    assert value == pytest.approx(want), (
        f"docs/design.md says `{name}` ({quoted}{' ' + unit if unit else ''}); the code has "
        f"{value!r}"
    )


def test_the_checks_see_what_design_md_quotes():
    # A pattern that stopped matching would make the tests above vacuous.
    assert len(set(_NAME.findall(DESIGN))) >= 20
    assert {n for n, _, _ in _quoted()} >= {"INLINE_JOIN_DEPTH", "BATCH_TIME", "HOG_THRESHOLD"}
