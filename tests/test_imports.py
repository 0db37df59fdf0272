"""The package's imports point down: the article's modules import nothing from the wings, each
wing only from those below it, and nothing goes round in a circle. Read from the source (ast),
function-level imports included."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mnist_lit
from tests.helpers import REPO

PACKAGE = Path(mnist_lit.__file__).parent
# what each part of the package may import from, besides itself
BELOW = {
    "article": set(),
    "tracking": {"article"},
    "training": {"article", "tracking"},
    "cli": {"article", "tracking", "training"},
    "inference": {"article", "tracking", "training"},
    "sweeps": {"article", "tracking", "training", "cli"},
    "__main__": {"article", "tracking", "training", "cli", "inference", "sweeps"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part(module: str) -> str:
    """The wing of a module (training, tracking, ...), `cli`, `__main__`, or the article."""
    name = module.split(".")[1] if "." in module else ""
    return name if name in BELOW else "article"


def imports(path: Path) -> set[str]:
    """The package's modules that `path` imports, by their dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports(path) if m in modules and m not in (name, "mnist_lit")}
        for name, path in modules.items()
    }


def upward_imports(arrows: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, targets in arrows.items()
        for target in targets
        if part(target) != part(module) and part(target) not in BELOW[part(module)]
    ]


def circles(arrows: dict[str, set[str]]) -> list[str]:
    """Each import `a -> b` from which `a` can be reached again."""

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for target in arrows.get(start, set()) - seen:
            seen.add(target)
            if target == goal or reaches(target, goal, seen):
                return True
        return False

    return [f"{a} <-> {b}" for a in arrows for b in arrows[a] if reaches(b, a, set())]


def test_no_module_imports_from_above_its_place():
    assert upward_imports(graph()) == []


def test_no_import_circle():
    assert circles(graph()) == []


def test_the_checks_name_an_upward_import_and_a_circle():
    arrows = {
        "mnist_lit.tracking.runs": {"mnist_lit.sweeps.study"},  # tracking knows no sweeps
        "mnist_lit.cli": {"mnist_lit.sweeps.flags"},
        "mnist_lit.sweeps.flags": {"mnist_lit.cli"},
        "mnist_lit.sweeps.study": set(),
    }
    assert upward_imports(arrows) == [
        "mnist_lit.tracking.runs imports mnist_lit.sweeps.study",
        "mnist_lit.cli imports mnist_lit.sweeps.flags",
    ]
    assert circles(arrows) == [
        "mnist_lit.cli <-> mnist_lit.sweeps.flags",
        "mnist_lit.sweeps.flags <-> mnist_lit.cli",
    ]


@pytest.mark.slow  # a process of its own: this one has imported everything
def test_fit_imports_no_tool_library():
    """`fit` loads neither Optuna (sweeps), SQLAlchemy nor Gradio (demo): a new process that
    parses a fit command, as `mnist-lit fit` does, and lists what it imported."""
    code = (
        "import sys; from mnist_lit.__main__ import main\n"
        "try: main(['fit', '--print_config'])\n"
        "except SystemExit: pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'sqlalchemy', 'gradio'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
