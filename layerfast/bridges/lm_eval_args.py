"""The arguments of the harness model ``"layerfast"``: ``model_args`` strings, their values, and
the model they name (:class:`~.lm_eval_model.LayerfastLM` reads them)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from lm_eval.utils import handle_arg_string

from ..errors import UsageError
from ..evaluation.sizing import AUTO
from ..models import SublayerModel
from ..models.loading import load


def parse_model_args(arg_string: str | None) -> dict[str, Any]:
    """``"pretrained=x,remove=attn3,mlp5,dtype=fp32"`` -> ``{"pretrained": "x", "remove":
    "attn3,mlp5", "dtype": "fp32"}``: the harness's ``key=value`` list, where a piece without
    ``=`` continues the value before it. Values are typed as the harness types them
    (``handle_arg_string``: ints, floats, true/false, none); ``remove`` stays a string."""
    raw: dict[str, str] = {}
    key = None
    for piece in (arg_string or "").strip().split(","):
        if "=" in piece:
            key, value = piece.split("=", 1)
            key = key.strip()
            raw[key] = value
        elif key is not None:
            raw[key] += "," + piece
        elif piece.strip():
            raise UsageError(f"model_args: {piece!r} is not key=value (in {arg_string!r})")
    return {k: v if k == "remove" else handle_arg_string(v) for k, v in raw.items()}


def as_bool(name: str, value: Any) -> bool:
    """A boolean model argument (a bool, or true/false/1/0/yes/no as text)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise UsageError(f"{name} must be true or false, got {value!r}")


def load_model(
    pretrained: Any, dtype: Any, device: Any, tokenizer: Any, trust: bool, revision: Any = None
) -> SublayerModel:
    if isinstance(dtype, str) and dtype.lower() == "auto":
        dtype = None
    if isinstance(pretrained, SublayerModel):
        if dtype is not None or device is not None or tokenizer is not None:
            raise UsageError(
                "pretrained is an already loaded SublayerModel: dtype, device and tokenizer "
                "must not be given (convert or move it before)"
            )
        model = pretrained
    else:
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            try:  # trust_remote_code given explicitly: transformers never asks
                tokenizer = AutoTokenizer.from_pretrained(
                    tokenizer, local_files_only=True, trust_remote_code=trust
                )
            except (OSError, ValueError) as e:
                reason = str(e).strip().split("\n")[0][:200]
                raise UsageError(
                    f"tokenizer {tokenizer}: no tokenizer could be loaded ({reason})"
                ) from None
        model = load(
            pretrained,
            dtype=dtype,
            device=device,
            tokenizer=tokenizer,
            trust_remote_code=trust,
            revision=None if revision is None else str(revision),
        )
    if model.tokenizer is None:
        raise UsageError(
            f"model {model.name} has no tokenizer: pass tokenizer=<folder> in model_args"
        )
    return model


def thread_count(value: int | str) -> int | None:
    """``threads``: None for "auto", else the count >= 1 (UsageError otherwise)."""
    if str(value).strip().lower() == AUTO:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if isinstance(value, bool) or n < 1 or (isinstance(value, float) and value != n):
        raise UsageError(f"threads must be 'auto' or a whole number >= 1, got {value!r}")
    return n
