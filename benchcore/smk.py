"""Helpers for the thin Snakemake script adapters under ``workflow/scripts``."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def limit_threads(n: int) -> None:
    """Pin OpenMP/MKL/torch intra-op threads to the job's ``threads:`` (before torch is imported).

    Two jobs with two threads each on two cores slow tiny models down by an order of magnitude
    (measured: 0.16 s vs 1.3 s per tiny SDCoNet step), so every rule job uses exactly its share.
    """
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def setup_job(smk: object) -> None:
    """Everything a rule script does first: logging to its log file and its thread budget."""
    limit_threads(getattr(smk, "threads", 1))
    setup_logging(smk.log[0] if getattr(smk, "log", None) else None)


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
