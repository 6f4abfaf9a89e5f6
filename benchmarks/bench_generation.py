"""Generative sweeps: the seed way vs layerfast, side by side in one run.

The seed way (the seed paper's code, SWIFT, Draft & Verify): for every coalition, hook the
removed sublayers' outputs to zero and run ``transformers``' ``generate(do_sample=False)`` on
the prompts, 8 at a time, left-padded, every removed branch still computed. layerfast: one
``lf.Game`` on the generative task (reference outputs decoded once, each coalition verified in one
teacher-forced pass through the prefix executor, decoding only from the first difference, with
drafts from its neighbours' outputs). Both on the coalitions of the window-3 proximity sweep over
``--players``; outputs compared token for token.

    python benchmarks/bench_generation.py                 # short answers + long answers
    python benchmarks/bench_generation.py --quick         # fewer items and players

Prints wall time, decoded tokens (positions computed one step at a time: the seed way decodes
every row of a batch until its last row stops) and forward passes of both, their ratios, and how
many (coalition, prompt) outputs differ (with layerfast's near-tie count).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

import layerfast as lf
from layerfast.estimators.proximity import proximity_masks
from layerfast.tasks.gen_task import GenItem, GenTask

FEWSHOT = (
    "Question: Ann has 4 pens and buys 3 more. How many pens does she have?\n"
    "Answer: Ann starts with 4 pens. She buys 3 more, so she has 4 + 3 = 7 pens. #### 7\n\n"
    "Question: A box holds 6 eggs. How many eggs are in 5 boxes?\n"
    "Answer: Each box holds 6 eggs, so 5 boxes hold 5 * 6 = 30 eggs. #### 30\n\n"
)


def long_task(n: int, max_new_tokens: int) -> GenTask:
    """A gsm8k-shaped task (two worked examples, then a question; stop at the next question)."""
    rng = np.random.default_rng(0)
    names = ["Tom", "Mia", "Raj", "Lea", "Ola", "Ben", "Kim", "Sam", "Ivy", "Max", "Zoe", "Eli"]
    items = []
    for i in range(n):
        a, b, c = (int(x) for x in rng.integers(2, 20, size=3))
        who = names[i % len(names)]
        q = (
            f"{who} has {a} marbles, finds {b} more and then gives away {c}. "
            "How many marbles are left?"
        )
        items.append(GenItem(f"{FEWSHOT}Question: {q}\nAnswer:", (str(a + b - c),), str(i)))
    return GenTask(
        "gsm8k-shaped",
        items,
        source="benchmarks/bench_generation.py",
        until=("Question:", "\n\n"),
        max_new_tokens=max_new_tokens,
    )


class StopStrings(StoppingCriteria):
    """Per-row stop strings, as lm-evaluation-harness's ``stop_sequences_criteria``."""

    def __init__(self, tokenizer, stops, start: int, eos: set[int]):
        self.tokenizer, self.stops, self.start, self.eos = tokenizer, stops, start, eos

    def __call__(self, input_ids, scores, **kwargs):
        done = []
        for row, stops in zip(input_ids, self.stops):
            new = row[self.start :].tolist()
            text = self.tokenizer.decode(new, skip_special_tokens=False)
            done.append(bool(new and new[-1] in self.eos) or any(s in text for s in stops))
        return torch.tensor(done)


def seed_way(model, prompts, masks, batch: int = 8):
    """Outputs [coalition][prompt] and decoded positions, HF generate with zeroing hooks."""
    hf, tok = model.hf_model, model.tokenizer
    eos = lf.models.generation.eos_ids(model)
    pad = lf.models.generation.pad_id(model)
    outputs, decoded, passes = [], 0, 0
    for mask in masks:
        handles = []
        for j in np.flatnonzero(~mask):
            block, kind = model.block_of(int(j))
            module = model.adapter.branch_modules(model.blocks[block])[kind == "mlp"]
            handles.append(module.register_forward_hook(_zero))
        rows = [None] * len(prompts)
        try:
            for start in range(0, len(prompts), batch):
                part = prompts[start : start + batch]
                ids, attn = lf.models.generation.left_pad([p.input_ids for p in part], pad)
                criteria = StopStrings(tok, [p.until for p in part], ids.shape[1], eos)
                with torch.inference_mode():
                    out = hf.generate(
                        ids,
                        attention_mask=attn,
                        do_sample=False,
                        max_new_tokens=part[0].max_new_tokens,
                        stopping_criteria=StoppingCriteriaList([criteria]),
                        pad_token_id=pad,
                    )
                new = out[:, ids.shape[1] :]
                decoded += new.numel()
                passes += new.shape[1]
                for k, row in enumerate(new.tolist()):
                    rows[start + k] = _trim(row, tok, part[k].until, eos)
        finally:
            for h in handles:
                h.remove()
        outputs.append(rows)
    return outputs, decoded, passes


def _zero(module, inputs, output):
    if isinstance(output, tuple):
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)


def _trim(row, tok, stops, eos):
    """A row's tokens up to its own stop (the batch went on for the others)."""
    for k in range(1, len(row) + 1):
        text = tok.decode(row[:k], skip_special_tokens=False)
        if row[k - 1] in eos or any(s in text for s in stops):
            return row[:k]
    return row


def compare(name, model, task, players, window):
    game = lf.Game(model, task, players=players, progress=False)
    masks, _ = proximity_masks(game.n_players, window)
    keep = game.player_set.expand(masks)
    t0 = time.perf_counter()
    theirs, their_decoded, their_passes = seed_way(model, game.prompts, keep)
    t_seed = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = game.outputs(masks)
    t_ours = time.perf_counter() - t0
    differ = sum(a != b for o, t in zip(ours, theirs) for a, b in zip(o, t))
    row = {
        "task": name,
        "items": len(task),
        "coalitions": len(masks),
        "max_new_tokens": game.prompts[0].max_new_tokens,
        "seed_s": round(t_seed, 1),
        "ours_s": round(t_ours, 1),
        "wall_ratio": round(t_seed / t_ours, 2),
        "seed_decoded": their_decoded,
        "ours_decoded": game.decoded_tokens,
        "decoded_ratio": round(their_decoded / max(1, game.decoded_tokens), 1),
        "verified_outputs": game.verified,
        "outputs_differ": differ,
        "of_outputs": len(masks) * len(task),
        "near_ties": game.near_ties,
        "mean_generated_tokens": round(float(np.mean([len(t) for o in ours for t in o])), 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument(
        "--players", default=",".join(f"{k}{b}" for b in range(10, 20) for k in ("attn", "mlp"))
    )
    parser.add_argument("--long-limit", type=int, default=8)
    parser.add_argument("--long-tokens", type=int, default=96)
    parser.add_argument(
        "--long-players",
        default=",".join(f"{k}{b}" for b in range(20, 25) for k in ("attn", "mlp")),
    )
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/generation.json"))
    args = parser.parse_args()
    if args.quick:
        args.limit, args.long_limit, args.long_tokens = 16, 4, 64
    torch.manual_seed(0)
    model = lf.load("smollm2-135m")
    short = lf.tasks.load("analogies-gen", limit=args.limit)
    long = long_task(args.long_limit, args.long_tokens)
    rows = [
        compare("analogies-gen", model, short, args.players, args.window),
        compare("gsm8k-shaped", model, long, args.long_players, args.window),
    ]
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
