"""The layout rules of the design notes: no import cycle inside ``benchmarks``, layers import one way
(``ecqx`` <- ``baselines`` <- ``benchmarks``), and no module above ~400 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ecqx", "baselines", "benchmarks")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module ``path`` imports, at the top or inside functions (lazy imports count:
    a cycle through them is still a cycle); ``from pkg import sub`` counts as ``pkg.sub``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(known)
            found |= subs or {node.module}
            if len(subs) < len(node.names):
                found.add(node.module)
    return found - {module_name(path)}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (cycle := visit(v)):
                return cycle
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(edges):
        if u not in state and (cycle := visit(u)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_benchmarks():
    edges = {
        m: {d for d in deps if d.startswith("benchmarks")} for m, deps in graph().items() if m.startswith("benchmarks")
    }
    assert find_cycle(edges) is None


@pytest.mark.parametrize(("lower", "upper"), [("ecqx", ("baselines", "benchmarks")), ("baselines", ("benchmarks",))])
def test_layers_import_one_way(lower, upper):
    bad = {m: sorted(d for d in deps if d.startswith(upper)) for m, deps in graph().items() if m.startswith(lower)}
    assert not {m: d for m, d in bad.items() if d}


def test_no_module_is_above_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long
