"""``eavss``: hallucination-prone blocks, optionally with the controlled fine-tuning experiment.

On a generative task the items are split by the full model's generated answers
(:mod:`layerfast.hallucination.generative`); the split (counts, the first wrong generations) goes
to ``eavss.json`` and every item's generation to ``eavss_generations.csv``, also when one group
is empty and no score can be computed (then the verb stops with exit code 2 and says why)."""

from __future__ import annotations

import argparse
import time

from ..errors import UsageError
from ..report import files as outputs
from ..report import tables
from .common import done, save_model, setup
from .flags import RUN, SWEEP, add, verb

GENERATIONS = "eavss_generations.csv"  # generative tasks: each item's generated answer


def register(sub) -> None:
    """The sub-parser of ``eavss``."""
    p = verb(
        sub,
        "eavss",
        cmd_eavss,
        help="hallucination-prone blocks: statistics of wrong vs right answers, optionally "
        "contrastive fine-tuning with controls",
    )
    add(p, *SWEEP, *RUN, "--stats-dtype", "--eps", "--relative", "--backend", "--n-boot")
    add(p, "--scope", "--finetune", "--k", "--steps", "--batch-size", "--lr", "--weight")
    add(p, "--temperature", "--n-random", "--split")
    add(p, "--save", help="with --finetune: save the top-k EAVSS fine-tuned model here")


def cmd_eavss(args: argparse.Namespace) -> int:
    from ..hallucination import generative as gen
    from ..hallucination.eavss import eavss

    game, meta = setup(args)
    stats_dtype = args.stats_dtype
    t0 = time.time()
    written = []
    try:
        if args.finetune:
            res, written = _finetune(args, game, meta, stats_dtype, t0)
        else:
            res = eavss(
                game.model,
                game.task,
                utility=args.utility,
                stats_dtype=stats_dtype,
                eps=args.eps,
                relative=args.relative,
                backend=args.backend,
                n_boot=args.n_boot,
                seed=args.seed,
                progress=True,  # --no-progress hides bars, keeps a heartbeat (cli.main)
                game=game,
            )
    except gen.OneGroupEmpty as e:  # record the split, then say why there are no scores
        payload = {**meta, "n_correct": e.record["n_right"], "n_wrong": e.record["n_wrong"]}
        payload.update(generative=e.record, scopes=None, error=str(e), wall_s=time.time() - t0)
        files = [
            outputs.write_json(args.out / "eavss.json", payload),
            outputs.write_csv(args.out / GENERATIONS, e.rows),
        ]
        print(gen.summary(e.record))
        raise UsageError(f"{e}; wrote the split to {', '.join(map(str, files))}") from None
    written += outputs.save_eavss(
        args.out, res, meta, args.scope, args.k, game.model.name, wall_s=time.time() - t0
    )
    if res.generations is not None:
        written.append(outputs.write_csv(args.out / GENERATIONS, res.generations))
        print(gen.summary(res.meta["generative"]))
    print(tables.eavss_summary(res, args.scope, args.k))
    done(written, time.time() - t0)
    return 0


def _finetune(args: argparse.Namespace, game, meta: dict, stats_dtype: str | None, t0: float):
    """``eavss --finetune``: top-k EAVSS blocks vs controls -> (EAVSSResult, files written)."""
    from ..hallucination.contrastive import FinetuneConfig
    from ..hallucination.experiment import compare

    model = game.model
    config = FinetuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight=args.weight,
        temperature=args.temperature,
        seed=args.seed,
    )
    out = compare(
        model,
        game.task,
        k=args.k,
        config=config,
        n_random=args.n_random,
        scope=args.scope,
        utility=args.utility,
        stats_dtype=stats_dtype,
        fractions=args.split,
        seed=args.seed,
        progress=True,  # --no-progress hides bars, keeps a heartbeat (cli.main)
        keep=("eavss-top",) if args.save else (),
    )
    table = tables.finetune_table(out["rows"], args.utility)
    written = outputs.save_finetune(
        args.out,
        {
            **meta,
            "k": args.k,
            "scope": args.scope,
            "config": vars(config),
            "splits": out["splits"],
            "rows": out["rows"],
            "wall_s": time.time() - t0,
        },
        table,
    )
    print(table)
    if args.save:
        written.append(save_model(out["models"]["eavss-top"].hf_model, model.tokenizer, args.save))
    return out["eavss"], written
