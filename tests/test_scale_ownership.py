"""One owner for the scale of a run: its degradation (the workflow schema's default), carried by the run spec.

No library function, dataclass field or config file of the suite may default the scale (``scale`` / ``upscale``)
to a number: the architecture makes a missing scale an error instead. Checked on the source (AST) and on the
shipped config files, so a new default anywhere fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchcore", "data_prep", "sdconet", "baselines", "compare")
NAMES = {"scale", "upscale", "lr_scale", "sr_scale"}


def numeric_scale_defaults(path: Path) -> list[str]:
    """``file:line name=default`` for every parameter / annotated field named like a scale with a number default,
    and every ``.get("scale", <number>)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def is_number(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(
            node.value, bool)

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            for arg, default in zip(pos[len(pos) - len(a.defaults):], a.defaults):
                if arg.arg in NAMES and is_number(default):
                    found.append(f"{path.name}:{node.lineno} {node.name}({arg.arg}={default.value})")
            for arg, default in zip(a.kwonlyargs, a.kw_defaults):
                if arg.arg in NAMES and is_number(default):
                    found.append(f"{path.name}:{node.lineno} {node.name}({arg.arg}={default.value})")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id in NAMES and is_number(node.value):
                found.append(f"{path.name}:{node.lineno} field {node.target.id}={node.value.value}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            if (len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and node.args[0].value in NAMES
                    and is_number(node.args[1])):
                found.append(f"{path.name}:{node.lineno} .get({node.args[0].value!r}, {node.args[1].value})")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_defaults_the_scale(package):
    found = [f for p in sorted((ROOT / package).rglob("*.py")) for f in numeric_scale_defaults(p)]
    assert not found, f"scale defaults outside the schema and the spec builders: {found}"


def test_workflow_scripts_and_rules_do_not_default_the_scale():
    files = sorted((ROOT / "workflow" / "scripts").glob("*.py"))
    found = [f for p in files for f in numeric_scale_defaults(p)]
    assert not found, found
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text(encoding="utf-8")
        assert '"scale", 2' not in text and "'scale', 2" not in text, smk.name


def test_shipped_model_and_baseline_configs_leave_the_scale_to_the_run():
    def keys(d, prefix=""):
        for k, v in (d or {}).items():
            yield f"{prefix}{k}"
            if isinstance(v, dict):
                yield from keys(v, f"{prefix}{k}.")

    for cfg in [*(ROOT / "config" / "sdconet").glob("*.yaml"), *(ROOT / "config" / "baselines").glob("*.yaml")]:
        owned = [k for k in keys(yaml.safe_load(cfg.read_text())) if k.rsplit(".", 1)[-1] in NAMES | {"seed"}]
        assert not owned, f"{cfg.name} sets {owned}: the run's degradation and seed own them"


def test_the_schema_is_the_one_default():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["$defs"]["degradation"]["properties"]["scale"]["default"] == 2
    assert "scale" not in schema["properties"]["efficiency"]["properties"]  # the main degradation's


def test_checker_finds_a_default(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from dataclasses import dataclass\n@dataclass\nclass C:\n    scale: int = 2\n"
                 "def g(x, scale=4):\n    return d.get('scale', 2)\n")
    assert len(numeric_scale_defaults(f)) == 3
