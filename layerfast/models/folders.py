"""What ``lf.load`` checks in a model folder before ``transformers`` reads it.

Every check reads only JSON and file names, so a bad folder is refused in milliseconds, before any
weight is read and before any of the folder's code could run:

* ``config.json`` parses and its ``model_type`` is one layerfast has an adapter for (the list
  named in the error is layerfast's own, not the causal-LM classes of ``transformers``);
* the folder's own code (an ``auto_map`` in ``config.json``, or in ``tokenizer_config.json`` when
  the tokenizer comes from the folder) is refused unless the caller opts in with
  ``trust_remote_code=True`` (CLI ``--trust-remote-code``);
* weights are safetensors (a sharded index must find all its shards). Pickled weights
  (``pytorch_model.bin``, ``*.pt``, ``*.ckpt``) are refused, never unpickled: unpickling can run
  code, and ``transformers`` is always called with ``use_safetensors=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .adapter import supported_model_types

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TRUST_HINT = "--trust-remote-code (lf.load(..., trust_remote_code=True))"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; UsageError naming the file (and line) otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_folder(folder: Path, trust_remote_code: bool, own_tokenizer: bool) -> dict[str, Any]:
    """Check a model folder as described in the module docstring; return its config dict.

    own_tokenizer: the tokenizer will be loaded from this folder (check its ``auto_map`` too).
    """
    config = check_config(folder, trust_remote_code, own_tokenizer)
    check_weights(folder)
    return config


def check_config(folder: Path, trust_remote_code: bool, own_tokenizer: bool) -> dict[str, Any]:
    """The checks of :func:`check_folder` that read only ``config.json`` and
    ``tokenizer_config.json`` (no weight file needs to be there yet: a model hub snapshot is
    checked so before its weights are downloaded); return the config dict."""
    config = read_json(folder / "config.json")
    model_type = config.get("model_type")
    if model_type not in supported_model_types():
        what = "has no model_type" if model_type is None else f"model_type {model_type!r}"
        raise UsageError(
            f"{folder}: config.json {what}: not an architecture layerfast supports "
            f"(supported model_type values: {', '.join(supported_model_types())})"
        )
    if not trust_remote_code:
        _refuse_own_code(folder, "config.json", config)
        tokenizer_config = folder / "tokenizer_config.json"
        if own_tokenizer and tokenizer_config.is_file():
            _refuse_own_code(folder, tokenizer_config.name, read_json(tokenizer_config))
    return config


def _refuse_own_code(folder: Path, name: str, data: dict[str, Any]) -> None:
    auto_map = data.get("auto_map")
    if not auto_map:
        return
    targets = auto_map.values() if isinstance(auto_map, dict) else auto_map
    raise UsageError(
        f"{folder}: {name} names code in the folder itself (auto_map: "
        f"{', '.join(str(t) for t in targets)}); layerfast never runs a model folder's code "
        f"unless you pass {TRUST_HINT}, or remove auto_map to use transformers' own "
        f"{data.get('model_type', 'built-in')} implementation"
    )


def check_weights(folder: Path) -> None:
    """Safetensors weights are present (every shard of an index); pickles are refused."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UsageError(f"{index}: no weight_map")
        missing = sorted({s for s in weight_map.values() if not (folder / str(s)).is_file()})
        if missing:
            raise UsageError(f"{folder}: shards listed in {index.name} are missing: {missing}")
        return
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise UsageError(
            f"{folder}: weights only as pickle files ({', '.join(pickles)}); layerfast loads "
            "safetensors only, because unpickling can run code; convert them to "
            "safetensors with a tool you trust"
        )
    raise UsageError(
        f"{folder}: config.json but no weights (no *.safetensors file); "
        "is the download or save incomplete?"
    )
