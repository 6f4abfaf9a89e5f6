"""Two builds of the C++ statistics extension side by side in one process, against a plain read
of the same bytes: which build is faster, measured in one run (the VM's bandwidth drifts between
runs). Each build is a compiled ``_block_stats_cpp`` module file, e.g. one built with
``LAYERFAST_NO_AVX512=1 python setup.py build_ext --inplace`` and copied aside:

    python benchmarks/bench_block_stats_builds.py --hidden 4096 --dtype bf16 --threads 1 \\
        avx2=/tmp/avx2.so avx512=/tmp/avx512.so

Input: x_in, x_out [B, 2048, hidden] holding --bytes together, every token real, absolute
threshold 0.01, segments as the host wrapper picks them, outputs allocated per call as it does.
The read ceiling is ``src.sum()`` of both tensors (as in bench_block_stats.py). Calls alternate
read, build 1, build 2, ... for --repeat rounds; the best round after the first is reported
(GB/s = bytes read / time).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from layerfast.activations.block_stats_cpp import numpy_view, segment_length
from layerfast.cli.values import byte_size

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load(tag: str, path: str):
    """The extension module at ``path`` under a name of its own (its init symbol is fixed)."""
    spec = importlib.util.spec_from_file_location(f"{tag}._block_stats_cpp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("builds", nargs="+", help="TAG=PATH of a built _block_stats_cpp module")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bytes", default="1GiB", help="bytes read per call (x_in + x_out)")
    p.add_argument("--repeat", type=int, default=4)
    args = p.parse_args(argv)
    builds = {}
    for spec in args.builds:
        tag, sep, path = spec.partition("=")
        if not sep or not tag.isidentifier():
            p.error(f"build {spec!r}: expected TAG=PATH with TAG a Python name")
        builds[tag] = load(tag, path)
    torch.set_num_threads(args.threads)
    dtype, tokens = DTYPES[args.dtype], 2048
    batch = max(1, byte_size("--bytes", args.bytes) // (2 * tokens * args.hidden * dtype.itemsize))
    x_in = torch.randn(batch, tokens, args.hidden).to(dtype)  # [B, T, d]
    x_out = torch.randn(batch, tokens, args.hidden).to(dtype)  # [B, T, d]
    mask = torch.ones(batch, tokens, dtype=torch.uint8)
    seg_len = segment_length(batch, tokens, args.threads)
    n_seg = -(-tokens // seg_len)
    name = str(dtype).removeprefix("torch.")

    def kernel(module):
        """One call with fresh outputs, as the host wrapper makes them (their page faults count).
        Builds before the fused row sums (block_stats_rows.h) take no seg_sums and seg_last and
        write every row; the others write only those, as the host wrapper asks them to."""
        new = "seg_last" in (module.block_stats.__doc__ or "")
        rows = torch.empty((0,) if new else (5, batch, tokens), dtype=torch.float64)
        seg_mean = torch.empty(batch, n_seg, args.hidden, dtype=torch.float64)
        seg_m2 = torch.empty_like(seg_mean)
        sums = [torch.empty(batch, n_seg, k, dtype=torch.float64).numpy() for k in (6, 3)]
        module.block_stats(
            numpy_view(x_in),
            numpy_view(x_out),
            name,
            mask.numpy(),
            0.01,
            False,
            seg_len,
            rows.numpy(),
            seg_mean.numpy(),
            seg_m2.numpy(),
            *(sums if new else []),
            args.threads,
        )

    calls = {"read": lambda: (x_in.sum(), x_out.sum())}
    calls.update({tag: (lambda m=m: kernel(m)) for tag, m in builds.items()})
    times = {tag: [] for tag in calls}
    for _ in range(args.repeat):
        for tag, call in calls.items():
            start = time.perf_counter()
            call()
            times[tag].append(time.perf_counter() - start)
    gb = 2 * x_in.numel() * dtype.itemsize / 1e9
    best = {tag: min(t[1:] or t) for tag, t in times.items()}
    cells = [
        f"{tag} {gb / best[tag]:.1f} GB/s ({best['read'] / best[tag]:.0%} of read)" for tag in calls
    ]
    print(
        f"hidden {args.hidden} {args.dtype} {args.threads} thread(s), {gb:.2f} GB: "
        + ", ".join(cells)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
