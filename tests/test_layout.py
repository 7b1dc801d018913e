"""The package reads in pipeline order: a stage imports only the stages before it, and no import circle
exists, at module level or inside functions, except the registries' lazy imports of their families."""

from __future__ import annotations

import ast
from pathlib import Path

import synthmed

# Pipeline order. Stages of equal rank are peers and must not import each other.
STAGE_RANK = {
    "": 0,  # the package's base modules: errors, fileio, config, devices, __init__
    "data": 1,
    "models": 2,
    "train": 3,
    "sample": 4,
    "metrics": 5,
    "downstream": 6,
    "vtt": 6,
    "export": 7,
    "report": 8,
    "study": 9,
    "demo": 10,
    "cli": 11,
    "api": 11,  # synthmed.api: the stage functions as Python (synthmed/__init__.py forwards to it lazily)
}
# Functions through which a registry imports its families (which import the registry: a deliberate circle).
REGISTRY_LOADERS = {"_import_families", "_import_builtin"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str, package: str) -> str:
    """'synthmed.train.loop' -> 'train'; base modules ('synthmed.errors') -> ''."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    if parts[1] in STAGE_RANK:
        return parts[1]
    return ""  # a top-level module that is no stage (errors, fileio, config, devices)


def imported_modules(path: Path, module: str, skip_functions: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of the package in a file, at any depth, except inside
    functions named in ``skip_functions``."""
    package = module.split(".")[0]
    found = []
    pending = list(ast.parse(path.read_text(), str(path)).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in skip_functions:
            continue
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] == package:
                # `from synthmed.models import losses` imports the submodule synthmed.models.losses
                found += [(node.lineno, f"{base}.{a.name}" if _is_module(path, base, a.name) else base) for a in node.names]
    return sorted(found)


def _is_module(path: Path, base: str, name: str) -> bool:
    root = path
    while root.name != base.split(".")[0]:
        root = root.parent
    folder = root.parent.joinpath(*base.split("."))
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


def stage_violations(root: Path) -> list[str]:
    """Every import of a later (or peer) stage, as 'file:line: a -> b'."""
    package = root.name
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        here = stage_of(module, package)
        for line, target in imported_modules(path, module):
            there = stage_of(target, package)
            if there != here and STAGE_RANK[there] >= STAGE_RANK[here]:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {here or 'base'} imports {there or 'base'} ({target})")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected components (size > 1) of the import graph, registry loaders left out."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        graph[module] = {t for _, t in imported_modules(path, module, frozenset(REGISTRY_LOADERS)) if t != module}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


PACKAGE = Path(synthmed.__file__).parent


def test_no_stage_imports_a_later_stage():
    assert stage_violations(PACKAGE) == []


def test_no_import_circle():
    assert import_cycles(PACKAGE) == []


def test_every_package_folder_is_a_known_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(STAGE_RANK)


def test_the_checks_catch_a_backwards_import_and_a_circle(tmp_path):
    pkg = tmp_path / "synthmed"
    for folder in ("models", "train", "data"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "net.py").write_text("def f():\n    from synthmed.train import loop\n")
    (pkg / "train" / "loop.py").write_text("from synthmed.models.net import f\n")
    (pkg / "data" / "a.py").write_text("from synthmed.data import b\n")
    (pkg / "data" / "b.py").write_text("def g():\n    from synthmed.data.a import x\n")
    (pkg / "models" / "registry.py").write_text("def _import_families():\n    from synthmed.models import net\n")
    (pkg / "models" / "net2.py").write_text("from synthmed.models.registry import r\n")
    assert stage_violations(pkg) == ["synthmed/models/net.py:2: models imports train (synthmed.train.loop)"]
    # the registry's loader and the family it loads form no circle; the two real ones are found
    assert sorted(import_cycles(pkg)) == [["synthmed.data.a", "synthmed.data.b"], ["synthmed.models.net", "synthmed.train.loop"]]
