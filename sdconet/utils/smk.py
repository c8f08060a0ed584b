"""Helpers for the thin Snakemake script adapters under ``workflow/scripts``."""
from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(log_path: str | Path | None) -> None:
    """Send logging, warnings, stdout and stderr (tqdm bars) of a rule to its ``log:`` file."""
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_path, "w", buffering=1)  # noqa: SIM115  (lives as long as the job)
        sys.stdout = fh
        sys.stderr = fh
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
