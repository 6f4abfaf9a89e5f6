"""Statistics kernels: (a) throughput of each backend against this machine's copy and read
bandwidth,
(b) a full statistics pass against what users do today (keep every hidden state, then NumPy):
wall time and peak memory, side by side in one run. Every measurement is also appended as a row
to benchmarks/results.csv (benchmarks/rows.py: p50/p20/p80 over the repeats).

    python benchmarks/bench_block_stats.py kernels --hidden 4096 --dtype bf16 --bytes 1GiB
    python benchmarks/bench_block_stats.py kernels --hidden 576 --dtype fp32 --threads 1
    python benchmarks/bench_block_stats.py pass --batch 4 --seq 1024

(a) Bandwidth: :mod:`layerfast.bench.kernels` (what ``layerfast bench`` runs), on inputs of
    --hidden channels whose x_in and x_out hold --bytes together. The kernel reads them once:
    GB/s = bytes / time. The ceilings (:mod:`layerfast.bench.bandwidth`) are ``dst.copy_(src)``
    (bytes read plus written per second, STREAM's convention) and a plain read (``src.sum()``)
    of the same bytes. "kernel" is the host wrapper alone, "+ finish" the public op
    ``dispatch.block_stats`` (checks, kernel and the fp64 reduction of its partials).
(b) Peak memory is the rise of the process's resident set (VmHWM after resetting it, minus the
    resident set before) during the first pass, each path in a fresh subprocess after the model is
    loaded and every weight page touched by an 8-token forward; glibc returns freed blocks at once
    (MALLOC_MMAP_THRESHOLD_=65536), so the resident set follows live memory. Wall time is the best
    of the passes (results.csv: quantiles of the --repeat passes after the first). Paths:
      streaming  lf.stats over the same tokens (kernel chosen by backend="auto")
      hidden     hf_model.model(..., output_hidden_states=True), every state to NumPy, statistics
                 in NumPy (no LM head: the strict baseline)
      causal_lm  the same through hf_model(...), which also materialises [B, T, vocab] logits
      forward    hf_model.model(...) alone, keeping nothing: the floor every path pays (the
                 forward's own transients: MLP intermediates, attention); the table also gives
                 each path's memory above it
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import rows

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# ---- (a) kernel throughput ----------------------------------------------------------------------


def bench_kernels(args) -> list[dict]:
    import torch

    from layerfast.bench import kernels
    from layerfast.cli.values import byte_size

    if args.threads:
        torch.set_num_threads(args.threads)  # the ceilings' and the C++ kernel's threads
    print(f"threads: {torch.get_num_threads()}")

    _, out_rows, lines = kernels.measure(
        args.hidden,
        getattr(torch, DTYPES[args.dtype]),
        torch.device(args.device),
        byte_size("--bytes", args.bytes),
        args.repeat,
        budget_s=float("inf"),
    )
    print("\n".join(lines))
    return out_rows


# ---- (b) full pass vs keep-all-hidden-states -----------------------------------------------------


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set


def _inputs(model, batch: int, seq: int):
    """[batch, seq] token ids from the Lee corpus, each row a different stretch of it."""
    import torch

    from layerfast.tasks.texts import calibration_texts

    text = " ".join(calibration_texts("lee", 10_000))
    ids = model.tokenizer.encode(text)
    need = batch * seq
    if len(ids) < need:
        ids = ids * (need // len(ids) + 1)
    return torch.tensor(ids[:need]).view(batch, seq), model.tokenizer.decode


def run_pass_child(args) -> None:
    """One path, in this (fresh) process: prints a JSON line with peak memory and wall time."""
    import torch

    import layerfast as lf
    from layerfast.activations.collect import stats
    from layerfast.bench.overhead import numpy_statistics

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model = lf.load(args.model, dtype=args.dtype and DTYPES.get(args.dtype, args.dtype))
    ids, decode = _inputs(model, args.batch, args.seq)
    mask = torch.ones_like(ids)

    if args.path == "streaming":
        texts = [decode(seq) for seq in ids.tolist()]

        def once():
            return stats(model, texts, batch_size=args.batch, max_length=args.seq, progress=False)
    elif args.path == "forward":

        def once():
            with torch.inference_mode():
                model.hf_model.model(input_ids=ids, attention_mask=mask, use_cache=False)
    else:
        body = model.hf_model.model if args.path == "hidden" else model.hf_model

        def once():
            with torch.inference_mode():
                out = body(
                    input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False
                )
                hidden = [h.float().numpy() for h in out.hidden_states]
            return numpy_statistics(hidden, mask.numpy(), 1e-5)

    import gc

    with torch.inference_mode():  # touch every weight page first (safetensors are memory-mapped)
        model.hf_model(input_ids=ids[:1, :8], use_cache=False)
    gc.collect()
    before = _rss_kb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    result = once()
    first = time.perf_counter() - t0
    peak = _rss_kb("VmHWM") - before
    del result
    gc.collect()
    times = [first]
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    n_tokens = int(mask.sum())
    if args.path == "streaming":
        from layerfast.activations.dispatch import resolve

        backend = resolve("auto", model.device, model.dtype)
    else:
        backend = "none" if args.path == "forward" else "numpy"
    print(
        "RESULT "
        + json.dumps(
            {
                "path": args.path,
                "peak_mb": peak / 1024,
                "wall_s": min(times),
                "walls_s": times[1:] or times,
                "dtype": str(model.dtype),
                "tokens": n_tokens,
                "backend": backend,
                "hidden_mb_kept": (model.n_blocks + 1)
                * n_tokens
                * model.config.hidden_size
                * model.dtype.itemsize
                / 2**20,
            }
        )
    )


def bench_pass(args) -> list[dict]:
    measured = []
    for path in ("streaming", "hidden", "causal_lm", "forward"):
        cmd = [
            sys.executable,
            __file__,
            "pass-child",
            "--path",
            path,
            "--model",
            args.model,
            "--batch",
            str(args.batch),
            "--seq",
            str(args.seq),
            "--repeat",
            str(args.repeat),
        ]
        if args.dtype:
            cmd += ["--dtype", args.dtype]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not line:
            raise RuntimeError(f"{path} failed:\n{done.stderr[-3000:]}")
        measured.append(json.loads(line[0][7:]))
    base, floor = measured[0], measured[-1]
    print(
        f"pass: {args.model}, batch {args.batch} x {args.seq} tokens = {base['tokens']} tokens; "
        f"hidden states kept by the baselines: {base['hidden_mb_kept']:.0f} MB"
    )
    above_base = max(base["peak_mb"] - floor["peak_mb"], 1e-9)
    out = []
    for r in measured:
        r["peak vs streaming"] = r["peak_mb"] / base["peak_mb"]
        r["above forward"] = r["peak_mb"] - floor["peak_mb"]
        r["above forward vs streaming"] = r["above forward"] / above_base
        r["wall vs streaming"] = r["wall_s"] / base["wall_s"]
        print(
            f"  {r['path']:<10} peak +{r['peak_mb']:7.1f} MB ({r['peak vs streaming']:5.2f}x)  "
            f"above a plain forward +{r['above forward']:7.1f} MB "
            f"({r['above forward vs streaming']:6.1f}x)  wall {r['wall_s']:6.2f} s "
            f"({r['wall vs streaming']:5.2f}x)  [{r['backend']}]"
        )
        common = (
            "block_stats_pass",
            f"{r['path']} [{r['backend']}]",
            f"{args.model} {args.batch}x{args.seq}",
            r["dtype"].removeprefix("torch."),
            "cpu",
        )
        out += [rows.row(*common, "peak_MB", r["peak_mb"]), rows.row(*common, "s", r["walls_s"])]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kernels")
    k.add_argument("--hidden", type=int, default=4096)
    k.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    k.add_argument("--device", default="cpu")
    k.add_argument("--bytes", default="1GiB", help="bytes read per call (x_in + x_out)")
    k.add_argument("--repeat", type=int, default=10)
    k.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    for name in ("pass", "pass-child"):
        p = sub.add_parser(name)
        p.add_argument("--model", default="smollm2-135m")
        p.add_argument("--dtype", default=None)
        p.add_argument("--batch", type=int, default=4)
        p.add_argument("--seq", type=int, default=1024)
        p.add_argument("--repeat", type=int, default=2)
        p.add_argument("--threads", type=int, default=None)
        p.add_argument(
            "--path", default="streaming", choices=["streaming", "hidden", "causal_lm", "forward"]
        )
    args = parser.parse_args(argv)
    if args.what == "pass-child":
        run_pass_child(args)
        return 0
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    rows.append(bench_kernels(args) if args.what == "kernels" else bench_pass(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
