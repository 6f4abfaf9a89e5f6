"""``generate_until`` for lm-evaluation-harness, as the harness's HFLM runs it, greedily and with
the removed sublayers skipped; and the harness's generation options as layerfast reads them
(shared by the harness model :class:`~.lm_eval_model.LayerfastLM` and the ``lm_eval:`` task kind
:class:`~.lm_eval_gen_tasks.HarnessGenTask`).

Each request ``(context, gen_kwargs)`` is read as HFLM reads it (``normalize_gen_kwargs``,
``handle_stop_sequences``): ``until`` a string or a list of strings (none: only EOS stops), the
EOS token's text appended as one more stop string; ``max_gen_toks`` (or its aliases
``max_new_tokens``, ``max_tokens``, ``max_completion_tokens``, in that priority) new tokens at
most, :data:`DEFAULT_MAX_GEN_TOKS` when none is given. The context is encoded as HFLM encodes it
and left-truncated to ``max_length - max_gen_toks`` tokens
(:func:`~layerfast.tasks.prompts.encode_prompt`); the new tokens are decoded without special
tokens and cut before each stop string in turn
(:func:`~layerfast.tasks.prompts.generated_text`).

Decoding is greedy only, as the harness's ``do_sample: false``: ``do_sample: true``, a
``temperature`` above 0 without ``do_sample`` (the harness then samples), ``num_beams`` above 1
and options of other decoding methods are refused in one line naming the option. ``top_p``,
``top_k``, ``min_p``, ``typical_p`` and a ``temperature`` beside ``do_sample: false`` are accepted:
the harness decodes greedily then and ``transformers`` ignores them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError, warn
from ..progress import progress as progress_bar
from ..tasks.prompts import Prompt, check_generation, encode_prompt, generated_text

DEFAULT_MAX_GEN_TOKS = 256  # HFLM.max_gen_toks: new tokens when a request sets none
MAX_TOKEN_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
# options that only shape sampling: transformers ignores them when decoding greedily
SAMPLING_ONLY = ("top_p", "top_k", "min_p", "typical_p")
# options accepted at the value that leaves greedy decoding as it is
NEUTRAL = {"num_beams": 1, "num_return_sequences": 1, "repetition_penalty": 1.0}
KNOWN = {"until", "do_sample", "temperature", "use_cache", *MAX_TOKEN_KEYS, *SAMPLING_ONLY}
GREEDY_ONLY = "layerfast decodes greedily"
MAX_ROWS = 64  # prompts per decoding batch at most


def greedy_options(gen_kwargs: Any, default_max: int, where: str) -> tuple[tuple[str, ...], int]:
    """``(until, max_gen_toks)`` of one request's generation options, read as HFLM reads them
    (the EOS text not yet appended: :func:`with_eos`); a one-line UsageError naming the option
    for anything but greedy decoding, a ``max_gen_toks`` below 1 or stop strings that are not
    strings. ``where`` names the task or request in the message."""
    if gen_kwargs is None:
        gen_kwargs = {}
    if not isinstance(gen_kwargs, dict):
        raise UsageError(f"{where}: generation options must be a dict, got {gen_kwargs!r}")
    do_sample = gen_kwargs.get("do_sample")
    temperature = gen_kwargs.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: temperature must be a number, got {temperature!r}") from None
    if do_sample not in (None, False, True):
        raise UsageError(f"{where}: do_sample must be true or false, got {do_sample!r}")
    if do_sample is True:
        raise UsageError(
            f"{where}: generation option do_sample=True asks for sampling; {GREEDY_ONLY} "
            "(set do_sample: false)"
        )
    if do_sample is None and temperature > 0:
        raise UsageError(
            f"{where}: generation option temperature={temperature:g} without do_sample asks "
            f"for sampling (as the harness reads it); {GREEDY_ONLY} (set temperature: 0 or "
            "do_sample: false)"
        )
    for key, value in gen_kwargs.items():
        if key in KNOWN:
            continue
        if key in NEUTRAL and _equals(value, NEUTRAL[key]):
            continue
        if key in NEUTRAL:
            raise UsageError(
                f"{where}: generation option {key}={value!r} is not greedy decoding; "
                f"{GREEDY_ONLY} ({key} must be {NEUTRAL[key]!r} or left out)"
            )
        hint = " (give max_gen_toks, new tokens)" if key == "max_length" else ""
        raise UsageError(
            f"{where}: generation option {key}={value!r} is not supported; {GREEDY_ONLY} and "
            f"reads until and max_gen_toks only{hint}"
        )
    max_new = next(
        (gen_kwargs[k] for k in MAX_TOKEN_KEYS if gen_kwargs.get(k) is not None), default_max
    )
    if isinstance(max_new, float) and max_new.is_integer():
        max_new = int(max_new)
    until = gen_kwargs.get("until")
    if until is not None and not isinstance(until, (str, list, tuple)):
        raise UsageError(f"{where}: until must be a string or a list of strings, got {until!r}")
    return check_generation(until, max_new, where)


def with_eos(until: Sequence[str], eos: str | None) -> tuple[str, ...]:
    """``until`` with the EOS token's text appended unless it is there (the harness's
    ``handle_stop_sequences``)."""
    until = tuple(until)
    return until if eos is None or eos in until else (*until, eos)


def eos_text(tokenizer: Any) -> str | None:
    """The EOS token's text, as HFLM decodes it (``tok_decode(eot_token_id,
    skip_special_tokens=False)``); None without an EOS token."""
    eos = getattr(tokenizer, "eos_token_id", None)
    return None if eos is None else tokenizer.decode(eos, skip_special_tokens=False)


def check_room(max_new: int, max_length: int, where: str) -> None:
    """HFLM's rule that the context keeps at least one token: ``max_gen_toks < max_length``."""
    if max_new >= max_length:
        raise UsageError(
            f"{where}: max_gen_toks={max_new} leaves no room for the context within max_length="
            f"{max_length} tokens (the context gets max_length - max_gen_toks); lower max_gen_toks "
            "or raise max_length"
        )


def harness_prompt(
    tokenizer: Any,
    context: str,
    gen_kwargs: Any,
    unit: int,
    max_length: int,
    where: str,
    default_max: int = DEFAULT_MAX_GEN_TOKS,
    eos: str | None = None,
) -> Prompt:
    """One harness ``generate_until`` request as a :class:`~layerfast.tasks.prompts.Prompt`:
    its options read by :func:`greedy_options`, the EOS text ``eos`` added to its stops, the
    context encoded and left-truncated as HFLM does."""
    until, max_new = greedy_options(gen_kwargs, default_max, where)
    check_room(max_new, max_length, where)
    return encode_prompt(tokenizer, context, unit, with_eos(until, eos), max_new, max_length)


def generate_texts(
    model: Any,
    prompts: Sequence[Prompt],
    keep: Any = None,
    batch_tokens: int = 4096,
    bar: Any = None,
) -> tuple[list[str], list[list[int]], list[int]]:
    """Greedy generations of ``prompts`` under keep-mask ``keep`` (bool [n_players], None: all
    kept): (texts cut at their stops, new token ids, near-ties), each one per prompt in order.
    Prompts run shortest first, in batches of about ``batch_tokens`` tokens (prompt plus new
    tokens; :data:`MAX_ROWS` prompts at most); ``bar`` (if given) counts prompts."""
    from ..models.generation import generate_ids

    n = len(prompts)
    tokens: list[list[int]] = [[] for _ in range(n)]
    near_ties = [0] * n
    order = sorted(range(n), key=lambda i: len(prompts[i].input_ids))
    start = 0
    while start < n:
        chunk, widest = [], 1
        for i in order[start : start + MAX_ROWS]:  # shortest first: the last row is the widest
            width = max(widest, len(prompts[i].input_ids) + prompts[i].max_new_tokens)
            if chunk and (len(chunk) + 1) * width > batch_tokens:
                break
            chunk.append(i)
            widest = width
        gen = generate_ids(
            model,
            [list(prompts[i].input_ids) for i in chunk],
            keep=keep,
            max_new_tokens=[int(prompts[i].max_new_tokens) for i in chunk],
            stop=[list(prompts[i].until) for i in chunk],
            batch_size=len(chunk),
        )
        for k, i in enumerate(chunk):
            tokens[i], near_ties[i] = list(gen.tokens[k]), int(gen.near_ties[k])
        if bar is not None:
            bar.update(len(chunk))
        start += len(chunk)
    texts = [generated_text(model.tokenizer, t, p.until) for t, p in zip(tokens, prompts)]
    return texts, tokens, near_ties


def generate_until(lm: Any, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
    """The harness model's ``generate_until``: one text per request ``(context, gen_kwargs)``,
    in request order (see the module docstring). ``lm.near_ties`` records, per request, the
    greedy steps whose top-2 logits were within rounding."""
    from ..evaluation.sizing import resolve_sizes

    tok = lm._tokenizer()
    eos = eos_text(tok)
    prompts = []
    for i, request in enumerate(requests):
        context, gen_kwargs = tuple(getattr(request, "args", request))[:2]
        task = getattr(request, "task_name", None)
        where = f"task {task}" if task else f"generate_until request {i}"
        prompts.append(
            harness_prompt(tok, context, gen_kwargs, i, lm.max_length, where, lm.max_gen_toks, eos)
        )
    n_truncated = sum(p.n_dropped > 0 for p in prompts)
    if n_truncated:
        warn(
            f"{n_truncated} of {len(prompts)} generate_until contexts are longer than max_length "
            f"{lm.max_length} tokens less their max_gen_toks and were left-truncated, as the "
            "harness does"
        )
    longest = max((len(p.input_ids) + p.max_new_tokens for p in prompts), default=1)
    batch_tokens = resolve_sizes(lm.model, lm.batch_tokens, 0, longest)[0]
    bar = progress_bar(
        total=len(prompts),
        desc="layerfast generate",
        unit="request",
        enabled=lm.progress and not disable_tqdm and bool(prompts),
    )
    try:
        texts, _, near_ties = generate_texts(lm.model, prompts, lm.keep, batch_tokens, bar)
    finally:
        bar.close()
    lm.near_ties = near_ties
    return texts


def _equals(value: Any, neutral: Any) -> bool:
    try:
        return not isinstance(value, bool) and math.isclose(float(value), float(neutral))
    except (TypeError, ValueError):
        return False
