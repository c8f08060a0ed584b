"""The experiments sheet (``config/experiments.tsv``): one validated row per method id.

The sheet is tab-separated with a header on line 1; every cell is a string. Each row is checked against
``workflow/schemas/experiments.schema.yaml`` (kind / input / switch enums, ratio syntax, and the rule that
ablation switches are yes/no for SDCoNet rows and "-" for serial rows); ids must be unique. Errors name
the file, the 1-based line and the column.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "workflow" / "schemas"
EXPERIMENTS_SCHEMA_PATH = SCHEMA_DIR / "experiments.schema.yaml"

#: Columns of a sheet, in order; the last two (``set``, ``notes``) are optional.
COLUMNS = ("id", "kind", "display", "detector", "input", "sr_model", "saliency", "shared_encoder", "sr_branch",
           "routing", "level_filter_ratio", "layer_filter_ratio", "alpha", "set", "notes")
REQUIRED_COLUMNS = COLUMNS[:-2]


class ExperimentsError(ValueError):
    """The sheet is malformed; the message names the file, line and column."""


@lru_cache(maxsize=4)
def _schema(path: str = str(EXPERIMENTS_SCHEMA_PATH)) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def _column_of(err: jsonschema.ValidationError) -> str:
    """The sheet column a validation error is about (a missing key is named in the message)."""
    if err.absolute_path:
        return str(err.absolute_path[0])
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        return missing[0] if missing else "?"
    if err.validator == "additionalProperties":
        extra = [k for k in err.instance if k not in err.schema.get("properties", {})]
        return extra[0] if extra else "?"
    return "?"


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row dict) for every non-blank data line; the header is line 1."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].strip():
        raise ExperimentsError(f"{path}: line 1: empty file or empty header")
    header = next(csv.reader([lines[0]], delimiter="\t"))
    header = [h.strip() for h in header]
    for col in REQUIRED_COLUMNS:
        if col not in header:
            raise ExperimentsError(f"{path}: line 1, column '{col}': missing from the header")
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        raise ExperimentsError(f"{path}: line 1, column '{sorted(dupes)[0]}': appears twice in the header")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = next(csv.reader([line], delimiter="\t"))
        if len(cells) > len(header):
            raise ExperimentsError(f"{path}: line {lineno}: {len(cells)} cells but the header has {len(header)}")
        cells += [""] * (len(header) - len(cells))
        row = {h: c.strip() for h, c in zip(header, cells)}
        for optional in ("set", "notes"):
            if row.get(optional, None) == "":
                row.pop(optional)
        rows.append((lineno, row))
    return rows


def load_experiments(path: str | Path, schema_path: str | Path = EXPERIMENTS_SCHEMA_PATH) -> pd.DataFrame:
    """Read and validate the experiments sheet.

    Args:
        path: the TSV file.
        schema_path: the row schema (default ``workflow/schemas/experiments.schema.yaml``).

    Returns:
        A DataFrame with the columns of :data:`COLUMNS` (all strings, ``set`` / ``notes`` "" when absent) plus
        ``line`` (1-based line in the file), rows in sheet order, indexed 0..n-1.

    Raises:
        ExperimentsError: naming ``path``, the line and the column of the first problem.
    """
    path = Path(path)
    validator = jsonschema.Draft202012Validator(_schema(str(schema_path)))
    seen: dict[str, int] = {}
    records = []
    for lineno, row in _read_rows(path):
        err = jsonschema.exceptions.best_match(validator.iter_errors(row))
        if err is not None:
            col = _column_of(err)
            raise ExperimentsError(f"{path}: line {lineno}, column '{col}': {err.message}")
        if row["id"] in seen:
            raise ExperimentsError(f"{path}: line {lineno}, column 'id': duplicate id {row['id']!r} "
                                   f"(first on line {seen[row['id']]})")
        seen[row["id"]] = lineno
        records.append({**{c: row.get(c, "") for c in COLUMNS}, "line": lineno})
    if not records:
        raise ExperimentsError(f"{path}: line 2: the sheet has no rows")
    return pd.DataFrame.from_records(records, columns=[*COLUMNS, "line"])


def display_names(experiments: pd.DataFrame) -> dict[str, str]:
    """``{method id: display name}`` in sheet order."""
    return dict(zip(experiments["id"], experiments["display"]))


def select(experiments: pd.DataFrame, kinds: tuple[str, ...] | None = None,
           methods: list[str] | None = None) -> pd.DataFrame:
    """Rows whose kind is in ``kinds`` and id in ``methods`` (None = no filter), sheet order kept.

    Raises:
        ValueError: a name in ``methods`` is not in the sheet.
    """
    out = experiments
    if methods is not None:
        unknown = [m for m in methods if m not in set(experiments["id"])]
        if unknown:
            raise ValueError(f"unknown method id(s) {unknown}; the sheet has {list(experiments['id'])}")
        out = out[out["id"].isin(methods)]
    if kinds is not None:
        out = out[out["kind"].isin(kinds)]
    return out.reset_index(drop=True)


def row_sets(row: Any, source: str = "experiments sheet") -> list[str]:
    """The ``set`` cell of a sheet row as ``key=value`` items (``;``-separated; "" or "-" = none).

    Keys are dotted settings of the row's method: ``model.*`` / ``train.*`` for SDCoNet rows, ``<section>.*``
    of the baselines config (``yolo``, ``frcnn``, ``sr``, ``sr_<model>``, ``sr_infer``) for serial rows.
    """
    cell = str(row.get("set", "") or "").strip()
    if cell in ("", "-"):
        return []
    items = [x.strip() for x in cell.split(";") if x.strip()]
    bad = [x for x in items if "=" not in x]
    if bad:
        raise ExperimentsError(f"{source}: row {row.get('id')!r}, column 'set': {bad[0]!r} is not key=value")
    return items
