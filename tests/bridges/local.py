"""Offline lm-evaluation-harness runs for the harness-model tests: a tiny model folder, local task
YAMLs over JSONL files, and HFLM with hooks that zero the removed sublayers' outputs (the seed
paper's way of removing a sublayer, :mod:`layerfast.bench.seed_way`).

As in ``tests/evaluation/test_lm_eval_parity.py``: the hub is switched off (HF_HUB_OFFLINE /
HF_DATASETS_OFFLINE, and the constants of modules imported already), the data are read by the
``json`` builder of ``datasets`` into a cache under the test's temporary folder, and the
``TaskManager`` sees only the local YAMLs (``include_defaults=False``: indexing the harness's
thousands of built-in tasks would cost seconds per run).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.harness import samples_of, tiny_llama_folder

# A 4-choice task: contexts with trailing spaces and newlines, non-ASCII text, choices of very
# different lengths (so acc and acc_norm disagree)
MC_ITEMS = [
    ("Q: What is the capital of France?\nA:", ["Paris", "Lyon", "Marseille", "Nice"], 0),
    ("The cat sat on the ", ["mat", "dog", "log and the lazy fox", "red planet"], 0),
    ("The quick brown fox jumps over the", ["lazy dog.", "mat", "red planet Mars", "log"], 0),
    ("Москва is", ["big", "the capital of Russia", "x", "Lima"], 1),
    ("Which planet is known as the red planet?", ["Mars", "Venus", "Jupiter", "Saturn"], 0),
    ("Athens is to Greece as Baghdad is to", ["Iraq", "Iran", "Lima", "the dog"], 0),
    ("Lima Quito Bogota", ["Santiago", "Caracas", "La Paz", "Sucre"], 3),
    ("the dog sat on the", ["log", "the mat and the cat", "fox", "planet"], 1),
    ("ünïcödé:", ["façade", "naïve", "—", "élan café"], 0),
    ("The lazy dog", ["sleeps", "runs", "barks at the mat", "jumps over the fox"], 2),
    ("Montevideo Asuncion", ["La Paz", "Sucre", "Lima", "Quito"], 0),
    ("Paris is in", ["France", "the country of France", "Mars", "a cat"], 0),
]
MC_YAML = """\
output_type: multiple_choice
doc_to_text: "{{context}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def go_offline(mp: pytest.MonkeyPatch) -> None:
    """No hub: environment variables for modules not imported yet, constants for the others."""
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


def save_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A seeded 3-block random Llama with the tiny tokenizer, saved as a model folder."""
    return tiny_llama_folder(folder, max_positions=256, seed=seed, init=0.1)


def write_task(task_dir: Path, name: str, rows: list[dict], body: str) -> Path:
    """``task_dir/name.yaml`` over ``task_dir/name.jsonl`` (``rows``); ``body`` is the YAML after
    the task name and data set lines (output_type, doc_to_*, metric_list, ...)."""
    task_dir.mkdir(parents=True, exist_ok=True)
    data = task_dir / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    head = textwrap.dedent(f"""\
        task: {name}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {json.dumps(str(data))}
          cache_dir: {json.dumps(str(task_dir / "hf_datasets"))}
        test_split: test
        """)
    path = task_dir / f"{name}.yaml"
    path.write_text(head + textwrap.dedent(body), encoding="utf-8")
    return path


def write_mc_task(task_dir: Path, name: str) -> Path:
    """The 4-choice task :data:`MC_ITEMS` as ``task_dir/name.yaml``."""
    rows = [{"context": c, "choices": ch, "gold": g} for c, ch, g in MC_ITEMS]
    return write_task(task_dir, name, rows, MC_YAML)


def evaluate(model: Any, task_dir: Path, tasks: list[str], **kwargs: Any) -> dict:
    """``lm_eval.simple_evaluate`` on the local tasks, zero-shot unless ``num_fewshot`` is given,
    with samples logged and no bootstrap."""
    import lm_eval
    import lm_eval.tasks

    import layerfast.harness

    layerfast.harness.register()  # "layerfast" as a model name (idempotent)
    kwargs.setdefault("num_fewshot", 0)
    return lm_eval.simple_evaluate(
        model=model,
        tasks=tasks,
        task_manager=lm_eval.tasks.TaskManager(include_path=str(task_dir), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        **kwargs,
    )


samples = samples_of  # the logged samples of a task, in document order


class ZeroingHooks:
    """Forward hooks on every attention and MLP branch of an HF model: a player named in
    ``removed`` has its branch output multiplied by zero (computed, then dropped)."""

    def __init__(self, hf_model: Any, tokenizer: Any = None):
        import layerfast as lf

        sub = lf.load(hf_model, tokenizer=tokenizer)  # shares the weights; for the adapter only
        self.players = list(sub.players)
        self.removed: set[str] = set()
        self._handles = []
        for block, layer in enumerate(sub.blocks):
            modules = sub.adapter.branch_modules(layer)  # (attention, MLP)
            for player, module in zip(sub.players_of(block), modules):
                self._handles.append(module.register_forward_hook(self._hook(sub.players[player])))

    def _hook(self, name: str):
        def hook(module, args, output):
            if name not in self.removed:
                return output
            if isinstance(output, tuple):
                return (output[0] * 0, *output[1:])
            return output * 0

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
