"""Offline lm-evaluation-harness runs for tests: a tiny model folder, local task YAMLs over JSONL
files, the hub switched off, and hooks that zero removed sublayers in the harness's model.

Nothing here downloads: the model is random (seeded) with the tiny tokenizer, data sets are read
by the ``json`` builder of ``datasets`` into a cache in a temporary folder, and a task YAML may
``include:`` a built-in harness YAML by its absolute path (:func:`builtin_yaml`) and point it at
local files (:func:`local_data`), the way the README tells users to.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tests.helpers.tiny_tokenizer import tiny_tokenizer


@contextlib.contextmanager
def offline(mp) -> Iterator[None]:
    """Hub and datasets offline (``mp``: a pytest MonkeyPatch). The env vars cover modules not
    imported yet; the constants cover those that another test imported already."""
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    yield


def tiny_llama_folder(
    folder: Path, max_positions: int = 2048, seed: int = 0, init: float = 0.1
) -> Path:
    """A random 3-block Llama (hidden 64, weights ~ N(0, ``init``)) with the tiny tokenizer,
    saved to ``folder`` (fp32)."""
    import transformers as tf

    tok = tiny_tokenizer()
    config = tf.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=init,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = tf.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def builtin_yaml(relative: str) -> str:
    """The absolute path of a built-in harness task YAML, e.g. ``"arc/arc_easy.yaml"``."""
    import lm_eval.tasks

    path = Path(lm_eval.tasks.__file__).parent / relative
    assert path.is_file(), path
    return str(path)


def local_data(data_files: dict[str, Path], cache_dir: Path) -> str:
    """YAML lines that point a task at local JSONL files (one per split) read by the ``json``
    builder into ``cache_dir``."""
    files = "".join(f"    {split}: {json.dumps(str(p))}\n" for split, p in data_files.items())
    return (
        "dataset_path: json\n"
        "dataset_name: null\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"{files}"
        f"  cache_dir: {json.dumps(str(cache_dir))}\n"
    )


@contextlib.contextmanager
def zeroed(model, mask) -> Iterator[None]:
    """Forward hooks on ``model``'s HF modules that multiply the output of every removed player
    (``mask`` False) by zero, the seed paper's and lm-eval users' way (see
    :mod:`layerfast.bench.seed_way`); removed again on exit."""
    removed = set(np.flatnonzero(~np.asarray(mask, dtype=bool)).tolist())

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] * 0, *output[1:])
        return output * 0

    handles = []
    try:
        for block, layer in enumerate(model.blocks):
            for player, module in zip(model.players_of(block), model.adapter.branch_modules(layer)):
                if player in removed:
                    handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def harness_run(lm, tasks: list[str], manager, **kwargs) -> dict:
    """``lm_eval.simple_evaluate`` on the HFLM ``lm``, with per-sample logs and no bootstrap;
    the harness's default few-shot seed, no other seeding."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=None,
        numpy_random_seed=None,
        torch_random_seed=None,
        **kwargs,
    )


def samples_of(results: dict, task: str) -> list[dict]:
    """The harness's per-document samples of ``task``, in document order."""
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(len(samples)))
    return samples
