"""A controlled test of "fine-tune the top-k EAVSS layers": the same fine-tuning (same loss, step
budget, learning rate and seed) applied to k blocks chosen by EAVSS, to the k lowest-EAVSS blocks,
to k random blocks (several seeds) and to all blocks, each measured on the same held-out items.

Splits are disjoint and fixed by a seed: EAVSS is computed on the training items only, the
fine-tuning sees only training items, validation and test items are scored before and after.
The effect of choosing layers by EAVSS is the difference between the ``eavss-top`` row and the
``random`` rows; the effect of fine-tuning at all is any row against ``before``.

On a generative task the same runs with the fine-tuning task and the measures of
:mod:`.generative`: the first target against the model's own wrong answer, accuracy of freshly
generated answers, the first target's log-prob.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from ..errors import UsageError
from ..evaluation.game import Game
from ..models import SublayerModel
from ..tasks import Task
from ..tasks.prompts import is_generative
from . import generative as gen
from .contrastive import FinetuneConfig, finetune
from .eavss import eavss


def split_task(
    task: Task, fractions: Sequence[float] = (0.5, 0.25, 0.25), seed: int = 0
) -> tuple[Task, Task, Task]:
    """Disjoint (train, validation, test) subsets, drawn by ``seed``, each kept in task order
    (of the task's own kind: a generative task keeps its stops and token limit)."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or (f <= 0).any() or abs(f.sum() - 1) > 1e-9:
        raise UsageError(
            f"fractions must be three positive numbers summing to 1, got {list(fractions)}"
        )
    n = len(task)
    counts = np.floor(f * n).astype(int)
    counts[0] += n - counts.sum()
    if (counts < 2).any():
        raise UsageError(f"{task.name}: {n} items are too few to split into {counts.tolist()}")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum(counts)[:-1]
    parts = np.split(order, bounds)
    if is_generative(task):
        gen_items = gen.check_items(task, "splitting into train/val/test")
        return tuple(
            dataclasses.replace(
                task,
                name=f"{task.name}-{name}",
                items=[gen_items[i] for i in sorted(p)],
                notes={**task.notes, "split": name, "split_seed": seed},
            )
            for name, p in zip(("train", "val", "test"), parts, strict=True)
        )
    return tuple(
        Task(
            f"{task.name}-{name}",
            [task.items[i] for i in sorted(p)],
            task.delimiter,
            task.source,
            {**task.notes, "split": name, "split_seed": seed},
        )
        for name, p in zip(("train", "val", "test"), parts, strict=True)
    )


def evaluate(model: SublayerModel, task: Task, utility: str = "acc_norm") -> dict:
    """Accuracy (``utility``) and mean gold log-prob on ``task``, with per-item terms (a
    generative task: :func:`.generative.evaluate`)."""
    if is_generative(task):
        return gen.evaluate(model, task, utility)
    game = Game(model, task, utility=utility, progress=False)
    full = game.full_mask()
    correct = game.per_item(full)
    logprob = game.per_item(full, "logprob")
    return {
        "acc": float(correct.mean()),
        "logprob": float(logprob.mean()),
        "correct": correct,
        "gold_logprob": logprob,
    }


def compare(
    model: SublayerModel,
    task: Task,
    k: int = 3,
    config: FinetuneConfig | None = None,
    n_random: int = 3,
    scope: str = "answer",
    utility: str | None = None,
    stats_dtype="bf16",
    fractions: Sequence[float] = (0.5, 0.25, 0.25),
    seed: int = 0,
    progress: bool = True,
    log=print,
    keep: Sequence[str] = (),
) -> dict:
    """Run every condition; returns {"rows": [...], "eavss": EAVSSResult (train items), "models":
    the fine-tuned models of the conditions named in ``keep``, ...}. ``config``: None = defaults;
    ``utility`` None: acc_norm (generative: exact_match)."""
    if config is None:
        config = FinetuneConfig()
    generative = is_generative(task)
    if generative:
        utility = gen.check_utility(task, utility)
        gen.check_items(task, "--finetune")
    elif utility is None:
        utility = "acc_norm"
    if task.notes.get("canary"):
        raise UsageError(
            f"{task.name} carries a canary ({task.notes['canary']!r}): it is not "
            "fine-tuned on; run the EAVSS analysis without --finetune"
        )
    train, val, test = split_task(task, fractions, seed)
    t0 = time.time()
    result = eavss(
        model, train, utility=utility, stats_dtype=stats_dtype, seed=seed, progress=progress
    )
    log(
        f"EAVSS on {len(train)} training items ({int(result.correct.sum())} right, "
        f"{int(len(result.correct) - result.correct.sum())} wrong) in {time.time() - t0:.0f} s"
    )
    n = model.n_blocks
    rng = np.random.default_rng(seed + 1)
    conditions = [
        ("eavss-top", result.top(k, scope)),
        ("eavss-bottom", result.top(k, scope, lowest=True)),
    ]
    conditions += [
        (f"random-{i}", sorted(rng.choice(n, size=k, replace=False).tolist()))
        for i in range(n_random)
    ]
    conditions.append(("all", list(range(n))))
    # the task the fine-tuning trains on: a generative item's first target against its own
    # generated answer (.generative.contrastive_task)
    train_on = (
        gen.contrastive_task(train, result.correct, list(result.predictions))
        if generative
        else train
    )
    before = {"val": evaluate(model, val, utility), "test": evaluate(model, test, utility)}
    rows = [_row("before", [], before, before, [])]
    models = {}
    for name, blocks in conditions:
        t0 = time.time()
        tuned, losses = finetune(model, train_on, blocks, config, progress=progress)
        after = {"val": evaluate(tuned, val, utility), "test": evaluate(tuned, test, utility)}
        rows.append(_row(name, blocks, before, after, losses))
        r = rows[-1]
        log(
            f"{name:<13} blocks {str(blocks):<16} test {utility} {r['test_acc_before']:.3f} -> "
            f"{r['test_acc_after']:.3f} "
            f"({r['test_acc_delta']:+.3f} ± {r['test_acc_delta_se']:.3f}); "
            f"gold log-prob {r['test_logprob_before']:.3f} -> {r['test_logprob_after']:.3f}; "
            f"{time.time() - t0:.0f} s"
        )
        if name in keep:
            models[name] = tuned
        del tuned
    return {
        "rows": rows,
        "eavss": result,
        "models": models,
        "k": k,
        "scope": scope,
        "utility": utility,
        "config": config,
        "splits": {"train": len(train), "val": len(val), "test": len(test)},
        "split_seed": seed,
    }


def _row(name: str, blocks: list, before: dict, after: dict, losses: list) -> dict:
    row = {"condition": name, "blocks": blocks}
    for split in ("val", "test"):
        b, a = before[split], after[split]
        diff = a["correct"] - b["correct"]  # paired per item
        row.update(
            {
                f"{split}_acc_before": b["acc"],
                f"{split}_acc_after": a["acc"],
                f"{split}_acc_delta": a["acc"] - b["acc"],
                f"{split}_acc_delta_se": float(diff.std(ddof=1) / np.sqrt(len(diff)))
                if len(diff) > 1
                else float("nan"),
                f"{split}_logprob_before": b["logprob"],
                f"{split}_logprob_after": a["logprob"],
            }
        )
    row["final_loss"] = (
        float(np.mean([x["loss"] for x in losses[-10:]])) if losses else float("nan")
    )
    return row
