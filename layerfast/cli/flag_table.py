"""The declaration of every flag: option string -> ``add_argument`` keywords
(:func:`layerfast.cli.flags.add` adds them). One entry per option string, whatever the verbs that
take it; values are read by the ``type=`` functions of :mod:`layerfast.cli.values`; choices come
from the library's registries (estimators, utilities)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..activations.backends import BACKENDS
from ..estimators import ESTIMATORS
from ..tasks.scoring import UTILITIES
from . import values as v


class UtilityChoices(Sequence):
    """``--utility`` choices: layerfast's utilities (what --help lists); another metric name
    passes argparse too and is checked against the task before the model loads (an lm_eval:
    task's metrics, e.g. acc_mutual_info; :func:`layerfast.cli.checks.utility`)."""

    def __getitem__(self, i):
        return UTILITIES[i]

    def __len__(self) -> int:
        return len(UTILITIES)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.@-]*", value) is not None


FLAGS: dict[str, dict[str, Any]] = {
    # --- the model ---------------------------------------------------------------------------
    "--model": {
        "default": "smollm2-135m",
        "help": "packaged model name (smollm2-135m, gemma3-270m), local HF model folder or model "
        "hub id (org/name; the HF cache first, HF_HUB_OFFLINE=1 respected) (default: "
        "smollm2-135m)",
    },
    "--revision": {
        "default": None,
        "metavar": "REV",
        "help": "with a model hub id: the branch, tag or commit to read (default: main)",
    },
    "--trust-remote-code": {
        "action": "store_true",
        "help": "run the model folder's own code (auto_map); default: refuse such folders",
    },
    "--dtype": {
        "type": v.dtype,
        "default": None,
        "help": "fp32 | bf16 | fp16 (default: as stored)",
    },
    "--device": {"default": None, "help": "cpu | cuda (default: cpu)"},
    "--out": {"type": Path, "default": Path("results"), "help": "output folder"},
    "--no-progress": {"action": "store_true", "help": "hide progress bars"},
    "--tokenizer": {
        "type": Path,
        "default": None,
        "metavar": "DIR",
        "help": "tokenizer folder, for a model folder that has none (default: the model's own)",
    },
    "--threads": {
        "type": v.auto_or_count,
        "default": "auto",
        "help": "CPU threads for torch: auto (one for a small model, where more only wait on "
        "each other; else every core) or a count",
    },
    "--device-map": {
        "default": None,
        "metavar": "MAP",
        "help": "split a model larger than one device (accelerate): auto, balanced, sequential, "
        "or a JSON file of module name -> device (0, 'cpu', 'disk'); not with --device",
    },
    "--max-memory": {
        "type": v.max_memory,
        "default": None,
        "metavar": "DEV=SIZE,...",
        "help": "with --device-map: the most each device may hold, e.g. 0=70GiB,1=70GiB,cpu=200GiB",
    },
    "--offload-folder": {
        "type": Path,
        "default": None,
        "metavar": "DIR",
        "help": "with --device-map: where modules mapped to 'disk' are kept",
    },
    "--max-length": {
        "type": v.integer(1),
        "default": None,
        "help": "longest request in tokens; longer ones are left-truncated as "
        "lm-evaluation-harness does (default: the model's limit; prune also cuts its documents "
        "to it, default 256); for a text: task the window length in tokens",
    },
    # --- the task ----------------------------------------------------------------------------
    "--task": {
        "default": "capitals",
        "help": "built-in task (capitals, analogies, bigbench:<name>), a JSONL file, "
        "lm_eval:<task or group>, or plain text scored token by token: text:lee, text:pydoc, "
        "text:<file.txt|file.jsonl>",
    },
    "--target-delimiter": {
        "type": v.delimiter,
        "default": None,
        "metavar": "STR",
        "help": 'for a JSONL --task: the string between context and each choice ("" for none; '
        '\\n, \\t, \\r and \\\\ are escapes); default: the file\'s {"delimiter": ...} line, '
        "else a space",
    },
    "--limit": {
        "type": v.integer(1),
        "default": None,
        "help": "use this many items (random, by --seed; for an lm_eval: task and in eval the "
        "first N documents of each task, as the harness's --limit; for a text: task its first "
        "N documents)",
    },
    "--seed": {"type": v.integer(0), "default": 0},
    "--include-path": {
        "type": Path,
        "default": None,
        "metavar": "DIR",
        "help": "for --task lm_eval:<name> and eval: a folder of the harness's task YAMLs, "
        "searched besides its built-in tasks (its --include_path)",
    },
    "--num-fewshot": {
        "type": v.integer(0),
        "default": None,
        "metavar": "K",
        "help": "for --task lm_eval:<name> and eval: few-shot examples per prompt (default: the "
        "task's own; a task that sets 0 keeps 0, as in the harness)",
    },
    # --- the sweep ---------------------------------------------------------------------------
    "--utility": {
        "default": None,
        "choices": UtilityChoices(),
        "metavar": "NAME",
        "help": f"what v(S) measures: {', '.join(UTILITIES)} (default acc_norm); for an "
        "lm_eval: task one of its metrics, e.g. acc, acc_norm, acc_mutual_info (default: "
        "acc_norm if it has it, else acc); for a text: task nll (v = -mean NLL per token in "
        "nats, higher is better; the default) or ppl (v = -perplexity); on any of these, kl "
        "(v = -mean KL from the full model's next-token distribution, nats per token)",
    },
    "--cache": {
        "type": Path,
        "default": None,
        "help": "SQLite file of evaluated coalitions (default: OUT/utilities.sqlite)",
    },
    "--batch-tokens": {
        "type": v.auto_or_count,
        "default": "auto",
        "help": "padded tokens per forward batch: auto (2048 on the CPU; on CUDA from the free "
        "memory and the model's shape, a power of two) or a count; part of the cache key",
    },
    "--memory-budget": {
        "type": v.auto_or_bytes,
        "default": "auto",
        "help": "memory for the prefix executor's kept states per batch: auto (1GiB on the CPU; "
        "on CUDA what the forward leaves of the free memory), bytes, or e.g. 512MiB, 4GiB",
    },
    "--stack-tokens": {
        "type": v.auto_or_whole,
        "default": "auto",
        "help": "stack a small batch's coalitions into sublayer calls of up to this many padded "
        "tokens: auto (1024 on the CPU, 8192 on CUDA, at most --batch-tokens), 0 = never, a count",
    },
    "--workers": {
        "type": v.integer(1),
        "default": 1,
        "metavar": "K",
        "help": "run the sweep on K Ray workers, each holding one model replica (one GPU each on "
        "CUDA, or a share of the CPU cores; --threads then sets each worker's threads); "
        "1 = in this process (default). Needs pip install 'layerfast[ray]'",
    },
    "--ray-address": {
        "type": v.ray_address,
        "default": None,
        "metavar": "ADDR",
        "help": "with --workers: join this Ray cluster (auto, host:6379 or ray://host:10001) "
        "instead of starting a local one",
    },
    "--gpus-per-worker": {
        "type": v.positive,
        "default": None,
        "metavar": "G",
        "help": "with --workers on CUDA: GPUs per model replica (default: the GPUs named by "
        "--device-map or --max-memory, else 1)",
    },
    "--unit": {
        "default": "sublayer",
        "choices": ["sublayer", "block"],
        "help": "what a player is: one sublayer (attn0, mlp0, ...; default) or a whole block "
        "(block0, block1, ...: both its sublayers)",
    },
    "--players": {
        "default": None,
        "metavar": "NAMES",
        "help": "comma-separated players of the game, e.g. attn0,mlp0,attn1 (or block3,block4 "
        "with --unit block); the other sublayers are always kept (default: every one)",
    },
    "--margin": {
        "type": v.non_negative,
        "default": None,
        "help": "utilities up to chance + MARGIN count as chance in the cornerstone tests "
        "(default 0)",
    },
    "--method": {"default": "proximity", "choices": list(ESTIMATORS)},
    "--window": {"type": v.integer(1), "default": None, "help": "proximity window L (default 3)"},
    "--budget": {
        "type": v.integer(1),
        "default": None,
        "help": "max distinct coalitions evaluated",
    },
    "--budget-compute": {
        "type": v.positive,
        "default": None,
        "metavar": "C",
        "help": "cap the compute instead (permutation, kernel): token-sublayer evaluations, a "
        "kept sublayer run on one real token, prefix sharing counted; info['compute'] in "
        "shapley.json reports what was spent",
    },
    "--target-stderr": {
        "type": v.positive,
        "default": None,
        "metavar": "S",
        "help": "stop when settled: grow the budget (x2, re-using coalitions) until every stderr "
        "(total, with --item-bootstrap) is <= S; --budget is then the maximum",
    },
    "--until": {"metavar": "topK", "default": None, "help": "or until the top K are settled"},
    "--confidence": {"type": v.fraction, "default": 0.95, "help": "for --until (default 0.95)"},
    "--budgets": {
        "type": v.budgets,
        "default": None,
        "help": "comma-separated budgets: also write a convergence plot (estimates vs budget)",
    },
    "--option": {
        "type": v.key_value,
        "action": "append",
        "default": [],
        "metavar": "KEY=VALUE",
        "help": "extra estimator option (repeatable), e.g. --option tolerance=0.02",
    },
    "--item-bootstrap": {
        "type": v.item_bootstrap,
        "default": 200,
        "metavar": "B",
        "help": "error bars that include the item sample: resample the items B times (paired "
        "across coalitions, free: from the cached log-likelihoods) and rerun the estimator; "
        "adds stderr_items, stderr_total and rank stability (default 200; 0: coalition sampling "
        "only)",
    },
    "--interactions": {
        "action": "store_true",
        "help": "also the pairwise interaction index (exact SII up to 12 players, else the removal "
        "interaction): interactions.json, .csv, .png and a report.md section",
    },
    "--models": {
        "type": v.names,
        "default": None,
        "metavar": "M1,M2",
        "help": "several models in one report (each as --model takes it): every (model, task) "
        "pair in OUT/<model>/<task>/ with its own cache, and a combined report.md with a grid "
        "of Shapley shares, cornerstones per pair and the rank agreement between tasks",
    },
    "--tasks": {
        "type": v.names,
        "default": None,
        "metavar": "T1,T2",
        "help": "several tasks in one report (each as --task takes it); see --models",
    },
    # --- statistics, pruning -----------------------------------------------------------------
    "--texts": {
        "default": "lee",
        "help": "calibration text: 'lee' (gensim's Lee corpus), 'pydoc' (stdlib), or a .txt file "
        "with one document per line",
    },
    "--stats-dtype": {
        "type": v.stats_dtype,
        "default": "bf16",
        "help": "dtype the statistics pass runs and counts AS in (default bf16, as the AVSS "
        "authors ran: in fp32 almost no entry is below 1e-5); 'model' = the model's --dtype",
    },
    "--n-texts": {"type": v.integer(1), "default": 64, "help": "calibration documents used"},
    "--eps": {"type": v.positive, "default": 1e-5, "help": "|a| < eps counts as sparse"},
    "--relative": {"action": "store_true", "help": "threshold eps x the token's RMS"},
    "--backend": {
        "type": v.registry_name("layerfast.activations.backends", "BACKENDS"),
        "default": "auto",
        "metavar": "NAME",
        "help": "statistics kernels: auto (LAYERFAST_BACKEND, else Triton on CUDA, C++ on the "
        f"CPU, else the PyTorch reference) or one of {', '.join(BACKENDS[1:])}",
    },
    "--by": {
        "default": "avss",
        "choices": ["avss", "bi", "angular", "ablation", "search"],
        "help": "score that ranks the blocks (higher = more important), or 'search': greedy "
        "(or --beam) removal, re-evaluating every remaining candidate on --task each step",
    },
    "--fraction": {
        "type": v.fraction,
        "default": 0.25,
        "help": "fraction of blocks to remove (with --by search: of the --unit units)",
    },
    "--beam": {
        "type": v.integer(2),
        "default": None,
        "metavar": "K",
        "help": "with --by search: beam search keeping the K best sets each step (default: greedy)",
    },
    "--keep-first": {
        "type": v.integer(0),
        "default": 0,
        "help": "with --by search: never remove the first N blocks' units",
    },
    "--keep-last": {
        "type": v.integer(0),
        "default": 0,
        "help": "with --by search: never remove the last N blocks' units",
    },
    "--eval-tasks": {
        "type": v.names,
        "default": None,
        "metavar": "TASKS",
        "help": "with --by search: comma-separated held-out tasks, each scored (its default "
        "utility, same --limit) after every removal of the chosen path",
    },
    "--rule": {"default": "lowest", "choices": ["lowest", "cumulative"]},
    "--save": {"type": Path, "default": None, "help": "save the pruned model here"},
    # --- eavss -------------------------------------------------------------------------------
    "--n-boot": {
        "type": v.integer(1),
        "default": 1000,
        "help": "bootstrap resamples for the intervals",
    },
    "--scope": {
        "default": "answer",
        "choices": ["answer", "sequence"],
        "help": "positions whose EAVSS ranks the blocks for fine-tuning",
    },
    "--finetune": {
        "action": "store_true",
        "help": "contrastive fine-tuning of the top-k EAVSS blocks against controls (bottom-k, "
        "random-k, all blocks) on a train/val/test split",
    },
    "--k": {"type": v.integer(1), "default": 3, "help": "blocks fine-tuned per condition"},
    "--steps": {"type": v.integer(1), "default": 100, "help": "optimizer steps per condition"},
    "--batch-size": {"type": v.integer(1), "default": 8, "help": "items per step"},
    "--lr": {"type": v.positive, "default": 5e-5},
    "--weight": {"type": v.non_negative, "default": 1.0, "help": "weight of the InfoNCE term"},
    "--temperature": {"type": v.positive, "default": 0.1, "help": "InfoNCE temperature"},
    "--n-random": {"type": v.integer(0), "default": 3, "help": "random-k conditions (seeds)"},
    "--split": {"type": v.split, "default": "0.5,0.25,0.25", "help": "train,val,test fractions"},
    # --- bench -------------------------------------------------------------------------------
    "--random": {
        "default": None,
        "metavar": "SHAPE",
        "help": "instead of --model, random weights of a Llama shape built from a config "
        "(llama-3-8b, llama-3.2-1b, tiny; bf16 unless --dtype); no tokenizer, so the sweep "
        "scores random token ids of a 4-choice shape unless --tokenizer is given",
    },
    "--quick": {
        "action": "store_true",
        "help": "smaller samples: about 2 minutes on a 2-core CPU with the packaged model",
    },
    "--only": {
        "type": v.bench_steps,
        "default": ",".join(v.BENCH_STEPS),
        "metavar": "STEPS",
        "help": f"run only these steps, a comma-separated subset of {','.join(v.BENCH_STEPS)}",
    },
    "--time-budget": {
        "type": v.positive,
        "default": None,
        "metavar": "S",
        "help": "seconds for all steps together (default 110 with --quick, else 480); each step "
        "gets its share",
    },
    "--project-items": {
        "type": v.integer(1),
        "default": None,
        "help": "items the full sweeps are projected for (default: the whole task; 1000 for "
        "random token ids)",
    },
    "--kernel-bytes": {
        "type": v.kernel_bytes,
        "default": "1GiB",
        "help": "bytes the statistics kernels read per call (default 1GiB: out of every cache)",
    },
    # --- eval --------------------------------------------------------------------------------
    "--remove": {
        "default": "",
        "metavar": "PLAYERS",
        "help": "sublayers to skip, e.g. attn3,mlp5 (default: none, the full model)",
    },
    "harness_args": {
        "nargs": "*",
        "metavar": "-- HARNESS_OPTION",
        "help": "after --: options of the harness's run command, passed on as they are",
    },
}
