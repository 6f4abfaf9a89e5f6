"""The GPU suite's goals, checked against ``bench.json`` in the given folder.

    python benchmarks/gpu/summary.py DIR

Goals (issue 14): the statistics kernel at >= 80% of the device's copy bandwidth; the statistics
pass within 3% of a plain forward; a window-3 proximity sweep (190 utilities on a 32-block model)
over 1,000 4-choice items projected under 10 minutes on the fast path. Each goal prints MET or
MISSED with the figure; a missed goal is a finding, not a failure. Exit status 1 only when
bench.json is missing or lacks a step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KERNEL_OF_COPY = 0.80
STATS_OVERHEAD = 0.03
SWEEP_MINUTES = 10.0


def goals(bench: dict) -> list[tuple[str, bool | None, str]]:
    """(goal, met (None: not measured), the figure) for each goal."""
    steps = bench["steps"]
    out = []
    kernels = steps.get("kernels", {})
    kernel = next((k for k in ("triton kernel", "cpp kernel") if k in kernels), None)
    if kernel:
        finish = kernels.get(kernel.replace("kernel", "+ finish"), {})
        share = kernels[kernel]["of_copy"]
        out.append(
            (
                f"statistics kernel >= {KERNEL_OF_COPY:.0%} of copy bandwidth",
                share >= KERNEL_OF_COPY,
                f"{kernel}: {kernels[kernel]['GB/s']:.0f} GB/s = {share:.0%} of copy "
                f"({kernels['copy_GB/s']:.0f} GB/s), {kernels[kernel]['of_read']:.0%} of read "
                f"({kernels['read_GB/s']:.0f} GB/s); with finish "
                f"{finish.get('of_copy', float('nan')):.0%} of copy",
            )
        )
    else:
        out.append(("statistics kernel bandwidth", None, "no kernel measured"))
    overhead = steps.get("overhead", {})
    if "overhead_vs_hf_forward" in overhead:
        o = overhead["overhead_vs_hf_forward"]
        out.append(
            (
                f"statistics pass within {STATS_OVERHEAD:.0%} of a plain forward",
                o < STATS_OVERHEAD,
                f"{o:+.1%} vs the HF forward, {overhead['overhead_vs_forward_loop']:+.1%} vs "
                "the forward loop",
            )
        )
    sweep = steps.get("sweep", {})
    if "proximity" in sweep:
        prox = sweep["proximity"]
        minutes = prox["fast"]["projected_full_s"] / 60
        items = bench["options"].get("project_items") or 1000
        out.append(
            (
                f"window-3 proximity sweep over {items} items < {SWEEP_MINUTES:.0f} min (fast)",
                minutes < SWEEP_MINUTES,
                f"{prox['n_coalitions_full']} utilities: fast {minutes:.1f} min, naive "
                f"{prox['naive']['projected_full_s'] / 60:.1f} min, seed way "
                f"{prox['seed']['projected_full_s'] / 60:.1f} min; sample seed / fast "
                f"{prox['seed_over_fast']:.2f}x",
            )
        )
    return out


def main(folder: str) -> int:
    path = Path(folder) / "bench.json"
    if not path.is_file():
        print(f"summary: {path} is missing (the bench step did not run)")
        return 1
    bench = json.loads(path.read_text())
    machine = bench["machine"]
    print(
        f"{machine['device_name']} | torch {machine['torch']} | {machine['date']} | "
        f"{machine['commit']} | {bench['model']['name']}"
    )
    for goal, met, figure in goals(bench):
        verdict = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[met]
        print(f"  {verdict:<12} {goal}: {figure}")
    missing = [s for s in ("kernels", "overhead", "sweep") if s not in bench["steps"]]
    if missing:
        print(f"summary: bench.json lacks the step(s) {missing}")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/gpu/summary.py DIR")
    sys.exit(main(sys.argv[1]))
