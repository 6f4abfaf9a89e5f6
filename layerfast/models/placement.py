"""Everything about where a model's parts live: placing it, and running it once placed.

A model loaded with a ``device_map`` (``lf.load(..., device_map=...)``) is *dispatched* by
``accelerate``: each placed module carries an ``_hf_hook`` (an ``AlignDevicesHook``, or a
``SequentialHook`` wrapping several) that moves the module's inputs to its *execution device* and
loads weights offloaded to CPU or disk (``meta`` tensors between calls) for the call. The forward
loop calls submodules directly, so it asks here where a module runs and how to hold a module's
weights while reading them (``lm_head.weight`` for the chunked log-softmax). Placing is here too
(the arguments, the map's names checked on a ``meta`` skeleton, accelerate's dispatch, the CUDA
devices a model spans, where Ray workers run): no other module imports accelerate or reads a
device map. On a model that is not dispatched every function here is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from .device_map import check_device_map


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


# --- placing a model: the arguments, the map's names, accelerate's dispatch --------------------
FLAG = "device_map= (--device-map)"
STRING_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
WHOLE_ON_DISK = {"": "disk"}  # the CLI driver's copy of a model the Ray workers run


def check_placement(
    device: Any, device_map: Any, max_memory: Any, offload_folder: Any
) -> dict[str, Any]:
    """The ``from_pretrained`` placement arguments given ({} when none); UsageError for a
    combination that cannot work, or an ``offload_folder`` that exists and is not a folder."""
    if device_map is None:
        flags = ("max_memory= (--max-memory)", "offload_folder= (--offload-folder)")
        given = [f for f, v in zip(flags, (max_memory, offload_folder)) if v is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} need {FLAG}")
        return {}
    if device is not None:
        raise UsageError(
            f"device= (--device) {str(device)!r} and {FLAG} both place the "
            "model: give one (the device map names a device per module)"
        )
    if not isinstance(device_map, (str, dict)):
        raise UsageError(
            f"{FLAG} must be a string such as 'auto' or a dict of module "
            f"name -> device, got {type(device_map).__name__}"
        )
    if max_memory is not None and not isinstance(max_memory, dict):
        raise UsageError(
            "max_memory= (--max-memory) must be a dict of device -> size such as "
            f"{{0: '20GiB', 'cpu': '60GiB'}}, got {type(max_memory).__name__}"
        )
    placing: dict[str, Any] = {"device_map": device_map}
    if max_memory is not None:
        placing["max_memory"] = max_memory
    if offload_folder is not None:
        if Path(offload_folder).exists() and not Path(offload_folder).is_dir():
            raise UsageError(
                f"offload_folder= (--offload-folder) {str(offload_folder)!r} is a file, not a "
                "folder: name a folder (it is created when missing)"
            )
        placing["offload_folder"] = str(offload_folder)
    return placing


def plain(value: Any) -> Any:
    """A device map or memory map as plain picklable values (torch devices as strings)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, torch.device):
        return str(value)
    return value


def skeleton(folder: Path, trust: bool) -> nn.Module:
    """The model of ``folder`` built from its config on the ``meta`` device: its module and
    tensor names, no weight read and no memory (about 1 ms per block)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust)
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust)


def dispatch(
    hf_model: nn.Module,
    device_map: str | dict[str, Any],
    max_memory: dict | None = None,
    offload_folder: str | None = None,
) -> nn.Module:
    """Place a model object by ``device_map`` with accelerate (a string map inferred first
    within ``max_memory``, sizes as accelerate takes them, e.g. "20GiB"); modules mapped to
    "disk" are written to ``offload_folder``."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, str):
        no_split = getattr(hf_model, "_no_split_modules", None) or []
        if device_map in ("auto", "balanced", "balanced_low_0"):
            max_memory = get_balanced_memory(
                hf_model,
                max_memory=max_memory,
                no_split_module_classes=no_split,
                low_zero=device_map == "balanced_low_0",
            )
        elif device_map != "sequential":
            raise UsageError(
                f"{FLAG} {device_map!r}: use {', '.join(map(repr, STRING_MAPS))} or a dict of "
                "module name -> device"
            )
        device_map = infer_auto_device_map(
            hf_model, max_memory=max_memory, no_split_module_classes=no_split
        )
    else:
        check_device_map(hf_model, device_map)
    try:
        with quiet_whole_disk(device_map):
            hf_model = dispatch_model(hf_model, device_map=device_map, offload_dir=offload_folder)
    except (ValueError, KeyError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"{FLAG} cannot place the model: {reason}") from None
    return hf_model


def _no_meta_notice(record: logging.LogRecord) -> bool:
    return "are on the meta device because they were offloaded" not in record.getMessage()


@contextmanager
def quiet_whole_disk(device_map: Any) -> Iterator[None]:
    """With the whole model on disk (``{"": "disk"}``, the CLI driver's copy when Ray workers
    run the model), silence accelerate's notice that parameters are on the meta device: that
    is the point of the map, not news. Any other map keeps the notice."""
    if not (isinstance(device_map, dict) and plain(device_map) == WHOLE_ON_DISK):
        yield
        return
    loggers = [logging.getLogger(n) for n in ("accelerate.big_modeling", "transformers")]
    for logger in loggers:
        logger.addFilter(_no_meta_notice)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_no_meta_notice)


# --- where Ray workers run a model made from a load spec ----------------------------------------
def worker_device_type(model: Any, spec: dict | None) -> str:
    """ "cuda" or "cpu": where the workers run ``model``. With a load spec, where the spec puts
    it (a device map with a GPU, or "auto" where this process sees CUDA); else where the
    driver's model is."""
    if spec is None:
        return model.device.type
    device_map = spec.get("device_map")
    if device_map is not None:
        if isinstance(device_map, dict):
            return "cuda" if any(_is_gpu(d) for d in device_map.values()) else "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.get("device"):
        return torch.device(spec["device"]).type
    return model.device.type


def gpus_of(model: Any, spec: dict | None) -> float:
    """GPUs one replica spans: the GPUs of the spec's device map or max_memory, or of the
    driver model's device map, else 1."""
    for mapping in (
        (spec or {}).get("device_map"),
        (spec or {}).get("max_memory"),
        getattr(model.hf_model, "hf_device_map", None),
    ):
        if isinstance(mapping, dict):
            values = mapping.values() if mapping is not (spec or {}).get("max_memory") else mapping
            gpus = {_gpu(d) for d in values} - {None}  # 0, "0" and "cuda:0" are one GPU
            if gpus:
                return float(len(gpus))
    return 1.0


def cuda_devices(model: Any) -> list[torch.device]:
    """The CUDA devices holding ``model`` (a SublayerModel): those of its device map when it has
    one, else its input device; [] when the model is not on CUDA."""
    if model.device.type != "cuda":
        return []
    device_map = getattr(model.hf_model, "hf_device_map", None) or {}
    devices = {_gpu(where) for where in device_map.values()} - {None}
    return sorted(devices, key=str) or [model.device]


def _gpu(where: Any) -> torch.device | None:
    """``where`` (0, "0", "cuda", "cuda:1", "cpu", "disk", ...) as a CUDA device, else None."""
    if isinstance(where, bool):
        return None
    try:
        device = _as_device(int(where) if str(where).isdigit() else where)
    except (RuntimeError, TypeError, ValueError):  # "disk" and other non-devices
        return None
    return torch.device("cuda", device.index or 0) if device.type == "cuda" else None


def _is_gpu(where: Any) -> bool:
    return _gpu(where) is not None
