"""Where the parts of a model split over devices run, and their offloaded weights on demand.

A model loaded with a ``device_map`` (``lf.load(..., device_map=...)``) is *dispatched* by
``accelerate``: each placed module carries an ``_hf_hook`` (an ``AlignDevicesHook``, or a
``SequentialHook`` wrapping several) that, when the module is called, moves the inputs to the
module's *execution device* and, for weights offloaded to CPU or disk (held as ``meta`` tensors
between calls), loads them there for the duration of the call. The forward loop calls submodules
directly, so it only needs to know (1) where a module runs, to move the residual stream there,
and (2) how to hold a module's weights in memory while reading them directly (``lm_head.weight``
for the chunked log-softmax). This module answers both; nothing else in layerfast knows about
accelerate's hooks. On a model that is not dispatched every function here is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import UsageError


def _hooks(module: nn.Module) -> list[Any]:
    """The accelerate hooks on ``module`` itself (a SequentialHook flattened), outermost first."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    out, todo = [], [hook]
    while todo:
        h = todo.pop(0)
        inner = getattr(h, "hooks", None)  # SequentialHook
        if inner is not None:
            todo = list(inner) + todo
        else:
            out.append(h)
    return out


def _as_device(where: Any) -> torch.device:
    return torch.device("cuda", where) if isinstance(where, int) else torch.device(where)


def execution_device(module: nn.Module) -> torch.device | None:
    """The device ``module`` runs on under its accelerate hook; None when it has no such hook
    (the module is not dispatched: it runs where its weights are)."""
    for hook in _hooks(module):
        where = getattr(hook, "execution_device", None)
        if where is not None:
            return _as_device(where)
    return None


def is_dispatched(model: nn.Module) -> bool:
    """True when ``model`` was placed by a device map (it carries accelerate hooks)."""
    return bool(getattr(model, "hf_device_map", None)) or any(
        hasattr(m, "_hf_hook") for m in model.modules()
    )


def refuse_dispatched(model: nn.Module, what: str) -> None:
    """UsageError when ``model`` is placed by a device map: ``what`` (e.g. "pruning") copies or
    edits the weights in place, which an offloaded or split model cannot do."""
    if is_dispatched(model):
        raise UsageError(
            f"{what} needs the model's weights in one place, but it was loaded with a "
            "device_map= (--device-map); load it without one (or with device=) for this"
        )


def input_device(model: nn.Module) -> torch.device:
    """Where the inputs of an HF model go: the execution device of its input embeddings when it
    is dispatched, else the device of its first parameter (never ``meta``)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    where = execution_device(embeddings) if embeddings is not None else None
    if where is not None:
        return where
    for t in model.parameters():
        if t.device.type != "meta":
            return t.device
    return execution_device(model) or torch.device("cpu")


def to_device(obj: Any, device: torch.device | None) -> Any:
    """``obj`` with every tensor inside it (nested dicts, lists, tuples) moved to ``device``;
    None leaves it as it is."""
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


@contextmanager
def materialised(module: nn.Module) -> Iterator[nn.Module]:
    """Hold ``module``'s offloaded weights on its execution device while the context is open,
    so ``module.weight`` can be read directly; they go back to ``meta`` on exit."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        _check_loaded(module)
        yield module
        return
    hook.pre_forward(module)
    try:
        _check_loaded(module)
        yield module
    finally:
        hook.post_forward(module, None)


def _check_loaded(module: nn.Module) -> None:
    meta = [n for n, p in module.named_parameters(recurse=False) if p.device.type == "meta"]
    if meta:
        raise RuntimeError(
            f"{type(module).__name__}.{meta[0]} is on the meta device and no accelerate hook "
            "loads it: load the model with lf.load(..., device_map=...) or without offloading"
        )


def named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter, then every buffer, of ``model`` by name, a tied weight once.

    An offloaded tied weight (say ``lm_head.weight`` tied to the input embeddings) becomes a
    separate ``meta`` tensor after its first call under the hooks; it is left out here, as
    ``named_parameters`` leaves out the tied copy of a model in memory."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}  # {target: source}
    params = dict(model.named_parameters())
    for name, t in params.items():
        if t.device.type == "meta" and tied.get(name) in params:
            continue
        yield name, t
    yield from model.named_buffers()


def tensor_value(model: nn.Module, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The data of parameter or buffer ``name`` of ``model``: ``tensor`` itself, or, for a weight
    offloaded to CPU or disk (a ``meta`` tensor), its stored value read from the offload store."""
    if tensor.device.type != "meta":
        return tensor
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):  # the owner first, then its ancestors
        owner = model.get_submodule(".".join(parts[:cut]))
        for hook in _hooks(owner):
            store = getattr(hook, "weights_map", None)
            if store is None:
                continue
            try:
                return store[".".join(parts[cut:])]
            except KeyError:
                continue
    raise RuntimeError(f"{name} is on the meta device and no offload store holds it")
