"""The package's shape (docs/design.md, "Stages"): no import cycles, no module importing
another's ``_private`` name, every module importable on its own, every package's face
complete."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "inpaint_online"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def resolve(node: ast.ImportFrom, name: str, path: Path) -> str:
    if node.level == 0:
        return node.module
    base = name.split(".") if is_package(path) else name.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING":
            for s in n.body:
                out.update(range(s.lineno, s.end_lineno + 1))
    return out


def imports(mods: dict[str, Path]):
    """``(importer, imported module, names)`` of every import of a project module that runs
    (module level or inside a function)."""
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = type_checking_lines(tree)
        for n in ast.walk(tree):
            if getattr(n, "lineno", None) in skip:
                continue
            if isinstance(n, ast.ImportFrom):
                target = resolve(n, name, path)
                if not target.startswith("inpaint_online"):
                    continue
                for a in n.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:                          # from . import pipeline
                        yield name, sub, []
                    else:
                        yield name, target, [a.name]
            elif isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.startswith("inpaint_online"):
                        yield name, a.name, []


def graph() -> dict[str, set[str]]:
    """Edges importer -> module, plus the package ``__init__``s an import runs first; a
    module's own ancestors are left out (a package importing its submodules is how packages
    work, not a cycle)."""
    mods = modules()
    g = {m: set() for m in mods}
    for src, dst, _ in imports(mods):
        parts = dst.split(".")
        for k in range(2, len(parts) + 1):
            t = ".".join(parts[:k])
            if t in mods and t != src and not src.startswith(t + "."):
                g[src].add(t)
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_there_are_no_import_cycles():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_a_private_name_of_another():
    bad = [f"{src} imports {dst}.{n}" for src, dst, names in imports(modules()) for n in names
           if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    # one interpreter per module would take minutes; one that imports each in turn after
    # clearing the project's modules catches an order-dependent import just the same
    names = sorted(modules())
    code = ("import sys, importlib\n"
            f"for m in {names!r}:\n"
            "    for k in [k for k in sys.modules if k.startswith('inpaint_online')]:\n"
            "        del sys.modules[k]\n"
            "    importlib.import_module(m)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("package", ["cache", "depth", "export", "stream", "train", "warp"])
def test_a_packages_face_lists_only_names_it_has(package):
    mod = importlib.import_module(f"inpaint_online.{package}")
    assert mod.__all__, f"inpaint_online.{package} has no __all__"
    missing = [n for n in mod.__all__ if not hasattr(mod, n) and n != "HFBackend"]
    assert not missing, missing


def test_no_code_cites_a_design_file_the_repository_does_not_have():
    cited = [str(p.relative_to(ROOT)) for p in list(PKG.rglob("*.py")) + list(ROOT.glob("docs/*.md"))
             if "DESIGN.md" in p.read_text(encoding="utf-8")]
    assert not cited, cited
    assert (ROOT / "docs" / "design.md").is_file()
