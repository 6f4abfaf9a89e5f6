"""How big a forward batch is (``batch_tokens``) and how many bytes of residual states the prefix
executor may keep per batch (``memory_budget``), chosen from the device's free memory.

On the CPU "auto" keeps the fixed values the CPU results and caches were made with
(:data:`CPU_BATCH_TOKENS`, :data:`CPU_MEMORY_BUDGET`). On CUDA it reads the free memory of the
model's device (the smallest among its CUDA devices when ``hf_device_map`` spreads it), gives
the forward :data:`FORWARD_SHARE` of it and the kept states the rest less :data:`MARGIN`. The
forward's share is divided by an estimate of its peak bytes per padded token
(:func:`bytes_per_token`) times :data:`SAFETY`, rounded down to a power of two and clamped to
[:data:`MIN_BATCH_TOKENS`, :data:`MAX_BATCH_TOKENS`].

``batch_tokens`` is part of the Game's cache key, so an automatic value that changed between a
killed run and its resume would recompute everything; the power-of-two rounding keeps it the
same unless the free memory crosses a factor-2 boundary (and the Game warns when a cache holds
unfinished work for another ``batch_tokens``). The memory budget is not in the key: a state
recomputed is the same state.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from ..errors import UsageError
from ..models.adapter import attention_implementation
from ..models.placement import cuda_devices
from ..tasks.requests import Request
from .logprobs import DEFAULT_VOCAB_CHUNK

CPU_BATCH_TOKENS = 2048  # padded tokens per batch on the CPU (the values CPU caches hold)
CPU_MEMORY_BUDGET = 1 << 30  # bytes of kept states per batch on the CPU (1 GiB)

# Below 256 padded tokens an H100-class GPU runs launch-bound, and a batch shorter than one
# long request is padded up to that request anyway. Above 65536 a batch saturates the GPU's
# matrix units already; larger ones only make each batch, the unit of work lost to a kill,
# bigger, and leave less memory for the prefix executor's states.
MIN_BATCH_TOKENS = 256
MAX_BATCH_TOKENS = 65536
FORWARD_SHARE = 0.5  # fraction of the free memory given to one forward; the rest keeps states
# The estimate counts the named tensors only: allocator rounding and fragmentation, cuBLAS and
# attention workspaces, the norms' and activations' own temporaries and a kernel that falls back
# to a slower path are covered by doubling it.
SAFETY = 2.0
MARGIN = 1 << 30  # bytes never handed out (CUDA context growth, other processes, fluctuation)
DEFAULT_SEQ_LEN = 2048  # the longest row, in tokens, assumed when the caller does not say
MIB = 1 << 20
GIB = 1 << 30
# Padded tokens per sublayer call that small batches are stacked up to (evaluation/stacking.py).
# On this project's 2-core CPU a SmolLM2 sublayer costs 113, 47, 34 and 30 us per token at 16,
# 64, 153 and 226 tokens, flat beyond; on a GPU a call below a few thousand tokens is
# launch-bound. Never more than the batch_tokens a forward was sized for (memory).
CPU_STACK_TOKENS = 1024
CUDA_STACK_TOKENS = 8192

AUTO = "auto"


def bytes_per_token(config: Any, dtype: torch.dtype, seq_len: int = DEFAULT_SEQ_LEN) -> int:
    """Estimated peak bytes of one forward per padded token, before :data:`SAFETY`.

    Persistent over the forward: the residual state, the embeddings, rotary cos/sin, ids, and one
    [T] mask row per attention type (packed masks are in the model's dtype). On top of it the
    largest transient of one step: the attention branch (normed input, q, k and v, rotary copies,
    the heads' output, o_proj's output; with ``eager`` attention also the [H, T] scores in the
    dtype, masked, in fp32 for the softmax and cast back) or the MLP branch (four
    ``intermediate_size`` tensors: gate, up, activation, product; MoE: the routed experts' and a
    shared expert's widths) or the log-prob step (every position scored: normed hidden state, one
    vocabulary chunk of logits in the dtype and three fp32 copies, see
    :func:`~layerfast.evaluation.logprobs.token_logprobs`).

    config: a ``transformers`` config (its text config is used). seq_len: the longest row T.
    """
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    s = torch.empty(0, dtype=dtype).element_size()
    d = int(c.hidden_size)
    heads = int(c.num_attention_heads)
    kv_heads = int(getattr(c, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(c, "head_dim", None) or d // heads)
    inter = int(getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * d)
    top_k = int(getattr(c, "num_experts_per_tok", None) or 0)
    if top_k:
        expert = int(getattr(c, "moe_intermediate_size", None) or inter)
        shared = int(getattr(c, "shared_expert_intermediate_size", None) or 0)
        inter = max(inter, top_k * expert + shared)
    chunk = min(int(c.vocab_size), DEFAULT_VOCAB_CHUNK)
    seq_len = max(1, int(seq_len))
    n_masks = len(set(getattr(c, "layer_types", None) or ["full_attention"]))

    persistent = (3 * d + 2 * head_dim) * s + 16 + n_masks * seq_len * s
    attention = (3 * d + 6 * heads * head_dim + 4 * kv_heads * head_dim) * s
    if attention_implementation(c) == "eager":
        attention += heads * seq_len * (3 * s + 4)
    mlp = (3 * d + 4 * inter) * s
    head = 2 * d * s + chunk * (s + 3 * 4)
    return persistent + max(attention, mlp, head)


def batch_tokens_for(model: Any, free_bytes: int | None, seq_len: int = DEFAULT_SEQ_LEN) -> int:
    """Padded tokens per forward batch: :data:`CPU_BATCH_TOKENS` when ``free_bytes`` is None
    (the CPU), else ``FORWARD_SHARE * free_bytes / (SAFETY * bytes_per_token)`` rounded down to a
    power of two and clamped to [MIN_BATCH_TOKENS, MAX_BATCH_TOKENS].

    model: anything with ``.config`` and ``.dtype`` (a SublayerModel). free_bytes: free device
    memory in bytes (:func:`free_memory`). seq_len: the longest row in tokens.
    """
    if free_bytes is None:
        return CPU_BATCH_TOKENS
    per_token = SAFETY * bytes_per_token(model.config, model.dtype, seq_len)
    tokens = int(FORWARD_SHARE * max(0, int(free_bytes)) // per_token)
    if tokens < MIN_BATCH_TOKENS:
        return MIN_BATCH_TOKENS
    return min(MAX_BATCH_TOKENS, 1 << (tokens.bit_length() - 1))


def memory_budget_for(
    model: Any,
    free_bytes: int | None,
    batch_tokens: int | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
) -> int:
    """Bytes of residual states the prefix executor may keep per batch: :data:`CPU_MEMORY_BUDGET`
    when ``free_bytes`` is None (the CPU), else what the forward leaves, less :data:`MARGIN`, in
    whole MiB (0 or more; beyond it states are recomputed, never an error).

    The forward is given :data:`FORWARD_SHARE` of ``free_bytes``, or its estimate at
    ``batch_tokens`` (``SAFETY * bytes_per_token * batch_tokens``) when that is larger (a
    ``batch_tokens`` given by hand).
    """
    if free_bytes is None:
        return CPU_MEMORY_BUDGET
    free = max(0, int(free_bytes))
    forward = FORWARD_SHARE * free
    if batch_tokens is not None:
        per_token = SAFETY * bytes_per_token(model.config, model.dtype, seq_len)
        forward = max(forward, per_token * max(int(batch_tokens), seq_len))
    budget = int(free - forward) - MARGIN
    return max(0, budget // MIB * MIB)


def stack_tokens_for(model: Any, stack_tokens: int | str | None, batch_tokens: int) -> int:
    """Padded tokens per stacked sublayer call (0 = no stacking): ``stack_tokens`` as given
    (a whole number >= 0), or for None / "auto" :data:`CUDA_STACK_TOKENS` on a CUDA model and
    :data:`CPU_STACK_TOKENS` otherwise, at most ``batch_tokens``."""
    given = check_size("stack_tokens", stack_tokens, 0)
    if given is not None:
        return given
    on_cuda = any(True for _ in cuda_devices(model))
    return min(CUDA_STACK_TOKENS if on_cuda else CPU_STACK_TOKENS, int(batch_tokens))


def free_memory(model: Any) -> tuple[int, str] | None:
    """(free bytes, device name) of the model's CUDA device with the least free memory, or None
    on the CPU. Free counts what the driver reports plus what torch's caching allocator holds
    reserved but unused (memory this process can reuse)."""
    best = None
    for device in cuda_devices(model):
        free, _total = torch.cuda.mem_get_info(device)
        if torch.cuda.is_initialized():
            free += max(0, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        if best is None or free < best[0]:
            best = (int(free), str(device))
    return best


def longest_row(requests: list[Request], pack: bool) -> int:
    """The longest row the batches will hold, in tokens: the longest trie row when ``pack``,
    short rows filled side by side to at most ``FILL_TOKENS``
    (:func:`~layerfast.evaluation.batching.batch_rows`), else the longest request."""
    if not pack:
        return max((len(r.input_ids) for r in requests), default=1)
    from .batching import FILL_TOKENS, batch_rows

    rows = batch_rows(requests, True, FILL_TOKENS)
    return max((len(row.input_ids) for row in rows), default=1)


def check_size(name: str, value: Any, least: int) -> int | None:
    """``value`` as an int >= ``least``, or None for automatic (``None`` or "auto", any case);
    UsageError naming ``name`` otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a whole number >= {least} or 'auto', got {value!r}")
    if value != int(value) or value < least:
        raise UsageError(f"{name} must be a whole number >= {least} or 'auto', got {value!r}")
    return int(value)


def resolve_sizes(
    model: Any,
    batch_tokens: int | str | None = AUTO,
    memory_budget: int | str | None = AUTO,
    seq_len: int = DEFAULT_SEQ_LEN,
) -> tuple[int, int, str]:
    """(batch_tokens, memory_budget in bytes, how they were chosen).

    Each of ``batch_tokens`` (>= 1) and ``memory_budget`` (>= 0 bytes) is an int used as given,
    or None / "auto": :func:`batch_tokens_for` / :func:`memory_budget_for` from the free memory
    of the model's CUDA device (:func:`free_memory`), or the CPU values when it is not on CUDA.
    seq_len: the longest row in tokens (:func:`longest_row`). Raises UsageError naming the
    parameter for any other value.
    """
    tokens = check_size("batch_tokens", batch_tokens, 1)
    budget = check_size("memory_budget", memory_budget, 0)
    found = free_memory(model) if tokens is None or budget is None else None
    free = None if found is None else found[0]
    source = (
        "the CPU default" if found is None else f"from {found[0] / GIB:.1f} GiB free on {found[1]}"
    )
    how = []
    if tokens is None:
        tokens = batch_tokens_for(model, free, seq_len)
        how.append(f"batch_tokens auto ({source})")
    else:
        how.append("batch_tokens given")
    if budget is None:
        budget = memory_budget_for(model, free, tokens, seq_len)
        how.append(f"memory_budget auto ({source})")
    else:
        how.append("memory_budget given")
    return tokens, budget, "; ".join(how)
