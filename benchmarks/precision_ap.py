"""AP of one trained SDCoNet run's checkpoint under mixed-precision inference against fp32 (issue 13: "AP on a fixed
checkpoint unchanged within noise against fp32").

Evaluates ``RUN/train/last.pt`` on ``--split`` once per ``--precisions`` entry with ``python -m sdconet evaluate``'s
library function (``sdconet.spec.evaluate_from_spec``: the run's own data, protocol and settings), writing
``OUT/metrics_<precision>.json`` (the run's own ``metrics.json`` is left alone), and prints AP, AP50, AP_s, the SR
PSNR, the evaluation's wall time and each precision's difference from fp32. "Noise" is the half-width of fp32's 95 %
bootstrap interval over the test images (``--bootstrap``, 200 by default; AP and AP_s); a precision whose
differences lie within it is marked ``ok``.

    python benchmarks/precision_ap.py --run results/runs/nwpu/bicubic_x2/sdconet/seed0 --device cuda \
        [--precisions fp32 bf16 fp16] [--split test] [--bootstrap 200] [--out /tmp/precision_ap]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEYS = ("AP", "AP50", "AP_s")


def compare(rows: dict[str, dict[str, Any]], ci: dict[str, list[float]] | None) -> dict[str, dict[str, Any]]:
    """Each precision's differences from ``rows["fp32"]`` and, with fp32's bootstrap intervals ``ci``
    (``{"AP": [lo, hi], ...}``), whether each lies within the interval's half-width."""
    base = rows["fp32"]
    out: dict[str, dict[str, Any]] = {}
    for name, r in rows.items():
        if name == "fp32":
            continue
        d = {k: r[k] - base[k] for k in KEYS}
        out[name] = {"delta": d}
        if ci:
            half = {k: (ci[k][1] - ci[k][0]) / 2 for k in ci if k in d}
            out[name]["noise"] = half
            out[name]["within_noise"] = all(abs(d[k]) <= half[k] for k in half)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a trained run folder (RUN/train/run_spec.json)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    p.add_argument("--split", default="test")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--bootstrap", type=int, default=200, help="fp32's bootstrap replicates (0: no noise estimate)")
    p.add_argument("--out", type=Path, default=None, help="folder of the metrics files (default: RUN/precision_ap)")
    a = p.parse_args(argv)
    from benchcore.metrics.results import read_metrics  # noqa: PLC0415
    from benchcore.runspec import RUN_SPEC, load_spec  # noqa: PLC0415
    from sdconet.spec import evaluate_from_spec  # noqa: PLC0415

    if "fp32" not in a.precisions:
        p.error("--precisions must include fp32, the reference")
    spec_path = a.run / "train" / RUN_SPEC
    spec = load_spec(spec_path)
    out = a.out or a.run / "precision_ap"
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    ci = None
    for name in ["fp32"] + [x for x in a.precisions if x != "fp32"]:
        t0 = time.perf_counter()
        evaluate_from_spec(spec, spec_path=spec_path, split=a.split, batch_size=a.batch_size, device=a.device,
                           out=out / f"metrics_{name}.json", precision=name,
                           n_boot=a.bootstrap if name == "fp32" else 0)
        wall = time.perf_counter() - t0
        doc = read_metrics(out / f"metrics_{name}.json")
        rows[name] = {**{k: doc["detection"][k] for k in KEYS}, "psnr": (doc["sr"] or {}).get("psnr"),
                      "eval_s": wall, "device": doc["provenance"]["device"]}
        if name == "fp32" and a.bootstrap:
            ci = {k: [v["low"], v["high"]] for k, v in doc["extra"]["bootstrap"].items() if k in KEYS}
        print(json.dumps({"precision": name, **rows[name]}), flush=True)
    result = {"run": str(a.run), "split": a.split, "rows": rows, "vs_fp32": compare(rows, ci)}
    (out / "precision_ap.json").write_text(json.dumps(result, indent=1))
    print(f"\n{a.run} ({a.split}), {rows['fp32']['device']}\n")
    print("| precision | AP | AP50 | AP_s | PSNR | eval s | ΔAP vs fp32 | within fp32's 95 % CI half-width |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        c = result["vs_fp32"].get(name, {})
        psnr = f"{r['psnr']:.2f}" if r["psnr"] is not None else "-"
        delta = f"{c['delta']['AP']:+.4f}" if c else ""
        ok = ("ok" if c.get("within_noise") else "no") if "within_noise" in c else ""
        print(f"| {name} | {r['AP']:.4f} | {r['AP50']:.4f} | {r['AP_s']:.4f} | {psnr} | {r['eval_s']:.1f} | {delta} "
              f"| {ok} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
