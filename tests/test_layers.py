"""The code's shape, checked: layers import downwards only (every import, function-level
ones too), no private name crosses a module, no file grows past ~400 lines, and every
module says what it owns. import-linter (``make lint``) checks the same layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lowest first: a package may import only itself and the ones before it.
LAYERS = ["core", "access", "operations", "snapshots", "vms", "config"]
MAX_LINES = 420


def modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def imported(tree: ast.AST, path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, line) of every import in the file, wherever it is written."""
    found = []
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def test_layers_import_only_downwards():
    wrong = []
    for path in modules():
        layer = path.relative_to(ROOT).parts[0]
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        for module, _, line in imported(ast.parse(path.read_text()), path):
            top = module.split(".")[0]
            if top in LAYERS and top not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {module}")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_config_or_tests():
    wrong = []
    for path in [*modules(), *(ROOT / "bench").glob("*.py")]:
        for module, _, line in imported(ast.parse(path.read_text()), path):
            top = module.split(".")[0]
            if top == "tests" or (top == "config" and path.relative_to(ROOT).parts[0] not in ("config",)):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_crosses_a_module():
    wrong = []
    for path in modules():
        own = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for module, names, line in imported(ast.parse(path.read_text()), path):
            if module.split(".")[0] in LAYERS and module != own:
                wrong += [f"{path.relative_to(ROOT)}:{line} imports {module}.{n}" for n in names if n.startswith("_")]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", [p for p in modules() if "migrations" not in p.parts], ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small_and_says_what_it_owns(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_LINES, f"{len(text.splitlines())} lines: it holds two things"
    if text.strip() and path.name not in ("__init__.py", "apps.py", "urls.py", "api_urls.py") and "commands" not in path.parts:
        assert ast.get_docstring(ast.parse(text)), "no opening docstring saying what the module owns"
