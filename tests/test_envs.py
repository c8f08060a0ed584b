"""The conda environment files must pin exactly what pyproject.toml pins (conda is absent here)."""
from __future__ import annotations

import tomllib

import yaml


def _pip_pins(env_file) -> set[str]:
    env = yaml.safe_load(env_file.read_text())
    pins: set[str] = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            pins |= {p for p in dep["pip"] if not p.startswith("-e")}
    return pins


def test_conda_envs_match_pyproject(repo_root):
    deps = set(tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"])
    for f in [repo_root / "environment.yml", *sorted((repo_root / "workflow" / "envs").glob("*.yaml"))]:
        pins = _pip_pins(f)
        assert pins == deps, f"{f.name}: differs from pyproject: {sorted(pins ^ deps)}"


def test_environment_yml_installs_the_project(repo_root):
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip


def test_every_rule_env_exists(repo_root):
    import re

    for smk in (repo_root / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'ENV\w*\s*=\s*"([^"]+)"', smk.read_text()):
            assert (repo_root / "workflow" / "rules" / env).resolve().is_file(), f"{smk.name}: {env}"
