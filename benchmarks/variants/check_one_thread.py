"""Checks that the one-thread variants built by ``build_one_thread.sh`` give the kernel's
statistics: each build's seg_mean, seg_m2 and seg_sums on a masked [3, 700, 576] bf16 input
against the first build's, as the largest relative difference (|a - b| / (|b| + 1e-3)):

    python benchmarks/variants/check_one_thread.py /tmp/variants base split interleaved pairs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from layerfast.activations.block_stats_cpp import numpy_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from bench_block_stats_builds import load  # noqa: E402  (one loader for the builds' modules)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="where build_one_thread.sh put the builds")
    p.add_argument("builds", nargs="+", help="build names; the first is the reference")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    B, T, d, seg_len = 3, 700, 576, 256
    S = -(-T // seg_len)
    x_in = torch.randn(B, T, d).to(torch.bfloat16)  # [B, T, d]
    x_out = (torch.randn(B, T, d) * 3 + 1).to(torch.bfloat16)  # [B, T, d]
    mask = (torch.rand(B, T) > 0.1).to(torch.uint8)  # [B, T], about 10% padding
    results = {}
    for tag in args.builds:
        path = args.folder / f"{tag}.so"
        if not path.is_file():
            p.error(f"no build {path}")
        module = load(tag, path)
        mean, m2 = np.zeros((B, S, d)), np.zeros((B, S, d))
        sums, last = np.zeros((B, S, 6)), np.zeros((B, S, 3))
        module.block_stats(
            numpy_view(x_in), numpy_view(x_out), "bfloat16", mask.numpy(), 0.01, False,
            seg_len, np.zeros(0), mean, m2, sums, last, 1,
        )  # fmt: skip
        results[tag] = (mean, m2, sums)
    reference = results[args.builds[0]]
    for tag, got in results.items():
        diffs = [float(np.max(np.abs(a - b) / (np.abs(b) + 1e-3))) for a, b in zip(got, reference)]
        print(f"{tag}: seg_mean {diffs[0]:.1e}, seg_m2 {diffs[1]:.1e}, seg_sums {diffs[2]:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
