"""``layerfast bench``: the steps in order, each within its share of the time budget; one table
printed as it goes, and the same in files in the output folder, rewritten after every step (a
killed run keeps the steps it finished):

* ``bench.txt``: the printed table;
* ``bench.json``: the machine, the options and each step's summary;
* ``bench.csv``: the rows (:mod:`.rows`), as ``benchmarks/results.csv`` records them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import threads
from ..errors import UsageError
from ..paths import atomic_write, write_text
from ..progress import progress
from ..report.files import to_jsonable
from . import kernels, overhead, rows, stacking, sweep, workload
from .bandwidth import DEFAULT_BYTES
from .machine import describe

STEPS = ("kernels", "overhead", "sweep", "stacking")
SHARE = {"kernels": 0.15, "overhead": 0.2, "sweep": 0.55, "stacking": 0.1}  # of the time budget


@dataclass
class Profile:
    """How much each step measures: ``quick`` (about 2 minutes on a 2-core CPU with the
    packaged model) or ``full``."""

    limit: int  # task items in the sweep sample
    k_max: int  # most coalitions per sweep sample
    kernel_repeat: int
    overhead_batch: int
    overhead_seq: int  # tokens per sample of the overhead batch
    overhead_repeat: int
    budget_s: float  # default time budget of all steps together


PROFILES = {
    "quick": Profile(8, 8, 5, 4, 256, 3, 110.0),
    "full": Profile(32, 16, 10, 8, 1024, 5, 480.0),
}


@dataclass
class Options:
    model: str = "smollm2-135m"
    task: str | None = None  # None: capitals, or synthetic for a model without a tokenizer
    limit: int | None = None
    seed: int = 0
    quick: bool = False
    out: Path = Path("bench")
    device: str | None = None
    dtype: str | None = None
    steps: tuple[str, ...] = STEPS
    time_budget_s: float | None = None
    project_items: int | None = None
    batch_tokens: int | str = "auto"
    memory_budget: int | str = "auto"
    kernel_bytes: int = DEFAULT_BYTES
    progress: bool = True
    command: str = ""
    threads: int | None = None  # torch CPU threads; None: layerfast.threads.choose
    tokenizer: Any = None  # a tokenizer object to attach (e.g. to a random: model)
    trust_remote_code: bool = False
    delimiter: str | None = None  # a JSONL task's target delimiter (None: the file's own)


def run(opts: Options) -> dict:
    """Run the steps of ``opts``; returns what ``bench.json`` holds."""
    unknown = [s for s in opts.steps if s not in STEPS]
    if unknown or not opts.steps:
        raise UsageError(f"--only {','.join(opts.steps)}: choose among {list(STEPS)}")
    profile = PROFILES["quick" if opts.quick else "full"]
    budget = opts.time_budget_s or profile.budget_s
    opts.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = workload.load_model(
        opts.model, opts.device, opts.dtype, opts.tokenizer, opts.trust_remote_code
    )
    threads.apply(threads.choose(model, 2048) if opts.threads is None else opts.threads)
    if "kernels" in opts.steps:  # before any step runs: a size that cannot fit fails now
        kernels.check_kernel_bytes(
            model.config.hidden_size, model.dtype, opts.kernel_bytes, model.device
        )
    machine = describe(model.device, model.dtype)
    record: dict = {
        "command": opts.command,
        "machine": machine,
        "model": {
            "name": model.name,
            "n_blocks": model.n_blocks,
            "n_players": model.n_players,
            "hidden_size": model.config.hidden_size,
            "vocab_size": model.config.vocab_size,
            "parameters": sum(p.numel() for p in model.hf_model.parameters()),
        },
        "options": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in asdict(opts).items()
            if k != "tokenizer"
        },
        "profile": asdict(profile),
        "time_budget_s": budget,
        "steps": {},
    }
    lines = [
        f"layerfast bench | {machine['device_name']} | {machine['cores']} cores | torch "
        f"{machine['torch']} | transformers {machine['transformers']} | triton "
        f"{machine['triton']} | {machine['dtype']} | {machine['date']} | {machine['commit']}",
        f"model {model.name}: {model.n_blocks} blocks, hidden {model.config.hidden_size}, "
        f"{_count(record['model']['parameters'])} parameters, loaded in "
        f"{time.time() - t0:.1f} s",
    ]
    all_rows: list[dict] = []
    _emit(lines, opts, record, all_rows)
    for step in opts.steps:
        share = budget * SHARE[step] / sum(SHARE[s] for s in opts.steps)
        started = time.time()
        summary, step_rows, step_lines = _run_step(step, model, opts, profile, share)
        summary["wall_s"] = time.time() - started
        summary["budget_s"] = share
        record["steps"][step] = summary
        all_rows += step_rows
        over = summary["wall_s"] > 1.5 * share
        step_lines.append(
            f"  ({step}: {summary['wall_s']:.0f} s of a {share:.0f} s budget"
            + (", OVER BUDGET)" if over else ")")
        )
        lines += [""] + step_lines
        _emit([""] + step_lines, opts, record, all_rows, lines)
    return record


def _run_step(step: str, model, opts: Options, profile: Profile, budget_s: float):
    from ..evaluation.sizing import resolve_sizes

    if step == "kernels":
        with progress(total=8, desc="kernels", unit="call", enabled=opts.progress) as bar:
            return kernels.measure(
                model.config.hidden_size,
                model.dtype,
                model.device,
                opts.kernel_bytes,
                profile.kernel_repeat,
                budget_s,
                bar,
            )
    if step == "overhead":
        seq = profile.overhead_seq
        with progress(total=4, desc="overhead", unit="way", enabled=opts.progress) as bar:
            return overhead.measure(
                model, profile.overhead_batch, seq, profile.overhead_repeat, budget_s, bar
            )
    batch_tokens, memory_budget, how = resolve_sizes(model, opts.batch_tokens, opts.memory_budget)
    requests = workload.load_workload(
        model, opts.task, opts.limit or profile.limit, opts.seed, opts.project_items, opts.delimiter
    )
    if step == "stacking":
        with progress(total=4, desc="stacking", unit="run", enabled=opts.progress) as bar:
            summary, out_rows, lines = stacking.measure(
                model, requests.requests, batch_tokens, memory_budget, profile.k_max, bar
            )
        summary["sizing"] = how
        return summary, out_rows, lines
    total = len(sweep.SWEEPS) * len(sweep.PATHS)
    with progress(total=total, desc="sweep sample", unit="path", enabled=opts.progress) as bar:
        summary, out_rows, lines = sweep.measure(
            model, requests, batch_tokens, memory_budget, profile.k_max, budget_s, bar
        )
    summary["sizing"] = how
    return summary, out_rows, lines


def _emit(new_lines, opts: Options, record: dict, all_rows: list[dict], lines=None) -> None:
    """Print ``new_lines`` and rewrite the three files with everything so far."""
    for line in new_lines:
        print(line, flush=True)
    text = "\n".join(lines if lines is not None else new_lines) + "\n"
    write_text(opts.out / "bench.txt", text)
    write_text(opts.out / "bench.json", json.dumps(to_jsonable(record), indent=1) + "\n")
    csv_path = opts.out / "bench.csv"
    if all_rows:
        with atomic_write(csv_path) as tmp:
            rows.append(all_rows, tmp)
    else:
        csv_path.unlink(missing_ok=True)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"
