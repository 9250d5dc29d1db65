"""The layout keeps its promises: names cross module borders only through __all__, SQL
stays in the store, imports flow one way, and no function grows past a screen."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "digest"


def _modules() -> dict[str, Path]:
    """Every module of the package (migrations aside), by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts or path.name == "__main__.py":
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(module, imported name, line) for every `from digest… import name` in the module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        if module.split(".")[0] != "digest":
            continue
        found += [(module, alias.name, node.lineno) for alias in node.names]
    return found


def test_every_name_imported_across_modules_is_in_that_modules_all() -> None:
    modules = _modules()
    missing = []
    for name, path in modules.items():
        for module, imported, line in _imports(name, path):
            if f"{module}.{imported}" in modules:      # a submodule, not a name
                continue
            exported = getattr(importlib.import_module(module), "__all__", None)
            if exported is None or imported not in exported:
                missing.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {imported} is "
                               f"not in {module}.__all__")
    assert missing == []


def test_every_name_in_all_exists() -> None:
    for name in _modules():
        module = importlib.import_module(name)
        for exported in getattr(module, "__all__", ()):
            assert hasattr(module, exported), f"{name}.__all__ names {exported}, not there"


def test_only_the_store_speaks_sql() -> None:
    speaking = [name for name, path in _modules().items()
                if not name.startswith("digest.store")
                and any(module.split(".")[0] == "sqlalchemy"
                        for module in _top_imports(path))]
    assert speaking == []


def _top_imports(path: Path) -> list[str]:
    """Every module an import statement in path names, relative ones aside."""
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.append(node.module)
    return names


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: "
                                f"{node.name} has {length} lines")
    assert long == []


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_rooms_import_each_other_one_way() -> None:
    """No two rooms (store, content, mail, …) import each other, directly or around."""
    graph: dict[str, set[str]] = {}
    for name, path in _modules().items():
        for module, _imported, _line in _imports(name, path):
            src, dst = _package_of(name), _package_of(module)
            if src != dst and dst != "digest":
                graph.setdefault(src, set()).add(dst)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circular = sorted(f"{a} → {b}" for a, targets in graph.items() for b in targets
                      if reaches(b, a, {b}))
    assert circular == []


# What reads the machine's clock: the clock module (SystemClock) and the default of a
# record's own created_at/updated_at column. Everything else is handed a Clock or a time.
_WALL_CLOCK_READERS = {"digest.clock", "digest.store.models"}
_WALL_CLOCK_CALLS = {"datetime.now", "datetime.utcnow", "datetime.today", "date.today",
                     "time.time", "time.time_ns", "time.localtime", "time.gmtime",
                     "utcnow"}


def test_only_the_clock_reads_the_wall_clock() -> None:
    """Time is an input: no module decides by datetime.now() or time.time() behind its
    caller's back (durations by time.monotonic() are not the date and stay allowed)."""
    found = []
    for name, path in _modules().items():
        if name in _WALL_CLOCK_READERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in _WALL_CLOCK_CALLS:
                found.append(f"{name}:{node.lineno}: {ast.unparse(node.func)}()")
    assert found == []
