"""The layering of docs/architecture.md holds in the code: every import points down (or
across one layer), no modules import each other in a circle, no module is over 800 lines.

Imports are read from the sources with ``ast``: those under ``if TYPE_CHECKING:`` and those
inside functions count like any other.  Compiled modules are read for their ``cimport`` and
``import`` lines.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import harpia

ROOT = Path(__file__).resolve().parents[1]
# The package Python imports: the tree's in a checkout, site-packages' against a wheel.
PACKAGE = Path(harpia.__file__).resolve().parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_LINES = 800


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts) if parts != ["__init__"] else "__init__"


def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found.update({module_name(p): p for p in PACKAGE.rglob("*.pyx")})
    # A subpackage is named by its directory (``backplane``), its __init__ by that name.
    return {name.removesuffix(".__init__"): path for name, path in found.items()}


def documented_layers() -> dict[str, int]:
    layers: dict[str, int] = {}
    for line in ARCHITECTURE.read_text().splitlines():
        row = re.match(r"\|\s*(\d+)\s*\|[^|]*\|(.*)\|\s*$", line)
        if row:
            for name in re.findall(r"`([^`]+)`", row.group(2)):
                assert name not in layers, f"{name} is in two layers of docs/architecture.md"
                layers[name] = int(row.group(1))
    return layers


def _resolve(importer: str, path: Path, level: int, module: str | None) -> str:
    """The harpia-relative name ``from <dots><module>`` refers to in ``importer``."""
    package = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
    if importer == "__init__":
        package = []
    base = package[: len(package) - level + 1] if level else []
    target = ".".join(base + ([module] if module else []))
    if not level and module is not None:
        target = module.removeprefix("harpia").lstrip(".")
    return target or "__init__"


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    if path.suffix == ".pyx":
        found = set()
        for match in re.finditer(r"^\s*(?:from|cimport|import)\s+(harpia\.[\w.]+|\.[\w.]*)",
                                 path.read_text(), re.M):
            target = match.group(1).removeprefix("harpia.").lstrip(".")
            if target in known:
                found.add(target)
        return found - {name}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if not node.level and not (node.module or "").startswith("harpia"):
                continue
            target = _resolve(name, path, node.level, node.module)
            subs = [f"{target}.{a.name}" if target != "__init__" else a.name for a in node.names]
            hits = [s for s in subs if s in known]
            if len(hits) < len(subs) and target in known:
                hits.append(target)
            found.update(hits)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("harpia"):
                    target = alias.name.removeprefix("harpia").lstrip(".") or "__init__"
                    if target in known:
                        found.add(target)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def layer_of(name: str, layers: dict[str, int]) -> int:
    if name in layers:
        return layers[name]
    assert modules()[name].suffix == ".pyx", \
        f"harpia/{name} is in no layer of docs/architecture.md: add it to the table"
    return 0


def test_every_documented_module_exists_and_every_module_is_documented() -> None:
    layers = documented_layers()
    assert layers, "docs/architecture.md has no layer table"
    existing = modules()
    missing = sorted(set(layers) - set(existing))
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
    for name in existing:
        layer_of(name, layers)


def test_imports_point_down() -> None:
    layers = documented_layers()
    upward = [f"{name} (layer {layer_of(name, layers)}) imports {dep} "
              f"(layer {layer_of(dep, layers)})"
              for name, deps in import_graph().items() for dep in sorted(deps)
              if layer_of(dep, layers) > layer_of(name, layers)]
    assert not upward, "\n".join(upward)


def test_no_import_circle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}        # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                circle = path[path.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_checker_sees_type_checking_and_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import _frames\n"
        "if TYPE_CHECKING:\n    from .app import App\n"
        "def f():\n    from .server import Listener\n    import harpia.hub\n")
    known = {"_frames", "app", "server", "hub", "sample"}
    assert imports_of("sample", source, known) == {"_frames", "app", "server", "hub"}


def test_no_python_module_over_800_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these along their seams: {long}"
