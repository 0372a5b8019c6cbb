"""The repository's shape: what is importable, and that no case imports another."""

import ast
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_cases_and_shared_resolve_inside_the_repo():
    for name in ("cases", "shared"):
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"{name} is not importable"
        origin = Path(spec.submodule_search_locations[0]).resolve()
        assert origin == REPO / name, f"{name} resolves to {origin}, not inside the repo"


def test_benchmarks_and_tests_are_not_packages():
    # Only `cases` and `shared` are installed; benchmarks are loaded by file path.
    assert (
        importlib.util.find_spec("benchmarks") is None
        or not (REPO / "benchmarks" / "__init__.py").exists()
    )


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_case_imports_another():
    case_dirs = [p for p in (REPO / "cases").iterdir() if (p / "__init__.py").exists()]
    for case in case_dirs:
        for path in case.rglob("*.py"):
            for module in _imported_modules(path):
                parts = module.split(".")
                if parts[0] == "cases" and len(parts) > 1:
                    assert parts[1] == case.name, f"{path} imports {module}"


def test_shared_imports_no_case():
    for path in (REPO / "shared").rglob("*.py"):
        for module in _imported_modules(path):
            assert not module.startswith("cases."), f"{path} imports {module}"
