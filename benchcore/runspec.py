"""The resolved run specification (``run_spec.json``): one file per run that says everything the run is.

A run is (dataset x degradation x method x seed), or (dataset x degradation x SR model x seed) for the SR stage
of the serial pipelines. Its specification is resolved once (by the workflow from the validated config, or by a
CLI from its flags, through the same builders) and written beside the run's outputs; every stage of the run reads
its settings from it, and nothing downstream re-defaults a value the specification carries.

Layout (``docs/run_spec.md`` describes every key)::

    {"spec_version": 1,
     "kind": "sdconet" | "serial" | "sr",
     "dataset": "nwpu", "seed": 0,
     "degradation": {"name": "bicubic_x2", "scale": 2, "kernel": "torch-bicubic", "blur": 0.0, ...},
     "method": {<experiments-sheet row>} | null,      # kind sdconet / serial
     "sr_model": "edsr" | null,                        # kind sr, and serial rows with an SR stage
     "paths": {"data": ..., "partition": ..., "tiles": ..., "lr": ..., "images": ..., "out": ..., ...},
     "settings": {...},                                # the merged settings of the package that runs it
     "sources": {"config": ..., "sets": [...], "experiments": ..., ...}}   # where the settings came from

This module holds the package-independent half: the degradation, the paths, the file format and its checks.
``sdconet.spec`` and ``baselines.spec`` resolve ``settings`` for their kinds.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from benchcore.atomic import atomic_write_json
from benchcore.provenance import config_hash

SPEC_VERSION = 1
RUN_SPEC = "run_spec.json"
KINDS = ("sdconet", "serial", "sr")
REQUIRED = ("spec_version", "kind", "dataset", "seed", "degradation", "method", "sr_model", "paths", "settings",
            "sources")
DEGRADATION_KEYS = ("scale", "kernel", "blur", "noise", "jpeg", "seed")


class RunSpecError(ValueError):
    """A malformed run specification (the message names the file and the key)."""


def degradation_of(name: str, degradations: Mapping[str, Mapping[str, Any]], source: str = "config") -> dict[str, Any]:
    """``{"name": name, **settings}`` of a configured degradation; every key of :data:`DEGRADATION_KEYS` is required
    (the workflow schema fills the defaults, so a missing one is a bug upstream, not something to default here)."""
    if name not in degradations:
        raise RunSpecError(f"{source}: unknown degradation {name!r}; configured: {sorted(degradations)}")
    deg = dict(degradations[name])
    missing = [k for k in DEGRADATION_KEYS if k not in deg]
    if missing:
        raise RunSpecError(f"{source}: degradations.{name} lacks {missing} (validate the config against the schema)")
    if isinstance(deg["scale"], bool) or not isinstance(deg["scale"], int) or deg["scale"] < 1:
        raise RunSpecError(f"{source}: degradations.{name}.scale must be an integer >= 1, got {deg['scale']!r}")
    return {"name": name, **deg}


def data_paths(results: str, dataset: str, degradation: str, data: str | None = None) -> dict[str, str]:
    """The data products of one dataset and degradation (the path grammar of ``workflow/rules``); ``data``: a data
    stage folder laid out the same way elsewhere (a CLI's ``--data``) instead of ``results/data/{dataset}``."""
    data = data or f"{results}/data/{dataset}"
    return {"data": data, "partition": f"{data}/partition", "tiles": f"{data}/tiles",
            "hr_images": f"{data}/tiles/images", "lr": f"{data}/{degradation}/lr",
            "pairs": f"{data}/{degradation}/basicsr"}


def run_dir(results: str, dataset: str, degradation: str, method: str, seed: int) -> str:
    """``results/{dataset}/{degradation}/{method}/seed{seed}``."""
    return f"{results}/{dataset}/{degradation}/{method}/seed{seed}"


def sr_run_dir(results: str, dataset: str, degradation: str, sr_model: str, seed: int) -> str:
    """``results/{dataset}/{degradation}/sr/{sr_model}/seed{seed}`` (SR model + its output tiles)."""
    return f"{results}/{dataset}/{degradation}/sr/{sr_model}/seed{seed}"


def make_spec(kind: str, dataset: str, seed: int, degradation: Mapping[str, Any], paths: Mapping[str, Any],
              settings: Mapping[str, Any], sources: Mapping[str, Any], method: Mapping[str, Any] | None = None,
              sr_model: str | None = None) -> dict[str, Any]:
    """Assemble and check a specification (see the module docstring)."""
    spec = {"spec_version": SPEC_VERSION, "kind": kind, "dataset": dataset, "seed": int(seed),
            "degradation": dict(degradation), "method": dict(method) if method is not None else None,
            "sr_model": sr_model, "paths": dict(paths), "settings": json.loads(json.dumps(settings)),
            "sources": dict(sources)}
    check_spec(spec)
    return spec


def check_spec(spec: Mapping[str, Any], source: str = "run spec") -> None:
    """Raise :class:`RunSpecError` naming ``source`` and the key when ``spec`` is not a valid specification."""
    if not isinstance(spec, Mapping):
        raise RunSpecError(f"{source}: a run spec is a JSON object")
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise RunSpecError(f"{source}: missing key(s) {missing}")
    if spec["spec_version"] != SPEC_VERSION:
        raise RunSpecError(f"{source}: spec_version {spec['spec_version']!r}, this code reads {SPEC_VERSION}")
    if spec["kind"] not in KINDS:
        raise RunSpecError(f"{source}: kind {spec['kind']!r} is not one of {KINDS}")
    deg = spec["degradation"]
    if not isinstance(deg, Mapping) or "name" not in deg or any(k not in deg for k in DEGRADATION_KEYS):
        raise RunSpecError(f"{source}: degradation must hold 'name' and {list(DEGRADATION_KEYS)}")
    if spec["kind"] in ("sdconet", "serial") and not spec["method"]:
        raise RunSpecError(f"{source}: kind {spec['kind']} needs the experiments row in 'method'")
    if spec["kind"] == "sr" and not spec["sr_model"]:
        raise RunSpecError(f"{source}: kind sr needs 'sr_model'")
    if "out" not in spec["paths"]:
        raise RunSpecError(f"{source}: paths.out is missing")


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A short hash of what the run computes: everything except its paths and the sources' file names."""
    return config_hash({k: v for k, v in spec.items() if k not in ("paths", "sources")})


def write_spec(path: str | Path, spec: Mapping[str, Any]) -> Path:
    """Check and write ``spec`` atomically (``spec_hash`` added); returns the path."""
    check_spec(spec, str(path))
    atomic_write_json(path, {**spec, "spec_hash": spec_hash(spec)})
    return Path(path)


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read and check a ``run_spec.json``."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunSpecError(f"{path}: run spec not found") from None
    except json.JSONDecodeError as exc:
        raise RunSpecError(f"{path}: not valid JSON ({exc})") from None
    check_spec(spec, str(path))
    stored = spec.pop("spec_hash", None)
    if stored is not None and stored != spec_hash(spec):
        raise RunSpecError(f"{path}: spec_hash {stored} does not match its content (edited by hand?); "
                           f"regenerate it instead")
    spec["spec_hash"] = spec_hash(spec)
    return spec


def provenance_block(spec: Mapping[str, Any], path: str | Path | None = None) -> dict[str, Any]:
    """What a ``metrics.json`` records of its run's specification: path, hash and the specification itself."""
    body = {k: v for k, v in spec.items() if k != "spec_hash"}
    return {"run_spec": str(Path(path).resolve()) if path else None, "spec_hash": spec_hash(body), "spec": body}
