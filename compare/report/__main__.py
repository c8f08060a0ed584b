"""``python -m compare.report``: build the report (tables, figures, index.html) from a results folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m compare.report", description=__doc__)
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results)")
    p.add_argument("--config", type=Path, default=Path("config/config.yaml"), help="workflow config YAML")
    p.add_argument("--experiments", type=Path, default=Path("config/experiments.tsv"), help="experiments sheet")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: RESULTS/report)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds every run should have (default: 0)")
    p.add_argument("--methods", nargs="+", default=None, help="restrict to these method ids (default: whole sheet)")
    p.add_argument("--reference", type=Path, default=None, help="reference numbers YAML (paper vs reproduced)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the report; print the index.html path. Returns the exit status."""
    args = parse_args(argv)
    from compare.report.collect import ResultsError  # noqa: PLC0415
    from benchcore.experiments import ExperimentsError  # noqa: PLC0415
    from compare.report.html import build_report  # noqa: PLC0415
    from compare.report.reference import ReferenceError  # noqa: PLC0415

    try:
        index = build_report(args.results, args.config, args.experiments, args.out or args.results / "report",
                             args.seeds, reference_path=args.reference, methods=args.methods)
    except (ResultsError, ExperimentsError, ReferenceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
