"""The package's import rules (docs/design.md, "Layers"), checked on the source itself.

Every ``import`` and ``from ... import`` in ``src/rankmixer`` (also those inside functions) is an
edge. A module may import from a lower layer, or from its own unit (the same package at the same
layer); never upward, never a cycle between modules, never a private name (``_x``) of another
module. ``serve`` additionally never reaches the trainer or the experiment orchestration.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rankmixer"

# Lowest first. A module belongs to the longest prefix that matches it.
LAYERS: list[list[str]] = [
    ["rankmixer.core"],
    ["rankmixer.data", "rankmixer.data.schema", "rankmixer.data.batch", "rankmixer.data.config"],
    ["rankmixer.data.reader", "rankmixer.data.feature_map"],
    ["rankmixer.data.arrays", "rankmixer.data.behaviour"],
    ["rankmixer.data.datasets", "rankmixer.data.encode"],
    ["rankmixer.data.prepare", "rankmixer.data.loader"],
    ["rankmixer.nn"],
    ["rankmixer.text"],  # reads its own data; may use core and nn, nothing of ranking above
    ["rankmixer.models"],
    ["rankmixer.conversion"],  # delay rates and interpolation: maths on logs and probabilities (serve may use it)
    ["rankmixer.train", "rankmixer.runs"],
    ["rankmixer.system.history"],  # the tune-system history: read by the measured auto choices
    ["rankmixer.system.auto"],  # measured auto kernels, applied by the experiment
    ["rankmixer.config"],
    ["rankmixer.experiment", "rankmixer.serve", "rankmixer.early_exit"],
    ["rankmixer.tune", "rankmixer.system", "rankmixer.distill"],
    ["rankmixer.search"],  # an architecture search runs as a tuning study
    ["rankmixer.bench"],
    ["rankmixer.cli"],
    ["rankmixer.__main__"],
]
# Edges that the layers would allow but the design forbids.
FORBIDDEN = [
    ("rankmixer.serve", "rankmixer.train"),
    ("rankmixer.serve", "rankmixer.experiment"),
    ("rankmixer.serve", "rankmixer.config"),
    ("rankmixer.runs", "rankmixer.train"),
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _target_module(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or a package's __init__)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def edges() -> list[tuple[str, str, str | None, int]]:
    """(importer, imported module, imported name or None, line) for every project import."""
    out = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("rankmixer"):
                        target = _target_module(alias.name)
                        if target:
                            out.append((mod, target, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node)
                if not base.startswith("rankmixer"):
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in MODULES:  # `from pkg import module`
                        out.append((mod, full, None, node.lineno))
                    else:
                        target = _target_module(base)
                        if target:
                            out.append((mod, target, alias.name, node.lineno))
    return out


def _unit(module: str) -> tuple[int, str]:
    best = None
    for level, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > len(best[1]):
                    best = (level, p)
    if best is None:
        raise AssertionError(f"module {module} is in no layer of tests/test_layers.py: add it")
    return best


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_every_module_has_a_layer():
    for mod in MODULES:
        if mod != "rankmixer":
            _unit(mod)


def test_no_upward_or_forbidden_imports():
    bad = []
    for src, dst, _, line in edges():
        if src == "rankmixer" or dst == "rankmixer":
            continue
        (ls, us), (ld, ud) = _unit(src), _unit(dst)
        if ld > ls or (ld == ls and us != ud):
            bad.append(f"{src}:{line} imports {dst} ({ud} is not below {us})")
        for a, b in FORBIDDEN:
            if _within(src, a) and _within(dst, b):
                bad.append(f"{src}:{line} imports {dst} (forbidden: {a} -> {b})")
    assert not bad, "\n".join(bad)


def test_no_private_names_across_modules():
    bad = [f"{src}:{line} imports {name} from {dst}"
           for src, dst, name, line in edges()
           if name and name.startswith("_") and not name.startswith("__") and src != dst]
    assert not bad, "\n".join(bad)


def test_no_private_attributes_of_imported_modules():
    """``from rankmixer.x import y as m`` then ``m._private``: the same leak by attribute."""
    bad = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rankmixer"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("rankmixer") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{mod}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for src, dst, _, _ in edges():
        if src != dst and dst != "rankmixer" and not src.startswith(dst + "."):  # a package's own __init__
            graph[src].add(dst)
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("case", ["upward", "private", "cycle"])
def test_the_rules_catch_what_they_should(case, monkeypatch):
    """The checks above fail on a planted violation (so a passing run means something)."""
    fake = {
        "upward": [("rankmixer.data.schema", "rankmixer.train.trainer", None, 1)],
        "private": [("rankmixer.serve.preprocess", "rankmixer.data.prepare", "_secret", 1)],
        "cycle": [("rankmixer.data.schema", "rankmixer.data.batch", None, 1),
                  ("rankmixer.data.batch", "rankmixer.data.schema", None, 1)],
    }[case]
    monkeypatch.setitem(globals(), "edges", lambda: fake)
    check = {"upward": test_no_upward_or_forbidden_imports, "private": test_no_private_names_across_modules,
             "cycle": test_no_import_cycles}[case]
    with pytest.raises(AssertionError):
        check()
