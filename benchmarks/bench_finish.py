"""The C++ statistics op split in two: the host wrapper (``cpp_block_stats``: allocation and
kernel) and ``finish`` (partials -> fp64 accumulators), each timed alone on the kernels step's
input (``layerfast.bench.kernels.kernel_inputs``: [B, 2048, hidden], every token real). To compare
two versions, run it once per source tree, alternating, with the tree first on the path:

    PYTHONPATH=/path/to/old MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/bench_finish.py
    PYTHONPATH=.            MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/bench_finish.py

``finish`` is arithmetic on partials already in memory, so its time moves little with the VM's
bandwidth; the kernel's does (compare kernels with bench_block_stats_builds.py instead).
Prints the median and range of --repeat calls after the first, in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bytes", default="1GiB", help="x_in and x_out together")
    p.add_argument("--repeat", type=int, default=6)
    args = p.parse_args(argv)

    import layerfast
    from layerfast.activations.block_stats_cpp import cpp_block_stats
    from layerfast.activations.finish import finish
    from layerfast.bench.kernels import kernel_inputs
    from layerfast.cli.values import byte_size

    torch.set_num_threads(args.threads)
    n_bytes = byte_size("--bytes", args.bytes)
    x_in, x_out, mask = kernel_inputs(args.hidden, DTYPES[args.dtype], n_bytes, torch.device("cpu"))
    times: dict[str, list[float]] = {"kernel": [], "finish": []}
    for _ in range(args.repeat + 1):
        start = time.perf_counter()
        partials = cpp_block_stats(x_in, x_out, mask, 1e-5, False)
        middle = time.perf_counter()
        finish(partials, mask)
        end = time.perf_counter()
        times["kernel"].append(1e3 * (middle - start))
        times["finish"].append(1e3 * (end - middle))
    print(
        f"{layerfast.__file__}: [{'x'.join(map(str, x_in.shape))}] {args.dtype}, "
        f"{args.threads} thread(s)"
    )
    for name, ms in times.items():
        ms = ms[1:]
        print(f"  {name:<7} {statistics.median(ms):7.2f} ms ({min(ms):.2f}-{max(ms):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
