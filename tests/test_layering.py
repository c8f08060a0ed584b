"""The package layering: benchcore at the bottom; data_prep, sdconet, baselines above it; compare on top.

No package may import one above it (so none imports one that imports it back). Checked on the source's
import statements (module level and inside functions), so a lazy import cannot hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchcore", "data_prep", "sdconet", "baselines", "compare")
ALLOWED = {
    "benchcore": {"benchcore"},
    "data_prep": {"benchcore", "data_prep"},
    "sdconet": {"benchcore", "sdconet"},
    "baselines": {"benchcore", "data_prep", "baselines"},
    "compare": set(PACKAGES),
}


def imported_packages(path: Path) -> set[str]:
    """Top-level in-repo packages imported anywhere in a source file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_layers_below(package):
    bad = {str(f.relative_to(ROOT)): sorted(imported_packages(f) - ALLOWED[package])
           for f in sorted((ROOT / package).rglob("*.py"))}
    assert not {f: p for f, p in bad.items() if p}, f"{package} imports a package above it"


def test_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from compare.report import tables\n    import sdconet.cli\n")
    assert imported_packages(f) == {"compare", "sdconet"}
