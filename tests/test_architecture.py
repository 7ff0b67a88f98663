"""The architecture contract: janitor's modules form layers, each importing only its own and
lower ones (docs/architecture.md).

Every module under janitor/ is parsed with `ast`; every import counts, module-level and
inside functions alike (a lazy import is still a dependency). Imports under
`if TYPE_CHECKING:` are left out: they exist for annotations only and never run, which is
how the action contract names the engine's context types without importing the engine.

Layers, lowest first (a module may import its own layer and any lower one):

0. basics: exceptions, units, events, the process-wide helpers that import nothing of janitor's
   above them.
1. fs: reaching files safely as root, janitor's own state (catalog, trash, holds, run lock)
   and the archive storage targets.
2. contract: what an action is (janitor/actions/base.py) and the registry of actions by name.
3. policy: the policy files become typed objects (janitor/config.py).
4. engine: plan, planner, executor, runner and what a run records; never imports an action
   module, it looks actions up by name in the registry.
5. plug-ins: the built-in actions, one module each, registering themselves.
6. operations: commands' results put into words, tables, HTML (render, report, web) and the
   commands that write to the streams they are given (guard, archive restore).
7. front ends: the CLI, the HTTP server, the demo, the console entry point, the error
   boundary and the plug-in loader.

Also checked: no import cycles; no module imports another module's private (`_name`)
names; only layers 6 and 7 print or touch sys.stdout, apart from the two sinks the library
writes through (the event log and the progress line), which are handed their stream.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "janitor"

LAYERS: list[tuple[str, set[str]]] = [
    ("basics", {"janitor", "errors", "units", "fleet", "disk", "procfs", "scan", "yamlsource", "globs", "events",
                "runstop", "progress", "policyfiles", "guardcache"}),
    ("fs", {"asowner", "safepath", "state", "catalog", "logcut", "trash", "reconcile", "history", "holds",
            "targets", "targets.base", "targets.filesystem", "targets.s3"}),
    ("contract", {"actions", "actions.base"}),
    ("policy", {"config"}),
    ("engine", {"planitem", "facttable", "walksplit", "plan", "planner", "execute", "runner", "savedplan", "trashops",
                "samples", "watch", "metrics"}),
    ("plug-ins", {"actions.archive", "actions.delete", "actions.quota", "actions.softdelete", "actions.truncate",
                  "actions.warn"}),
    ("operations", {"render", "report", "web", "archiveops", "guard"}),
    ("front ends", {"cli", "server", "demo", "entry", "__main__", "failures", "plugins"}),
]
# the library's output sinks: each writes to the stream it was handed (stderr by default)
SINKS = {"events", "progress"}
MAY_PRINT = {"operations", "front ends"}


@dataclass
class Module:
    name: str  # relative to the package: "actions.base"; the package itself is "janitor"
    imports: dict[str, int] = field(default_factory=dict)  # imported module -> first line
    private: list[tuple[str, str, int]] = field(default_factory=list)  # (module, name, line)
    prints: list[int] = field(default_factory=list)  # lines that print or use sys.stdout


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def _writes_output(node: ast.AST) -> bool:
    """A call of print(), or any use of sys.stdout."""
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id == "print"
    return (isinstance(node, ast.Attribute) and node.attr == "stdout" and isinstance(node.value, ast.Name)
            and node.value.id == "sys")


def parse_package(root: Path) -> dict[str, Module]:
    """Every module under `root` with what it imports (resolved to modules of the package)."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts) or root.name] = path
    pkg = root.name

    def known(dotted: str) -> str | None:
        """The module of the package that `dotted` (absolute, "janitor.x.y") names, if any."""
        if dotted != pkg and not dotted.startswith(pkg + "."):
            return None
        rel = dotted[len(pkg) + 1:] or pkg
        while rel not in files and "." in rel:
            rel = rel.rsplit(".", 1)[0]
        return rel if rel in files else pkg

    modules = {}
    for name, path in files.items():
        mod = modules[name] = Module(name)
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        is_pkg = path.name == "__init__.py"
        here = [pkg] + ([] if name == pkg else name.split("."))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = known(alias.name)
                    if target is not None and target != name:
                        mod.imports.setdefault(target, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here if is_pkg else here[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    dotted = ".".join(base + ([node.module] if node.module else []))
                else:
                    dotted = node.module or ""
                source = known(dotted)
                if source is None:
                    continue
                for alias in node.names:
                    sub = known(f"{dotted}.{alias.name}")
                    target = sub if sub is not None and sub != source else source
                    if target != name:
                        mod.imports.setdefault(target, node.lineno)
                    if alias.name.startswith("_") and not alias.name.startswith("__") and target != name:
                        mod.private.append((target, alias.name, node.lineno))
            elif _writes_output(node):
                mod.prints.append(node.lineno)
    return modules


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in modules[v].imports:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return found


def layer_of(layers: list[tuple[str, set[str]]]) -> dict[str, int]:
    return {m: i for i, (_, members) in enumerate(layers) for m in members}


def upward_imports(modules: dict[str, Module], layers: list[tuple[str, set[str]]]) -> list[str]:
    rank = layer_of(layers)
    return [f"{m.name} ({layers[rank[m.name]][0]}) imports {t} ({layers[rank[t]][0]}) at line {line}"
            for m in modules.values() for t, line in sorted(m.imports.items()) if rank[t] > rank[m.name]]


def private_imports(modules: dict[str, Module]) -> list[str]:
    return [f"{m.name}:{line} imports {name} from {t}" for m in modules.values() for t, name, line in m.private]


def stray_output(modules: dict[str, Module], layers: list[tuple[str, set[str]]]) -> list[str]:
    rank = layer_of(layers)
    return [f"{m.name}:{line} prints or uses sys.stdout" for m in modules.values() for line in m.prints
            if layers[rank[m.name]][0] not in MAY_PRINT and m.name not in SINKS]


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return parse_package(PACKAGE)


def test_every_module_has_exactly_one_layer(modules: dict[str, Module]) -> None:
    placed = [m for _, members in LAYERS for m in members]
    assert len(placed) == len(set(placed)), "a module is listed in two layers"
    assert sorted(modules) == sorted(placed), "a new module needs a layer here and in docs/architecture.md"


def test_no_import_cycles(modules: dict[str, Module]) -> None:
    assert cycles(modules) == []


def test_no_module_imports_a_higher_layer(modules: dict[str, Module]) -> None:
    assert upward_imports(modules, LAYERS) == []


def test_the_engine_imports_no_action_module(modules: dict[str, Module]) -> None:
    actions = {m for m in modules if m.startswith("actions.") and m != "actions.base"}
    engine = dict(LAYERS)["engine"] | dict(LAYERS)["policy"] | dict(LAYERS)["contract"]
    assert [(m, sorted(set(modules[m].imports) & actions)) for m in sorted(engine)
            if set(modules[m].imports) & actions] == []


def test_no_module_imports_a_private_name_of_another(modules: dict[str, Module]) -> None:
    assert private_imports(modules) == []


def test_only_front_ends_print(modules: dict[str, Module]) -> None:
    assert stray_output(modules, LAYERS) == []


def test_the_checks_catch_a_bad_import(tmp_path: Path) -> None:
    """The contract can fail: a small package with each kind of violation is caught."""
    pkg = tmp_path / "janitor"
    (pkg / "actions").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "actions" / "__init__.py").write_text("")
    (pkg / "actions" / "base.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                             "    from ..planner import Ctx\n")
    (pkg / "actions" / "delete.py").write_text("from .base import register\n")
    (pkg / "planner.py").write_text("def plan():\n    from .actions.delete import _helper\n    print('x')\n")
    (pkg / "units.py").write_text("import janitor.planner\n")
    layers = [("basics", {"janitor", "units"}), ("contract", {"actions", "actions.base"}),
              ("engine", {"planner"}), ("plug-ins", {"actions.delete"})]
    found = parse_package(pkg)
    assert found["actions.base"].imports == {}  # TYPE_CHECKING only
    assert found["planner"].imports == {"actions.delete": 2}  # a function-level import counts
    assert upward_imports(found, layers) == [
        "planner (engine) imports actions.delete (plug-ins) at line 2",
        "units (basics) imports planner (engine) at line 1",
    ]
    assert private_imports(found) == ["planner:2 imports _helper from actions.delete"]
    assert stray_output(found, layers) == ["planner:3 prints or uses sys.stdout"]
    (pkg / "actions" / "delete.py").write_text("from .. import units\n")
    (pkg / "units.py").write_text("from .actions import delete\n")
    assert cycles(parse_package(pkg)) == [["actions.delete", "units"]]
