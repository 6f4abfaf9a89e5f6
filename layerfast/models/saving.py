"""Save a ``transformers`` model (and tokenizer) to a folder, and prove it was saved.

``save_pretrained`` of ``transformers`` only logs an error and returns when the path is an
existing file, so a caller that trusts it reports a save that never happened. Here the path is
checked first (:func:`check_save_path`, cheap enough to call before hours of work), and after the
save the folder must hold ``config.json`` that parses, safetensors weights (every shard of an
index) with readable headers and, with a tokenizer, ``tokenizer_config.json``; optionally the
folder is reloaded and every tensor compared bit for bit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..paths import check_writable_folder


def check_save_path(path: str | os.PathLike, flag: str = "--save") -> Path:
    """``path`` as a folder that can be created or written; UsageError naming it otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is an existing file; give a folder to save the model in")
    check_writable_folder(path, f"{flag} {path}")
    return path


def save_pretrained_checked(
    hf_model: nn.Module,
    tokenizer: Any,
    path: str | os.PathLike,
    reload_check: bool = False,
    flag: str = "--save",
) -> Path:
    """Save ``hf_model`` (safetensors) and ``tokenizer`` to the folder ``path``, verify, return it.

    reload_check: also load the folder again and compare every tensor bit for bit (costs a
    second copy of the model in memory).

    Raises:
        UsageError: naming ``path`` (and ``flag``) when it cannot be written or the files are
            not all there afterwards.
    """
    path = check_save_path(path, flag)
    started = time.time_ns()
    try:
        path.mkdir(parents=True, exist_ok=True)
        hf_model.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot save the model: {e.strerror or e}") from None
    verify_saved(path, with_tokenizer=tokenizer is not None, flag=flag, since_ns=started)
    if reload_check:
        _reload_check(hf_model, path, flag)
    return path


def verify_saved(
    path: Path, with_tokenizer: bool, flag: str = "--save", since_ns: int | None = None
) -> None:
    """The files a saved model needs are in ``path``; UsageError naming what is missing.

    since_ns: the save's start (``time.time_ns()``); config and weights older than that (less a
    second of clock granularity) are left from an earlier save, so this one failed.
    """
    from safetensors import SafetensorError, safe_open

    problem = None
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        problem = "no readable config.json"
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
    else:
        shards = ["model.safetensors"]
    for shard in shards:
        try:
            with safe_open(str(path / shard), framework="pt") as f:
                if not list(f.keys()):
                    problem = problem or f"{shard} holds no tensors"
        except (OSError, SafetensorError):
            problem = problem or f"no readable {shard}"
    if since_ns is not None and not problem:
        stale = [
            name
            for name in ["config.json", *shards]
            if (path / name).stat().st_mtime_ns < since_ns - 1_000_000_000
        ]
        if stale:
            problem = f"{', '.join(stale)} predate this save (left from an earlier one)"
    if with_tokenizer and not (path / "tokenizer_config.json").is_file():
        problem = problem or "no tokenizer_config.json"
    if problem:
        raise UsageError(f"{flag} {path}: the save failed: {problem}")


def _reload_check(hf_model: nn.Module, path: Path, flag: str) -> None:
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(
        path, dtype="auto", local_files_only=True, trust_remote_code=False, use_safetensors=True
    )
    want, got = hf_model.state_dict(), again.state_dict()
    bad = sorted(
        k
        for k in want
        if k not in got or not torch.equal(want[k].detach().cpu(), got[k].detach().cpu())
    )
    if bad or set(got) != set(want):
        extra = sorted(set(got) - set(want))
        raise UsageError(
            f"{flag} {path}: the reloaded model differs: {bad[:5] or extra[:5]}"
            f"{' ...' if len(bad) + len(extra) > 5 else ''}"
        )
