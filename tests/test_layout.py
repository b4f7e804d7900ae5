"""The layout rules of docs/design.md ("Layers", "The G state machine"), checked on the
source: imports point one way, no private names cross modules, statuses change only
through casgstatus, invariants use check() rather than assert."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "mnsched"
MODULES = {p.stem: p for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")}
# The runtime's layers, bottom first: a module may import only from earlier layers.
LAYERS = [
    {"errors", "aio", "sigqueue", "instrument", "localservers"},
    {"m"},
    {"g", "log"},
    {"runq", "steptoken", "sudog", "trace"},
    {"chan", "sync"},
    {"selectgo", "timers"},
    {"p"},
    {"sched", "perp"},
    {"sysmon", "goroutines", "metrics"},
    {"console"},
    {"runtime"},
    {"api", "serve", "tracetool"},
    {"pytest_plugin", "gunicorn", "stress_service", "group"},
    {"stress"},
]


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), str(MODULES[name]))


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(name: str) -> list[ast.ImportFrom]:
    """Run-time relative imports (those under ``if TYPE_CHECKING`` are for annotations)."""
    out: list[ast.ImportFrom] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                out.append(node)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(_tree(name).body)
    return out


def _deps(name: str) -> set[str]:
    deps = set()
    for node in _imports(name):
        if node.module:
            deps.add(node.module.split(".")[0])
        else:  # from . import x
            deps.update(a.name for a in node.names)
    return deps & MODULES.keys()


def test_every_module_has_a_layer():
    assert set().union(*LAYERS) == MODULES.keys()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_layers(name):
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = {d for d in _deps(name) if rank[d] >= rank[name] and d != name}
    assert not upward, f"{name} imports {upward} from its own layer or above"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_cross_modules(name):
    private = [
        f"{node.module}.{a.name}"
        for node in _imports(name)
        for a in node.names
        if a.name.startswith("_")
    ]
    assert not private, f"{name} imports private names {private}"


def test_only_casgstatus_changes_a_status():
    writers = []
    for name in MODULES:
        for fn in ast.walk(_tree(name)):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                targets = node.targets if isinstance(node, ast.Assign) else []
                if any(isinstance(t, ast.Attribute) and t.attr == "_status" for t in targets):
                    writers.append(f"{name}.{fn.name}")
    # casgstatus, and the constructor that makes a G RUNNABLE
    assert sorted(writers) == ["g.__init__", "g.casgstatus"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_invariants_use_check_not_assert(name):
    asserts = [n.lineno for n in ast.walk(_tree(name)) if isinstance(n, ast.Assert)]
    assert not asserts, f"{name}: bare assert at lines {asserts} (use errors.check)"


def _status_calls():
    """(module, function called, the call) for every call of casgstatus, and of goready
    (which passes a status on to it)."""
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if called in ("casgstatus", "goready"):
                    yield name, called, node


def test_every_status_change_is_a_legal_transition():
    from mnsched import g as gmod

    def statuses(arg: ast.expr | None, default: str | None = None) -> list[int] | None:
        if isinstance(arg, ast.IfExp):  # A if cond else B: both
            a, b = statuses(arg.body), statuses(arg.orelse)
            return None if a is None or b is None else a + b
        name = default if arg is None else getattr(arg, "id", None)
        return [getattr(gmod, name)] if name in gmod.STATUS_NAMES_BY_CONST else None

    checked = []
    for module, called, call in _status_calls():
        args = list(call.args)
        kwargs = {k.arg: k.value for k in call.keywords}
        if called == "casgstatus":
            olds, news = statuses(args[1]), statuses(args[2])
            if olds is None or news is None:  # passed on by goready: see below
                assert module == "g", ast.unparse(call)
                continue
        else:  # goready(g, old=PARKED, p=None)
            olds = statuses(args[1] if len(args) > 1 else kwargs.get("old"), "PARKED")
            news = [gmod.RUNNABLE]
        assert olds is not None, f"{module}: {ast.unparse(call)}"
        for old in olds:
            for new in news:
                assert (old, new) in gmod.LEGAL_TRANSITIONS, f"{module}: {ast.unparse(call)}"
                checked.append((old, new))
    # every transition in the table is made somewhere, and nothing else is
    assert set(checked) == gmod.LEGAL_TRANSITIONS
