"""docs/architecture.md's table of cross-layer imports is the code's: an AST walk over lrservice/.

A layer is a top-level module (``config.py``) or subpackage (``compare/``) of lrservice. Every
import from one layer into another, at the top of a module or inside a function, must have its
row (from, to) in the table, and the row names exactly the importing files and imported
modules; a row with no such import fails too. ``compare/*`` in a row stands for "modules of
compare/" where listing each would be noise (``config`` is imported almost everywhere).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lrservice"
SECTION = "### Every cross-layer import"


def _layer(parts: list[str]) -> str:
    """``["compare", "cost.py"]`` -> ``compare/``; ``["config.py"]`` -> ``config.py``."""
    return f"{parts[0]}/" if len(parts) > 1 else parts[0]


def _imported(node: ast.AST) -> list[str]:
    """Modules of lrservice that ``node`` imports, without the ``lrservice.`` prefix."""
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "lrservice":
            return [a.name for a in node.names]
        if node.module.startswith("lrservice."):
            return [node.module.removeprefix("lrservice.")]
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("lrservice.") for a in node.names if a.name.startswith("lrservice.")]
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args
            and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("lrservice.")):
        return [str(node.args[0].value).removeprefix("lrservice.")]
    return []


def code_edges() -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(from layer, to layer) -> {(importing file, imported module)}."""
    edges: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).parts)
        source = _layer(parts)
        for node in ast.walk(ast.parse(path.read_text())):
            for module in _imported(node):
                names = module.split(".")
                target = f"{names[0]}/" if (PACKAGE / names[0]).is_dir() else f"{names[0]}.py"
                if target != source:
                    edges[(source, target)].add(("/".join(parts), module))
    return edges


def doc_rows() -> dict[tuple[str, str], str]:
    """(from layer, to layer) -> the row's modules cell, from the first table under :data:`SECTION`."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert SECTION in text, f"docs/architecture.md has no {SECTION!r} section"
    lines = text.split(SECTION, 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| from |"))
    table = []
    for line in lines[first + 2:]:  # past the header and its --- line
        if not line.startswith("|"):
            break
        table.append(line)
    rows = {}
    for line in table:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key = (cells[0].strip("`"), cells[1].strip("`"))
        assert key not in rows, f"two rows for {key}"
        rows[key] = cells[2]
    return rows


def test_every_cross_layer_import_has_its_row_and_every_row_its_import():
    edges, rows = code_edges(), doc_rows()
    assert sorted(set(edges) - set(rows)) == [], "imports missing from docs/architecture.md"
    assert sorted(set(rows) - set(edges)) == [], "rows in docs/architecture.md with no such import"
    for key, pairs in edges.items():
        tokens = set(re.findall(r"`([^`]+)`", rows[key]))
        files = {t for t in tokens if t.endswith(".py") or t.endswith("/*")}
        wildcard = f"{key[0]}*" in files
        assert wildcard or files == {f for f, _ in pairs}, (key, sorted(files), sorted(f for f, _ in pairs))
        assert tokens - files == {m for _, m in pairs}, (key, sorted(tokens - files), sorted(m for _, m in pairs))
