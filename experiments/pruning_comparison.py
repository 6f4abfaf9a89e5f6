"""Search vs one-shot pruning on the same items: which sublayers or blocks to drop at 10%, 25%
and 40% removal, judged on held-out tasks (docs/pruning.md).

Every method sees the same calibration data (the search game: ``--calib`` scored by
``--objective``, ``kl`` by default as FinerCut and EvoPress do): greedy sublayer search, greedy
block search, beam search (sublayers), and the one-shot rankings: ablation drop, Shapley
(kernel and proximity) on the same game, AVSS, BI and angular distance from the statistics pass
on the calibration documents. Each pruned model is then scored on the held-out tasks
(``acc_norm``, 95% item-bootstrap intervals of the retention v/v(full)), and its forward speed
measured against the full model's in the same run (the sublayer loop with the removed sublayers
skipped, alternated with the full model, ratio of the median times).

    python experiments/pruning_comparison.py --model smollm2-135m \
        --out benchmarks/pruning_smollm2.json

Searches go through a cache file (``--cache``), so a killed run resumes where it stopped.
``speed JSON...`` measures the speed-ups again (on a quiet machine); ``render FIGURE JSON...``
prints the Markdown tables and draws the figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import layerfast as lf
from layerfast.pruning.path import path_values
from layerfast.tasks.text_task import TextTask


def speedup(model, keep: np.ndarray, ids: torch.Tensor, repeat: int) -> float:
    """Forward speed-up of ``model(ids, keep=keep)`` over the full model: the ratio of the median
    times of ``repeat`` forwards of each, the two alternated (so drift hits both alike)."""
    full = np.ones(model.n_players, dtype=bool)
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        model(ids[:, :8], keep=keep)
        for _ in range(repeat):
            for is_full, mask in ((True, full), (False, keep)):
                t0 = time.perf_counter()
                model(ids, keep=mask)
                times[is_full].append(time.perf_counter() - t0)
    return float(np.median(times[True]) / np.median(times[False]))


def measure_speed(path: Path, repeat: int, batch: int, tokens: int) -> None:
    """Measure (again) every pruned model's speed-up in ``path`` (a JSON of :func:`main`), on
    random token ids [batch, tokens]; run with nothing else on the machine."""
    data = json.loads(path.read_text())
    model = lf.load(data.get("spec", data["model"]))
    torch.manual_seed(0)
    ids = torch.randint(0, model.tokenizer.vocab_size, (batch, tokens))
    for name, rows in data["methods"].items():
        for f, row in rows.items():
            keep = np.array([p not in set(row["removed"]) for p in model.players])
            row["speedup"] = speedup(model, keep, ids, repeat)
            print(f"{name} @ {float(f):.0%}: x{row['speedup']:.2f}", flush=True)
    data["speed"] = {"batch": batch, "tokens": tokens, "repeat": repeat, "alternated": True}
    path.write_text(json.dumps(data, indent=1, default=float) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--calib", default="text:lee")
    ap.add_argument("--calib-limit", type=int, default=1)
    ap.add_argument("--calib-chars", type=int, default=700, help="each document cut to this")
    ap.add_argument("--objective", default="kl")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--held-out", default="capitals:100,analogies:100")
    ap.add_argument("--fractions", default="0.1,0.25,0.4")
    ap.add_argument("--beam", type=int, default=2, help="beam width (0: no beam search)")
    ap.add_argument("--beam-fraction", type=float, default=0.25)
    ap.add_argument("--kernel-budget", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/layerfast_pruning_cache.sqlite"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    fractions = [float(f) for f in args.fractions.split(",")]
    model = lf.load(args.model)
    whole = lf.tasks.load(args.calib, limit=args.calib_limit)
    calib = TextTask(
        f"{whole.spec}[:{args.calib_chars}]", [d[: args.calib_chars] for d in whole.documents]
    )
    game = lf.Game(
        model, calib, utility=args.objective, max_length=args.max_length, cache=args.cache,
        progress=False,
    )  # fmt: skip
    n, n_blocks = model.n_players, model.n_blocks
    top = max(fractions)
    out: dict = {
        "model": model.name,
        "spec": args.model,
        "calib": calib.name,
        "objective": args.objective,
        "calib_tokens": int(sum(len(r.targets) for r in game.requests)),
        "fractions": fractions,
        "methods": {},
        "searches": {},
    }
    removal: dict[str, dict[float, np.ndarray]] = {}  # method -> fraction -> keep mask [n]

    def from_path(name: str, res, per_unit: int) -> None:
        out["searches"][name] = {
            "order": res.order, "evaluations": res.evaluations, "compute": res.compute,
            "compute_naive": res.compute_naive, "seconds": res.seconds,
            "values": res.search["values"],
        }  # fmt: skip
        total = n // per_unit
        removal[name] = {f: res.masks[min(round(f * total), len(res.order))] for f in fractions}
        print(f"{name}: {res!r} in {res.seconds:.0f} s", flush=True)

    from_path("greedy sublayer", lf.prune_search(game, target=top), 1)
    from_path("greedy block", lf.prune_search(game, target=top, unit="block"), 2)
    if args.beam:  # beam costs beam_width times greedy: searched to --beam-fraction only
        beam_top = min(top, args.beam_fraction)
        res = lf.prune_search(game, target=beam_top, method="beam", beam_width=args.beam)
        from_path(f"beam sublayer (width {args.beam})", res, 1)
        name = f"beam sublayer (width {args.beam})"
        removal[name] = {f: m for f, m in removal[name].items() if f <= beam_top}
    abl = lf.ablate(game)
    rankings = {"ablation drop": np.asarray(abl.drops)}
    for method, options in (("kernel", {"budget": args.kernel_budget}), ("proximity", {})):
        t0 = time.time()
        res = lf.shapley(game, method=method, seed=0, **options)
        rankings[f"Shapley {method}"] = np.asarray(res.values)
        print(f"Shapley {method}: {res.n_evaluations} evaluations, {time.time() - t0:.0f} s")
    for name, score in rankings.items():  # higher = more important: remove the lowest
        order = np.argsort(score, kind="stable")
        removal[name] = {f: _keep(n, order[: round(f * n)]) for f in fractions}
    st = lf.stats(model, calib.documents, max_length=args.max_length, progress=False)
    for metric in ("avss", "bi", "angular"):
        order = np.argsort(np.nan_to_num(np.asarray(st[metric]), nan=np.inf), kind="stable")
        removal[metric.upper() if metric != "angular" else "angular distance"] = {
            f: model.block_mask(order[: round(f * n_blocks)].tolist()) for f in fractions
        }
    held = {}
    for spec in args.held_out.split(","):
        name, _, limit = spec.partition(":")
        task = lf.tasks.load(name, limit=int(limit) if limit else None)
        held[name] = lf.Game(model, task, utility="acc_norm", cache=args.cache, progress=False)
    ids = torch.stack([torch.tensor(r.input_ids[:96]) for r in game.requests[:1]] * 4)
    for name, by_fraction in removal.items():
        rows = {}
        for f, keep in by_fraction.items():
            row = {"removed": [p for p, k in zip(model.players, keep) if not k]}
            for task_name, g in held.items():
                row[task_name] = path_values(g, np.stack([np.ones(n, bool), keep]), 1000, 0)
            row["objective"] = float(game(keep[None])[0])
            row["speedup"] = speedup(model, keep, ids, args.repeat)
            rows[str(f)] = row
            r = {t: row[t]["retained"][1] for t in held}
            print(f"{name} @ {f:.0%}: retained {r}, x{row['speedup']:.2f}", flush=True)
        out["methods"][name] = rows
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")


def _keep(n: int, removed) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    keep[np.asarray(removed, dtype=np.int64)] = False
    return keep


def render(paths: list[Path], figure: Path | None) -> str:
    """Markdown tables (one per model) of the held-out retention with intervals, the objective
    and the speed-up; and a figure (one panel per model and held-out task) if asked."""
    lines, panels = [], []
    for path in paths:
        data = json.loads(path.read_text())
        tasks = [k for k in next(iter(next(iter(data["methods"].values())).values())) if
                 k not in ("removed", "objective", "speedup")]  # fmt: skip
        lines += [f"**{data['model']}** (search objective: {data['objective']} on "
                  f"{data['calib']}, {data['calib_tokens']} tokens)", ""]  # fmt: skip
        head = ["method", "removed"] + [f"{t} retained [95% CI]" for t in tasks]
        lines += ["| " + " | ".join(head + ["KL (nats/token)", "forward speed-up"]) + " |"]
        lines += ["|" + "---|" * (len(head) + 2)]
        for method, rows in data["methods"].items():
            for f, row in rows.items():
                cells = [method, f"{float(f):.0%}"]
                for t in tasks:
                    r = row[t]
                    cells.append(f"{r['retained'][1]:.2f} [{r['retained_lo'][1]:.2f}, "
                                 f"{r['retained_hi'][1]:.2f}]")  # fmt: skip
                speed = "n/m" if row["speedup"] is None else f"{row['speedup']:.2f}x"
                cells += [f"{-row['objective']:.3f}", speed]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        panels += [(data, t) for t in tasks]
    if figure is not None and panels:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
        for ax, (data, t) in zip(axes[0], panels):
            for method, rows in data["methods"].items():
                fr = [float(f) for f in rows]
                v = [rows[f][t]["retained"][1] for f in rows]
                lo = [rows[f][t]["retained_lo"][1] for f in rows]
                hi = [rows[f][t]["retained_hi"][1] for f in rows]
                style = "-" if "greedy" in method or "beam" in method else "--"
                ax.errorbar(fr, v, yerr=[np.subtract(v, lo), np.subtract(hi, v)], ls=style,
                            marker="o", ms=3, capsize=2, label=method)  # fmt: skip
            ax.axhline(0.9, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{data['model']}: {t}", fontsize=9)
            ax.set_xlabel("fraction of sublayers removed")
            ax.set_ylabel("held-out acc_norm retained")
        axes[0][0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(figure, dpi=120)
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["render"]:  # render FIGURE JSON...
        print(render([Path(p) for p in sys.argv[3:]], Path(sys.argv[2])))
    elif sys.argv[1:2] == ["speed"]:  # speed JSON...: the speed-ups again, on a quiet machine
        for p in sys.argv[2:]:
            measure_speed(Path(p), repeat=5, batch=4, tokens=128)
    else:
        main()
