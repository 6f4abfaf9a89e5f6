"""Model hub ids (``org/name`` or ``name``) for ``lf.load``: resolved to a local snapshot folder.

``lf.load("HuggingFaceTB/SmolLM2-135M")`` reads what ``from_pretrained`` would, from the same
place, and then takes the folder path of ``lf.load`` unchanged (safetensors only, the
``auto_map`` refusal, the digest cache):

1. The Hugging Face cache first, with no network call (``local_files_only=True``): a snapshot
   of the revision (a branch, tag or commit; default ``main``) that holds its
   ``config.json`` and all its safetensors weights is used as it is.
2. Otherwise, unless the hub is off (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``: then no
   network call at all), the snapshot is downloaded into that cache in two steps: the config,
   tokenizer files and weight index first, which are checked (``model_type``, ``auto_map``)
   before any weight is fetched; then the safetensors weights the index names (or
   ``model.safetensors``). Pickled weights are never downloaded, and the repository's ``*.py``
   files only with ``trust_remote_code=True``.

The token is huggingface_hub's own (``HF_TOKEN``, or ``hf auth login``) and is never printed.
The cache is ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read
when a model is loaded (so a test or notebook may set them after import).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from .folders import check_config, check_weights, read_json

DEFAULT_REVISION = "main"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Everything transformers reads to build a model and its tokenizer, weights aside.
SMALL_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
    "*.tiktoken",
    INDEX,
]
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class NotAvailable(Exception):
    """The id is neither in the HF cache nor downloadable; the message says where and why."""


def is_hub_id(spec: str) -> bool:
    """Whether ``spec`` has the form of a model hub id: ``name`` or ``org/name`` (letters,
    digits, ``-``, ``_``, ``.``; at most 96 characters)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def cache_dir() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub finds it, read now."""
    from huggingface_hub import constants

    env = os.environ
    path = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not path and env.get("HF_HOME"):
        path = os.path.join(env["HF_HOME"], "hub")
    return Path(os.path.expandvars(path or constants.HF_HUB_CACHE)).expanduser()


def offline() -> str | None:
    """Why the hub must not be contacted (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to
    1/true/yes/on, now or when huggingface_hub was imported), or None when it may be."""
    from huggingface_hub import constants

    for name in OFFLINE_VARIABLES:
        value = os.environ.get(name, "")
        if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name}={value}"
    return (
        "HF_HUB_OFFLINE was set when huggingface_hub was imported"
        if constants.HF_HUB_OFFLINE
        else None
    )


def snapshot(
    repo_id: str, revision: str | None, trust_remote_code: bool, own_tokenizer: bool
) -> Path:
    """The snapshot folder of ``repo_id`` at ``revision`` (None: ``main``) in the HF cache,
    downloaded first when it is not there (see the module docstring). Its name is the commit.

    Raises:
        NotAvailable: not in the cache, and offline or the download failed (the message names
            the revision, the cache folder and the reason in one line).
        UsageError: the snapshot's config or weights are refused (as for a local folder).
    """
    cache = cache_dir()
    revision = revision or DEFAULT_REVISION
    found = _cached(repo_id, revision, cache)
    if found is not None and _complete(found):
        return found
    off = offline()
    if off is not None:
        reason = f"the hub is off: {off}"
        if found is not None:
            reason = f"its cached snapshot {found} lacks weights, and {reason}"
        raise NotAvailable(_where(revision, cache, reason))
    patterns = SMALL_FILES + (["*.py"] if trust_remote_code else [])
    try:
        folder = _download(repo_id, revision, cache, patterns)
        check_config(folder, trust_remote_code, own_tokenizer)  # before any weight is fetched
        folder = _download(repo_id, folder.name, cache, _weight_files(folder))
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001  (huggingface_hub raises HTTP, OS and value errors)
        line = (str(e).strip().splitlines() or [""])[0][:300]
        raise NotAvailable(_where(revision, cache, f"{type(e).__name__}: {line}")) from None
    try:
        check_weights(folder)
    except UsageError as e:
        raise UsageError(
            f"model hub id {repo_id!r} at revision {revision!r} (commit {folder.name}): {e}; "
            f"layerfast reads safetensors weights only ({SINGLE} or {INDEX} and its shards)"
        ) from None
    return folder


def check_available(
    repo_id: str, revision: str | None, trust_remote_code: bool, own_tokenizer: bool
) -> None:
    """Whether :func:`snapshot` would find ``repo_id``, told without downloading a weight: its
    cached config is checked (offline, its cached weights too); not cached and the hub allowed,
    the hub is asked whether it has the revision's ``config.json`` (one small request).

    Raises:
        NotAvailable: the message says where it was looked for and why it is not there.
        UsageError: the cached config is refused (as for a local folder).
    """
    cache = cache_dir()
    revision = revision or DEFAULT_REVISION
    found = _cached(repo_id, revision, cache)
    off = offline()
    if found is not None:
        check_config(found, trust_remote_code, own_tokenizer)
        if off is not None and not _complete(found):
            raise NotAvailable(
                f"at revision {revision!r} is cached without all its weights ({found}) and the "
                f"hub is off: {off}"
            )
        return
    where = f"at revision {revision!r} is not in the HF cache ({cache})"
    if off is not None:
        raise NotAvailable(f"{where} and the hub is off: {off}")
    from huggingface_hub import file_exists

    try:
        if file_exists(repo_id, "config.json", revision=revision):
            return
        reason = "no such model, or no config.json at that revision"
    except Exception as e:  # noqa: BLE001  (network, HTTP, gated: the reason is the message)
        line = (str(e).strip().splitlines() or [""])[0][:200]
        reason = f"the hub could not be asked: {type(e).__name__}: {line}"
    raise NotAvailable(f"{where} nor on the hub ({reason})")


def _where(revision: str, cache: Path, reason: str) -> str:
    return (
        f"at revision {revision!r} is not in the HF cache ({cache}) and could not be "
        f"downloaded ({reason})"
    )


def _cached(repo_id: str, revision: str, cache: Path) -> Path | None:
    """The cached snapshot folder of the revision, or None; never a network call."""
    from huggingface_hub import snapshot_download

    try:
        found = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            allow_patterns=["config.json"],
            local_files_only=True,
        )
    except Exception:  # noqa: BLE001  (not cached, or an incomplete or unreadable entry)
        return None
    return Path(found)


def _complete(folder: Path) -> bool:
    """The snapshot holds ``config.json`` and all its safetensors weights."""
    if not (folder / "config.json").is_file():
        return False
    try:
        check_weights(folder)
    except UsageError:
        return False
    return True


def _download(repo_id: str, revision: str, cache: Path, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=patterns)
    )


def _weight_files(folder: Path) -> list[str]:
    """The safetensors files to fetch: the shards the index names, else ``model.safetensors``."""
    index = folder / INDEX
    if not index.is_file():
        return [SINGLE]
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UsageError(f"{index}: no weight_map")
    return [INDEX, *sorted({str(shard) for shard in weight_map.values()})]
