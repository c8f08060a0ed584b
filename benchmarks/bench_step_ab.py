"""Whole-step A/B of SDCoNet between checkouts (e.g. a commit before a speed change and the working tree).

Each round runs every checkout once, in its own process (alternating, so that a machine whose speed drifts
affects all of them alike; every other round in the reverse order, because the second of two back-to-back runs was
measured up to ~10 % faster than the first on this machine kind, whatever the checkout: use an even ``--rounds``),
and each run measures with that checkout's own ``bench_sdconet.train_speed`` and
``measure_latency``: the paper-preset training step (forward, backward, AdamW step; batch 2 of 512 HR tiles
with 2 random boxes each) with the SR branch frozen (phase 1) and trained (phase 2), and batch-1 inference. A 1024² matmul rate before and after each run shows
how fast the machine was meanwhile. Prints one JSON line per run and the per-checkout medians.

    git worktree add /tmp/base f9469cc    # the checkout to compare with
    .venv/bin/python benchmarks/bench_step_ab.py /tmp/base . --rounds 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUN = r'''
import json, sys, time, torch
repo, runs = sys.argv[1], int(sys.argv[2])
sys.path[:0] = [repo, repo + "/benchmarks"]
from bench_sdconet import batch, build, train_speed
from benchcore.metrics.efficiency import measure_latency
def gmacs():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024); a @ b
    t = time.perf_counter()
    for _ in range(10): a @ b
    return 10 * 1024 ** 3 / (time.perf_counter() - t) / 1e9
torch.manual_seed(0)
m = build("sdconet", "paper", 10, 2)
images, targets = batch(2, 512, 2, 10, "cpu")
res = {"checkout": repo, "matmul_gmacs_before": gmacs()}
for sr in (False, True):
    res["phase2_s" if sr else "phase1_s"] = train_speed(m, images, targets, sr, "cpu", 1, runs)
m.zero_grad(set_to_none=True)
res["infer_s"] = measure_latency(m.eval(), torch.randn(1, 3, 512, 512), "cpu", 1, 5)["median_ms"] / 1e3
res["matmul_gmacs_after"] = gmacs()
print(json.dumps(res))
'''


def main(argv: list[str] | None = None) -> int:
    """Alternate the checkouts for ``--rounds`` rounds and print the medians."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkouts", nargs="+", type=Path, help="repository roots to compare")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="timed steps per phase and run (median)")
    a = p.parse_args(argv)
    rows: dict[str, list[dict]] = {str(c): [] for c in a.checkouts}
    for r in range(a.rounds):
        for c in (a.checkouts if r % 2 == 0 else a.checkouts[::-1]):
            out = subprocess.run([sys.executable, "-c", RUN, str(c.resolve()), str(a.runs)], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows[str(c)].append(json.loads(out))
            print(out, flush=True)
            time.sleep(1)
    first = rows[str(a.checkouts[0])]
    for c, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("phase1_s", "phase2_s", "infer_s")}
        paired = "" if rs is first else ", phase 2 / first checkout's per round: " + ", ".join(
            f"{x['phase2_s'] / y['phase2_s']:.2f}" for x, y in zip(rs, first)) + \
            f" (median x{statistics.median(x['phase2_s'] / y['phase2_s'] for x, y in zip(rs, first)):.2f})"
        print(f"{c}: median phase 1 {med['phase1_s']:.2f} s, phase 2 {med['phase2_s']:.2f} s, "
              f"inference {1e3 * med['infer_s']:.0f} ms over {len(rs)} runs{paired}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
