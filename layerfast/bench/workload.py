"""What a benchmark runs on: the model and the requests.

Models: a packaged name or a local folder (:func:`layerfast.load`), or ``random:<shape>``, a model
with random weights built from a config straight on the device in the wanted dtype (no download,
no tokenizer), for the shapes in :data:`RANDOM_SHAPES`.

Requests: a task's (:func:`layerfast.tasks.load` + harness tokenisation), or ``synthetic``: random
token ids of a typical 4-choice shape (context 48-111 tokens, each continuation 8-31 tokens,
uniform), for models without a tokenizer; timings depend only on the lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..tasks.requests import Request

# Llama-architecture shapes (transformers LlamaConfig fields); vocab as the real models'.
RANDOM_SHAPES: dict[str, dict] = {
    "llama-3-8b": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
    "llama-3.2-1b": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
    "tiny": dict(  # the GPU suite's dry run on a CPU
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
}
RANDOM_PREFIX = "random:"
SYNTHETIC = "synthetic"
CONTEXT_TOKENS = (48, 112)  # [low, high) of a synthetic item's context length
CONTINUATION_TOKENS = (8, 32)  # [low, high) of each synthetic continuation
N_CHOICES = 4


def load_model(
    spec: str,
    device: str | None,
    dtype: str | None,
    tokenizer: Any = None,
    trust_remote_code: bool = False,
):
    """A :class:`~layerfast.models.SublayerModel` for ``spec`` (see the module docstring), with
    ``tokenizer`` attached when given."""
    from ..models import load

    if not spec.startswith(RANDOM_PREFIX):
        return load(
            spec,
            dtype=dtype,
            device=device,
            tokenizer=tokenizer,
            trust_remote_code=trust_remote_code,
        )
    shape = spec[len(RANDOM_PREFIX) :]
    if shape not in RANDOM_SHAPES:
        raise UsageError(
            f"--model {spec}: unknown random shape {shape!r}; choose from "
            f"{[RANDOM_PREFIX + s for s in RANDOM_SHAPES]}"
        )
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..models import SublayerModel
    from ..models.loading import check_device, parse_dtype

    target = check_device(device) or torch.device("cpu")
    torch_dtype = parse_dtype(dtype) or torch.bfloat16
    config = LlamaConfig(**RANDOM_SHAPES[shape], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with target:  # weights allocated and initialised on the device, in the dtype
            hf_model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    return SublayerModel(hf_model, tokenizer, name=spec)


@dataclass
class Workload:
    """Requests for the sweep sample and what the full sweep's projection counts."""

    requests: list[Request]
    n_items: int  # items behind ``requests``
    n_items_full: int  # items of the full task the projection is for
    task: str  # the task's name, or "synthetic"
    task_object: object = None  # the lf.Task (None for synthetic requests)


def load_workload(
    model,
    task: str | None,
    limit: int,
    seed: int,
    project_items: int | None,
    delimiter: str | None = None,
):
    """Requests of ``limit`` items of ``task`` (``synthetic`` when None and the model has no
    tokenizer); the projection is for ``project_items`` items (default: the whole task, 1,000
    for synthetic requests). ``delimiter``: a JSONL task's (``lf.tasks.load``)."""
    if task is None:
        task = SYNTHETIC if model.tokenizer is None else "capitals"
    if task == SYNTHETIC:
        if delimiter is not None:
            raise UsageError(f"--task {SYNTHETIC} is random token ids: it takes no delimiter")
        vocab = int(model.config.vocab_size)
        requests = synthetic_requests(limit, vocab, seed)
        return Workload(requests, limit, project_items or 1000, SYNTHETIC)
    if model.tokenizer is None:
        raise UsageError(
            f"--task {task} needs a tokenizer and model {model.name} has none: use --task "
            f"{SYNTHETIC} (random token ids of a typical 4-choice shape)"
        )
    if ":" in task and task.split(":", 1)[0] in ("lm_eval", "text"):
        raise UsageError(
            f"--task {task}: bench samples multiple-choice items from a built-in or JSONL task; "
            "lm_eval: and text: tasks are not sampled yet (use --task capitals or a JSONL file)"
        )
    from .. import tasks

    full = tasks.load(task, delimiter=delimiter)
    sample = tasks.load(full, limit=min(limit, len(full)), seed=seed)
    requests = sample.requests(model.tokenizer)
    return Workload(requests, len(sample), project_items or len(full), sample.name, sample)


def synthetic_requests(n_items: int, vocab: int, seed: int = 0) -> list[Request]:
    """``n_items`` x 4 requests of random token ids (ids 3 .. vocab-1): per item one context of
    48-111 tokens shared by its 4 choices, each continuation 8-31 tokens."""
    if vocab < 8:
        raise UsageError(f"a vocabulary of {vocab} tokens is too small for synthetic requests")
    rng = np.random.default_rng(seed)
    out = []
    for item in range(n_items):
        context = rng.integers(3, vocab, rng.integers(*CONTEXT_TOKENS)).tolist()
        for choice in range(N_CHOICES):
            continuation = rng.integers(3, vocab, rng.integers(*CONTINUATION_TOKENS)).tolist()
            whole = context + continuation
            out.append(Request(item, choice, tuple(whole[:-1]), tuple(continuation)))
    return out
