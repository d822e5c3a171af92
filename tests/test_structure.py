"""The package structure: imports point one way, no module imports itself in a circle, and
nothing in code or docs names a package without its `linetwin.` namespace."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["cli", "api", "replay", "optimizer", "models", "twin"]
"""Each package may import only the packages to its right."""


def modules() -> dict[str, Path]:
    out = {}
    for package in ORDER:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out["linetwin." + ".".join(parts)] = path
    return out


def imports(path: Path) -> set[str]:
    """Modules of ours that `path` imports anywhere: at the top, inside functions (a lazy import
    is still an import) and under `if TYPE_CHECKING:` (a circle for the type checker too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("linetwin.")}


def test_imports_point_one_way():
    wrong = []
    for name, path in modules().items():
        mine = ORDER.index(name.split(".")[1])
        for target in imports(path):
            theirs = target.split(".")[1]
            if theirs in ORDER and ORDER.index(theirs) < mine:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    mods = modules()
    graph = {
        name: {t for t in imports(path) if t in mods and t != name} for name, path in mods.items()
    }
    # A package's __init__ re-exporting its modules is not a cycle of its modules.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert not cycles, "\n".join(cycles)


def test_docs_import_the_namespace():
    bare = re.compile(r"^\s*(from|import) (twin|models|optimizer|replay|api|cli)\b", re.M)
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", doc.read_text("utf-8"), flags=re.S):
            assert not bare.search(block), f"{doc.name}: {bare.search(block).group(0)}"


def test_every_exported_name_resolves():
    import importlib

    for package in ORDER:
        module = importlib.import_module(f"linetwin.{package}")
        assert module.__doc__ and "later issues" not in module.__doc__
        for name in module.__all__:
            assert getattr(module, name) is not None, f"linetwin.{package}.{name}"


def test_the_polling_client_loads_neither_torch_nor_fastapi():
    import subprocess
    import sys

    code = (
        "import sys, linetwin.api, linetwin.api.client, linetwin.optimizer, linetwin.models; "
        "print(sorted(m for m in ('torch', 'fastapi', 'gymnasium') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
