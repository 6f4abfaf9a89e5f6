"""The GPU suite's goals, checked against ``bench.json`` in the given folder.

    python benchmarks/gpu/summary.py DIR

Goals: the statistics kernel reads at >= 80% of a plain read of the same bytes and >= 70% with
its fp64 finish (issue 31; fused reductions reach about 90% of HBM bandwidth, the bar the Triton
kernel is designed for: one pass, whole rows per program, coalesced 16-byte loads); the statistics
pass within 3% of a plain forward; a window-3 proximity sweep (190 utilities on a 32-block model)
over 1,000 4-choice items projected under 10 minutes on the fast path; on a small batch the
stacked prefix executor at least as fast as the unstacked one, its log-likelihoods within the
packing tolerance (2e-5 fp32, 0.05 bf16). Each goal prints MET or MISSED with the figure; a
missed goal is a finding, not a failure. Exit status 1 only when bench.json is missing or lacks
a step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KERNEL_OF_READ = 0.80
FINISH_OF_READ = 0.70
STATS_OVERHEAD = 0.03
SWEEP_MINUTES = 10.0
TOLERANCE = {"float32": 2e-5, "bfloat16": 0.05, "float16": 0.05}
STEPS = ("kernels", "overhead", "sweep", "stacking")


def goals(bench: dict) -> list[tuple[str, bool | None, str]]:
    """(goal, met (None: not measured), the figure) for each goal."""
    steps = bench["steps"]
    out = []
    kernels = steps.get("kernels", {})
    kernel = next((k for k in ("triton kernel", "cpp kernel") if k in kernels), None)
    if kernel:
        finish = kernels.get(kernel.replace("kernel", "+ finish"), {})
        share, with_finish = kernels[kernel]["of_read"], finish.get("of_read", float("nan"))
        out.append(
            (
                f"statistics kernel >= {KERNEL_OF_READ:.0%} of read bandwidth, "
                f">= {FINISH_OF_READ:.0%} with finish",
                share >= KERNEL_OF_READ and with_finish >= FINISH_OF_READ,
                f"{kernel}: {kernels[kernel]['GB/s']:.0f} GB/s = {share:.0%} of read "
                f"({kernels['read_GB/s']:.0f} GB/s), {kernels[kernel]['of_copy']:.0%} of copy "
                f"({kernels['copy_GB/s']:.0f} GB/s); with finish {with_finish:.0%} of read",
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
    stacked = steps.get("stacking", {})
    if "prefix_over_stacked" in stacked:
        bound = TOLERANCE.get(stacked["dtype"], 0.05)
        out.append(
            (
                "small batches stacked: at least as fast as unstacked, within the packing "
                "tolerance",
                stacked["prefix_over_stacked"] >= 1.0 and stacked["max_abs_diff"] <= bound,
                f"{stacked['items']} items, batches of {stacked['batches_padded_tokens']} tokens, "
                f"groups of {stacked['group']}: unstacked / stacked "
                f"{stacked['prefix_over_stacked']:.2f}x, max |diff| "
                f"{stacked['max_abs_diff']:.1e} (bound {bound:g})",
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
    missing = [s for s in STEPS if s not in bench["steps"]]
    if missing:
        print(f"summary: bench.json lacks the step(s) {missing}")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/gpu/summary.py DIR")
    sys.exit(main(sys.argv[1]))
