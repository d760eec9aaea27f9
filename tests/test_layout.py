"""The layout's promises that imports can break: the VK layer (``vkscraper/vk/``) loads
nothing of Scrapy or Twisted, however deep its imports go, and the installed package never
imports the emulator or the test kit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vkscraper"
FRAMEWORKS = ("scrapy", "scrapy_redis", "twisted", "scrapyd")


def module_file(name: str) -> Path | None:
    """The file of module ``vkscraper.…`` ``name``, or None (a name inside a module)."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def reached_from(start: Path) -> dict[str, Path]:
    """Every module ``start`` imports, directly or through vkscraper's own modules: the
    file that imports it."""
    seen: dict[str, Path] = {}
    todo = [start]
    done: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in done:
            continue
        done.add(path)
        for name in imports(path):
            seen.setdefault(name, path)
            if name.split(".")[0] == "vkscraper" and (file := module_file(name)) is not None:
                todo.append(file)
                parent = name.rpartition(".")[0]  # importing a.b.c runs a/__init__ and a.b's
                while parent and (init := module_file(parent)) is not None:
                    todo.append(init)
                    parent = parent.rpartition(".")[0]
    return seen


@pytest.mark.parametrize("path", sorted(PACKAGE.joinpath("vk").glob("*.py")), ids=lambda p: p.name)
def test_the_vk_layer_loads_no_framework(path):
    framework = {
        name: importer
        for name, importer in reached_from(path).items()
        if name.split(".")[0] in FRAMEWORKS
    }
    assert not framework, framework


def test_the_package_imports_neither_the_emulator_nor_the_test_kit():
    for path in PACKAGE.rglob("*.py"):
        foreign = {n for n in imports(path) if n.split(".")[0] in ("fakevk", "testkit", "tests")}
        assert not foreign, (path, foreign)
