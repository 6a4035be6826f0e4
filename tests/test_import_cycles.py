"""No import cycle anywhere in aicallerd, counting every import statement: module level,
inside functions, and behind ``if TYPE_CHECKING`` (a cycle hidden there is still a cycle
in the design, and the first refactor that needs the import at run time trips over it).

Edges are the modules an import statement names (``from a.b import c`` names ``a.b`` and,
if it is a module, ``a.b.c``); the parent packages Python initialises on the way are not
counted, since a package's ``__init__`` importing its own submodules is not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aicallerd

PACKAGE = Path(aicallerd.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_aicallerd_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "aicallerd.daemon" in graph and "aicallerd.web" in graph  # really walked it
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_web_and_control_reach_the_daemon_only_through_ports():
    graph = import_graph(PACKAGE)
    for front in ("aicallerd.web", "aicallerd.control.handler"):
        assert not graph[front] & {"aicallerd.daemon", "aicallerd.service"}, front
        assert "aicallerd.ports" in graph[front]


def test_a_cycle_behind_type_checking_or_in_a_function_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\n"
    )
    cycle = find_cycle(import_graph(pkg))
    assert cycle == ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]
    (pkg / "sub" / "c.py").write_text("import pkg.sub\n")
    assert find_cycle(import_graph(pkg)) is None
