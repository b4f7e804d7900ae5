"""The layout rules of docs/design.md ("Layers", "The G state machine"), checked on the
source: imports point one way, no private names cross modules, statuses change only
through casgstatus, invariants use check() rather than assert."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "mnsched"
MODULES = {p.stem: p for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")}
# The runtime's layers, bottom first: a module may import only from earlier layers.
LAYERS = [
    {"errors", "aio", "sigqueue", "instrument", "localservers"},
    {"lockrank"},
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


_TEXT_SUFFIXES = {".py", ".pyi", ".md", ".c", ".go", ".toml", ".cfg", ".txt", ".sh"}


def test_no_issue_tracker_references():
    """The issue tracker is not part of the repository: code, tests, docs and the
    CHANGELOG say what they mean in their own words, never "issue N"."""
    root = PKG.parent
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(
            (part.startswith(".") and part != ".ci")
            or part == "build"
            or part.endswith(".egg-info")
            for part in rel.parts[:-1]
        ):
            continue
        if path.is_file() and (path.suffix in _TEXT_SUFFIXES or rel.as_posix() == ".ci/run"):
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if re.search(r"\bissues? #?\d+", line, re.IGNORECASE):
                    found.append(f"{rel}:{n}: {line.strip()[:80]}")
    assert not found, "\n".join(found)


# -- the C twin: mnsched/_core.pyi names every entry of _core.c and its Python twin -------

CORE_C = re.sub(r"/\*.*?\*/", "", (PKG / "_core.c").read_text(), flags=re.S)  # code only
CORE_PYI = (PKG / "_core.pyi").read_text()


def _core_exports() -> set[str]:
    """What _core.c puts in its module: its objects and its method table's functions."""
    objects = set(re.findall(r'PyModule_AddObjectRef\(mod, "(\w+)"', CORE_C))
    table = re.search(r"static PyMethodDef core_methods\[\] = \{(.*?)\{NULL", CORE_C, re.S)
    assert table is not None
    return objects | set(re.findall(r'\{"(\w+)",', table.group(1)))


def _stub_twins() -> dict[str, str | None]:
    """Each top-level name of _core.pyi, and the twin its line (or the line above) names."""
    lines = CORE_PYI.splitlines()
    twins: dict[str, str | None] = {}
    for node in ast.parse(CORE_PYI).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AnnAssign)):
            name = node.target.id if isinstance(node, ast.AnnAssign) else node.name  # type: ignore[union-attr]
            near = " ".join(lines[max(0, node.lineno - 2) : node.lineno])
            found = re.search(r"# twin: ([\w.]+)", near)
            twins[name] = found.group(1) if found else None
    return twins


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_core_pyi_names_every_c_entry_and_nothing_else():
    assert set(_stub_twins()) == _core_exports()


@pytest.mark.parametrize(("name", "twin"), sorted(_stub_twins().items()))
def test_every_c_entry_has_a_python_twin(name, twin):
    assert twin is not None, f"_core.pyi: {name} has no '# twin: module.name'"
    _resolve(twin)  # it exists


def _switches() -> list[str]:
    """Where the code chooses a driver (`CORE is None` / `CORE is not None`): in a
    function, its path (module.Class.function); in a module or class body, the name the
    choice sets (`<call>` for an `if` that calls, `<raise>` for one that raises)."""
    found = []
    for name in MODULES:
        tree = _tree(name)
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Compare)
                and isinstance(node.left, ast.Name)
                and node.left.id == "CORE"
                and isinstance(node.comparators[0], ast.Constant)
                and node.comparators[0].value is None
            ):
                continue
            scope: list[ast.AST] = []
            n, where = node, None
            while n in parents:
                n = parents[n]
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    scope.append(n)
                elif where is None and not scope:
                    where = _switch_sets(n)
            path = [x.name for x in reversed(scope)]  # type: ignore[attr-defined]
            if not scope or isinstance(scope[0], ast.ClassDef):
                path.append(where or "?")
            found.append(".".join([name, *path]))
    return found


def _switch_sets(n: ast.AST) -> str | None:
    """What a module- or class-level statement holding a switch decides."""
    if isinstance(n, (ast.Assign, ast.AnnAssign)):
        t = n.targets[0] if isinstance(n, ast.Assign) else n.target
        return getattr(t, "id", None)
    if isinstance(n, ast.If):
        first = n.body[0]
        if isinstance(first, (ast.Assign, ast.AnnAssign)):
            return _switch_sets(first)
        if isinstance(first, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return first.name
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Call):
            return f"<{ast.unparse(first.value.func).split('.')[-1]}>"
        return f"<{type(first).__name__.lower()}>"
    return None


def test_every_driver_switch_is_in_core_pyi():
    listed = re.findall(r"^# switch: ([\w.<>]+)", CORE_PYI, re.M)
    assert sorted(_switches()) == sorted(listed), (
        "a `CORE is None` switch was added or moved: list it in mnsched/_core.pyi with "
        "what it chooses (and the C entry its twin is)"
    )


def _c_statuses(arg: str, body: str) -> set[str] | None:
    """The statuses a C argument can be: S_X; `c ? S_X : S_Y`; a variable set so in the
    function; None for goready's `old` (checked at goready's callers)."""
    arg = arg.strip()
    if arg.startswith("S_"):
        return {arg[2:]}
    if arg == "old":
        return None
    assigned = re.search(rf"\b{arg} = ([^;]+);", body)
    assert assigned is not None, f"_core.c: cannot tell what status '{arg}' is"
    return set(re.findall(r"\bS_([A-Z]+)\b", assigned.group(1)))


def test_every_c_status_change_is_a_legal_transition():
    from mnsched import g as gmod

    functions = re.split(r"\n(?=static |[a-z_]+\()", CORE_C)  # roughly, one per function
    checked = []
    for body in functions:
        for old, new in re.findall(r"\bcasgstatus\(\w+, (\w+), (\w+)\)", body):
            olds, news = _c_statuses(old, body), _c_statuses(new, body)
            for o in olds if olds is not None else []:
                for n in news or ():
                    checked.append((getattr(gmod, o), getattr(gmod, n)))
        # goready(p, g, OLD): OLD -> RUNNABLE
        for old in re.findall(r"\bgoready\(\w+, [\w\[\]]+, ([^;]+?)\)(?: <| ==|;|\))", body):
            for o in re.findall(r"\bS_([A-Z]+)\b", old):
                checked.append((getattr(gmod, o), gmod.RUNNABLE))
    assert checked, "found no status change in _core.c: the patterns above are stale"
    for old, new in checked:
        assert (old, new) in gmod.LEGAL_TRANSITIONS, (
            gmod.STATUS_NAMES[old],
            gmod.STATUS_NAMES[new],
        )
    # only casgstatus writes a status, and new_g makes a G RUNNABLE (as G.__init__)
    writes = re.findall(r"(?:slot_set\(\w+, g_status|SLOT\(\w+, g_status\) =)[^;]*;", CORE_C)
    assert writes == ["slot_set(g, g_status, new);", "SLOT(g, g_status) = Py_NewRef(S_RUNNABLE);"]
