"""How many CPU threads torch's intra-op pool uses, chosen by the size of the work.

Splitting a matrix product over threads pays only when each product is large: every op hands
work to the other threads and waits for the slowest, and on a shared machine a waiting thread
may not be scheduled for a whole time slice. A tiny model (hidden size 32) ran 40-170x slower
with torch's default thread count than with one thread on a busy 2-core machine, while the
packaged SmolLM2-135M (hidden size 576) runs about 2x faster with two.

The rule (:func:`choose`): the work of one op is one hidden x hidden projection over a batch,
``tokens_per_batch * hidden_size**2`` multiply-adds. Below :data:`WORK_THRESHOLD` one thread
is used; at or above it, every core this process may run on (capped by ``OMP_NUM_THREADS``
when that is set). A rough check on a 2-core machine shared with other jobs: one
``[2048, 128] x [128, 512]`` product (2^25 per projection) took 3.5 ms on one thread and 16 ms on
two; at hidden size 576 (2^29) the two were within 25% even on the loaded machine.
"""

from __future__ import annotations

import os
from typing import Any

WORK_THRESHOLD = 2**27  # multiply-adds of one hidden x hidden projection over a batch

_previous: int | None = None  # torch's thread count before the first apply()


def available() -> int:
    """CPU cores this process may run on (its affinity mask), capped by ``OMP_NUM_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        omp = 0
    return max(1, min(cores, omp) if omp > 0 else cores)


def hidden_size(model: Any) -> int:
    """The hidden size of a SublayerModel, an HF model or config, or an int given as is."""
    if isinstance(model, int):
        return model
    hf_model = getattr(model, "hf_model", None)
    for config in (model, getattr(model, "config", None), getattr(hf_model, "config", None)):
        size = getattr(config, "hidden_size", None)
        if isinstance(size, int) and size > 0:
            return size
    raise TypeError(f"cannot tell the hidden size of {type(model).__name__}")


def work(model: Any, batch_tokens: int) -> int:
    """Multiply-adds of one hidden x hidden projection over a batch of ``batch_tokens`` tokens."""
    return int(batch_tokens) * hidden_size(model) ** 2


def choose(model: Any, batch_tokens: int, cores: int | None = None) -> int:
    """The intra-op thread count for ``model`` run on batches of ``batch_tokens`` tokens.

    model: a SublayerModel, HF model or config, or the hidden size as an int.
    cores: the most threads to use (default: :func:`available`).
    Returns 1 when :func:`work` is below :data:`WORK_THRESHOLD`, else ``cores``.
    """
    cores = available() if cores is None else max(1, int(cores))
    return 1 if work(model, batch_tokens) < WORK_THRESHOLD else cores


def apply(n: int) -> int:
    """``torch.set_num_threads(n)``; the first call remembers the count before, for
    :func:`restore`. Returns ``n``."""
    global _previous
    import torch

    if _previous is None:
        _previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    return int(n)


def restore() -> None:
    """Put back the thread count that was in force before the first :func:`apply` (the CLI
    calls this when a verb returns, so an in-process caller keeps its own setting)."""
    global _previous
    if _previous is not None:
        import torch

        torch.set_num_threads(_previous)
        _previous = None
