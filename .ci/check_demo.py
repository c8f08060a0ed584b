"""Check a finished demo DAG (run by .ci/run after each demo command).

    python .ci/check_demo.py [--configfile config/config.yaml] [--learning]

Always: the data products, one metrics.json per configured method, an efficiency file per method, and report
tables holding a row for every method (a run reported as "missing" fails).

``--learning`` (the default demo): the table shows the methods learning. For each detector family of the run
(SDCoNet, YOLOv8n, Faster R-CNN, ...) the HR upper bound reaches AP50 >= MIN_AP50 and scores above the family's LR
lower bound (AP50 and AP), and every SDCoNet row with an SR branch beats nearest-neighbour upscaling of the same LR
tiles in PSNR. These are orderings and floors, not exact numbers: a regression in the scorer, in the mapping of
boxes to the HR grid or in the LR/HR pairing breaks them.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIN_AP50 = 10.0  # percent: "clearly non-zero" for an upper bound after the demo's budget


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _families(exp, methods: list[str]) -> dict[str, dict[str, str]]:
    """{detector: {"hr": id, "lr": id}} for each detector family with both bounds among ``methods``."""
    fam: dict[str, dict[str, str]] = {}
    for _, row in exp.iterrows():
        if row["id"] not in methods:
            continue
        if row["input"] == "hr":
            fam.setdefault(row["detector"], {})["hr"] = row["id"]
        elif row["input"] == "lr" and row["sr_model"] == "none":  # no SR of any kind: the LR lower bound
            fam.setdefault(row["detector"], {})["lr"] = row["id"]
    return fam


def check_learning(cfg: dict, exp, methods: list[str], res: Path, ds: str, deg: str) -> list[str]:
    """The orderings and floors of ``--learning``; prints what it compared."""
    problems: list[str] = []
    run = res / ds / deg

    def det(m: str) -> dict:
        return _read(run / m / "seed0" / "metrics.json")["detection"]

    fams = _families(exp, methods)
    if not fams:
        problems.append("no detector family has both an HR and an LR bound among the configured methods")
    for family, rows in fams.items():
        if set(rows) != {"hr", "lr"}:
            problems.append(f"family {family}: needs an HR and an LR bound, has {sorted(rows)}")
            continue
        hr, lr = det(rows["hr"]), det(rows["lr"])
        print(f"  {family:10s} HR {rows['hr']}: AP50 {100 * hr['AP50']:.1f}, AP {100 * hr['AP']:.1f}   "
              f"LR {rows['lr']}: AP50 {100 * lr['AP50']:.1f}, AP {100 * lr['AP']:.1f}")
        if 100 * hr["AP50"] < MIN_AP50:
            problems.append(f"family {family}: HR bound {rows['hr']} AP50 {100 * hr['AP50']:.1f} < {MIN_AP50}")
        for key in ("AP50", "AP"):
            if not hr[key] > lr[key]:
                problems.append(f"family {family}: HR bound {key} {100 * hr[key]:.1f} is not above the LR bound's "
                                f"{100 * lr[key]:.1f}")
    sdc_sr = [m for m in methods if exp.loc[m, "detector"] == "sdconet" and exp.loc[m, "sr_branch"] == "yes"]
    refs = sorted(run.glob("sr/nearest/seed*/images/sr_metrics.json"))
    if sdc_sr and not refs:
        problems.append(f"no nearest reference under {run}/sr/nearest (report.sr_references must list nearest)")
    if sdc_sr and refs:
        nearest = _read(refs[0])["psnr"]
        for m in sdc_sr:
            psnr = _read(run / m / "seed0" / "metrics.json")["sr"]["psnr"]
            print(f"  SR {m}: PSNR {psnr:.2f} dB vs nearest {nearest:.2f} dB")
            if not psnr > nearest:
                problems.append(f"{m}: SR PSNR {psnr:.2f} dB does not beat nearest upscaling ({nearest:.2f} dB)")
    return problems


def main(argv: list[str] | None = None) -> int:
    from benchcore.experiments import load_experiments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default="config/config.yaml")
    ap.add_argument("--learning", action="store_true", help="also assert that the methods learned")
    ap.add_argument("--results-dir", help="where the run wrote its results (default: the config's results_dir)")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load((REPO / args.configfile).read_text())
    res = REPO / (args.results_dir or cfg.get("results_dir", "results"))
    ds = next(iter(cfg["datasets"]))
    deg = cfg.get("main_degradation") or next(iter(cfg["degradations"]))
    exp = load_experiments(REPO / cfg.get("experiments", "config/experiments.tsv"))
    methods = list(cfg.get("methods") or exp["id"])
    exp = exp.set_index("id", drop=False)

    root = res / "data" / ds
    problems: list[str] = []
    tiles = _read(root / "tiles" / "annotations.json")
    if not tiles["images"] or not tiles["annotations"]:
        problems.append(f"{ds} tiles have no images or no annotations")
    parts = {p: _read(root / "partition" / f"{p}.json") for p in ("train", "val", "test")}
    srcs = [{im["source_image_id"] for im in parts[p]["images"]} for p in parts]
    if srcs[0] & srcs[1] or srcs[0] & srcs[2] or srcs[1] & srcs[2]:
        problems.append("a source image appears in two partitions")
    for m in methods:
        for f in (res / ds / deg / m / "seed0" / "metrics.json", res / "efficiency" / f"{m}.json"):
            if not f.is_file():
                problems.append(f"missing {f}")
    tables = res / "report" / "tables"
    rows = {}
    for kind in ("main", "ablation"):
        path = tables / f"{kind}_{ds}_{deg}.csv"
        rows[kind] = {r["Method"]: r for r in csv.DictReader(open(path))} if path.is_file() else {}
    for m in methods:
        table = rows["ablation"] if exp.loc[m, "kind"] == "ablation" else rows["main"]
        got = table.get(exp.loc[m, "display"])
        if got is None:
            problems.append(f"report table has no row for {m} ({exp.loc[m, 'display']!r})")
        elif got["AP"] == "missing":
            problems.append(f"report row for {m} says missing")
    if not (res / "report" / "index.html").is_file():
        problems.append(f"no {res / 'report' / 'index.html'}")
    print(f"{args.configfile}: {len(tiles['images'])} tiles, {len(tiles['annotations'])} boxes; parts "
          + ", ".join(f"{p}={len(v['images'])}" for p, v in parts.items())
          + f"; {len(rows['main'])} main-table rows, {len(rows['ablation'])} ablation rows for {len(methods)} methods")
    if args.learning and not problems:
        problems += check_learning(cfg, exp, methods, res, ds, deg)
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
